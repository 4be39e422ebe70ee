//! Start-up errors, drain on SIGTERM, and `POST /shutdown`.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let (users, mut sc) = users_behind_a_sidecar("").await;
    let url = format!("http://{}/slow/3000", sc.outbound);
    let in_flight = tokio::spawn(async move { curl(&["-H", "Host: users", &url]).await });
    while users.requests.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sc.signal("TERM");
    // While draining: not ready, and no new connections are accepted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sc.admin_get("/ready").await.status != 503 {
        assert!(std::time::Instant::now() < deadline, "/ready stayed 200 while draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!in_flight.is_finished(), "the slow request finished before drain could be observed");
    assert!(
        tokio::net::TcpStream::connect(sc.outbound).await.is_err(),
        "a new connection was accepted while draining"
    );
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request was cut");
    let status = tokio::task::block_in_place(|| sc.wait_exit(Duration::from_secs(30)));
    assert!(status.success(), "{status}: {}", sc.stderr());
    assert!(sc.stderr().contains("drained"), "{}", sc.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_shutdown_drains_and_exits_zero() {
    let mut sc = Sidecar::start(&sidecar_doc(None, ""));
    let r = curl(&["-X", "POST", &format!("http://{}/shutdown", sc.admin)]).await;
    assert_eq!(r.status, 200);
    let status = tokio::task::block_in_place(|| sc.wait_exit(Duration::from_secs(30)));
    assert!(status.success(), "{status}");
}

#[test]
fn invalid_config_at_start_names_the_field_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let config = format!(
        "{}{}",
        sidecar_doc(None, ""),
        service_doc("users", &["127.0.0.1:1".parse().unwrap()], "  localPort: 0\n")
    );
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN).args(["sidecar", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("document 2 (Service default/users): spec.localPort: must be 1-65535"), "{err}");

    let out = Command::new(BIN).args(["sidecar", "--config", "/nonexistent.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent.yaml"));
}

#[test]
fn a_connection_limit_the_runtime_cannot_take_is_refused_at_start() {
    // Above tokio's semaphore maximum: the outbound listener used to panic and stay dead while
    // `/ready` said 200.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    std::fs::write(&path, sidecar_doc(None, "  limits: {maxConnections: 4611686018427387904}\n")).unwrap();
    let mut child = Command::new(BIN)
        .args(["sidecar", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the sidecar started with maxConnections 2^62");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("document 1 (Sidecar default/test): spec.limits.maxConnections: must be 1-1000000"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_sends_http2_goaway_and_finishes_open_streams() {
    let (users, mut sc) = users_behind_a_sidecar("").await;
    let url = format!("http://{}/slow/1500", sc.outbound);
    let client = tokio::spawn(async move {
        tokio::process::Command::new("nghttp")
            .args(["-v", "-H", ":authority: users", &url])
            .output()
            .await
            .expect("nghttp is installed")
    });
    while users.requests.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sc.signal("TERM");
    let out = client.await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("recv GOAWAY frame"), "no GOAWAY: {text}");
    assert!(text.contains(":status: 200"), "the open stream was cut: {text}");
    let status = tokio::task::block_in_place(|| sc.wait_exit(Duration::from_secs(30)));
    assert!(status.success());
}
