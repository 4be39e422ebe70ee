//! Two control-plane replicas sharing their log through a real etcd: a write through one
//! reaches a sidecar connected to the other, and when that replica dies the sidecar reconnects
//! to the survivor and keeps converging. A replica that loses etcd says so: not ready, and 503
//! with `Retry-After` until etcd is back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, backend, Sidecar};
use crate::{service, ControlPlane, TOKEN};

/// A single-member etcd cluster in a temporary directory, killed on drop.
pub(crate) struct Etcd {
    child: Child,
    pub(crate) url: String,
    client: u16,
    peer: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (support::free_port(), support::free_port());
        let child = Self::spawn(dir.path(), client, peer);
        Self { child, url: format!("etcd://127.0.0.1:{client}"), client, peer, dir }
    }

    /// Kills etcd and starts it again on the same ports and data.
    fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.dir.path(), self.client, self.peer);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `STOP` (etcd hangs: connections stay open, nothing answers) or `CONT`.
    fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status();
        assert!(status.unwrap().success());
    }

    fn spawn(dir: &std::path::Path, client: u16, peer: u16) -> Child {
        let binary = std::env::var("PILOTFISH_TEST_ETCD").unwrap_or_else(|_| "etcd".into());
        let child = Command::new(&binary)
            .args(["--name", "test", "--data-dir"])
            .arg(dir.join("etcd"))
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
        child
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
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
    cp.client().apply(doc).await.unwrap();
}

/// A raw apply, for its status and headers.
async fn post_resources(cp: &ControlPlane, doc: &str) -> support::Reply {
    let auth = format!("Authorization: Bearer {TOKEN}");
    support::curl(&["-X", "POST", "-H", &auth, "--data-binary", doc, &cp.url("/v1/resources")]).await
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
        let list = a.client().proxies().await.unwrap();
        list.items.iter().any(|p| p.service == "web" && p.acked_version == list.version)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_reach_etcd_is_unready_and_answers_503_until_etcd_returns() {
    let mut etcd = tokio::task::block_in_place(Etcd::start);
    let cp = tokio::task::block_in_place(|| ControlPlane::start_etcd(&etcd.url));
    apply(&cp, &service("users", 9001)).await;
    let ready = async || support::curl(&[&cp.url("/readyz")]).await;
    let auth = format!("Authorization: Bearer {TOKEN}");
    let resources = async || support::curl(&["-H", &auth, &cp.url("/v1/resources")]).await;
    assert_eq!(ready().await.status, 200);

    // etcd hangs (SIGSTOP): not ready within the probe's bound, and calls are 503, not 500.
    etcd.signal("STOP");
    let started = Instant::now();
    let r = ready().await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(started.elapsed() < Duration::from_secs(5), "/readyz took {:?}", started.elapsed());
    assert!(r.json()["error"].as_str().unwrap().contains("event store"), "{}", r.json());
    assert!(r.header("retry-after").is_some());
    let r = resources().await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());

    etcd.signal("CONT");
    eventually("ready again after etcd resumed", async || ready().await.status == 200).await;
    assert_eq!(resources().await.status, 200);

    // etcd dies: the same, for reads and writes; then it comes back with its data.
    tokio::task::block_in_place(|| etcd.kill());
    eventually("not ready without etcd", async || ready().await.status == 503).await;
    let r = post_resources(&cp, &service("billing", 9002)).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());
    assert_eq!(resources().await.status, 503);

    tokio::task::block_in_place(|| etcd.restart());
    eventually("ready again after etcd restarted", async || ready().await.status == 200).await;
    apply(&cp, &service("billing", 9002)).await;
    let items = cp.client().list(&Default::default()).await.unwrap().items;
    assert_eq!(items.len(), 2, "the service written before the outage and the one after");
}
