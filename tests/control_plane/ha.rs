//! Two control-plane replicas sharing their log through a real etcd: a write through one
//! reaches a sidecar connected to the other, and when that replica dies the sidecar reconnects
//! to the survivor and keeps converging.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, backend, Sidecar};
use crate::{service, ControlPlane, TOKEN};

/// A single-member etcd cluster in a temporary directory, killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (support::free_port(), support::free_port());
        let binary = std::env::var("PILOTFISH_TEST_ETCD").unwrap_or_else(|_| "etcd".into());
        let child = Command::new(&binary)
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("test=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e} (the test command installs etcd-server)"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url: format!("etcd://127.0.0.1:{client}"), _dir: dir }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn route(header: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: users}}\nspec:\n  parentRefs: [{{name: users}}]\n  rules:\n  - filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-written-via, value: {header}}}]}}}}]\n"
    )
}

async fn apply(cp: &ControlPlane, doc: &str) {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let r = support::curl(&["-X", "POST", "-H", &auth, "--data-binary", doc, &cp.url("/v1/resources")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_etcd_share_writes_and_sidecars_fail_over() {
    let etcd = tokio::task::block_in_place(Etcd::start);
    let a = tokio::task::block_in_place(|| ControlPlane::start_etcd(&etcd.url));
    let mut b = tokio::task::block_in_place(|| ControlPlane::start_etcd(&etcd.url));
    let users = backend("users").await;
    apply(&a, &service("users", users.addr.port())).await;

    // The sidecar talks to B first, A second.
    let servers = format!("{},{}", b.url(""), a.url(""));
    let args = [
        "--control-plane",
        &servers,
        "--service",
        "web",
        "--token",
        TOKEN,
        "--admin",
        "127.0.0.1:0",
        "--outbound",
        "127.0.0.1:0",
    ];
    let sc = tokio::task::block_in_place(|| Sidecar::start_managed(&args));
    let url = format!("http://{}/", sc.outbound);
    let header = async |url: &str| {
        support::curl(&["-H", "Host: users", url]).await.json()["headers"]["x-written-via"].clone()
    };

    // Written through A, served by a sidecar that only talks to B.
    apply(&a, &route("replica-a")).await;
    eventually("a write through A reaches B's sidecar", async || header(&url).await == "replica-a").await;
    let connected_to_b = format!("connected to the control plane server={}", b.url(""));
    assert!(sc.stderr().contains(&connected_to_b), "the sidecar was not connected to B");

    // B dies: the sidecar moves to A and keeps converging.
    b.kill();
    apply(&a, &route("after-failover")).await;
    eventually("the sidecar reconnected to A and took the new route", async || {
        header(&url).await == "after-failover"
    })
    .await;
    eventually("the sidecar's ACK reached A", async || {
        let j = support::curl(&[&a.url("/v1/proxies")]).await.json();
        let web = j["items"].as_array().unwrap().iter().find(|p| p["service"] == "web").cloned();
        web.is_some_and(|w| w["ackedVersion"] == j["version"])
    })
    .await;
}
