//! Many concurrent HTTP/2 streams over one connection, with nghttp2's h2load.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_100_streams_on_one_connection_without_errors() {
    let users = backend("users").await;
    let port = free_port();
    let config = format!(
        "{}{}",
        sidecar_doc(None, ""),
        service_doc("users", &[users.addr], &format!("  localPort: {port}\n"))
    );
    let sc = Sidecar::start(&config);
    let out = tokio::process::Command::new("h2load")
        .args(["-n", "5000", "-c", "1", "-m", "100", &format!("http://127.0.0.1:{port}/load")])
        .output()
        .await
        .expect("h2load is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "requests: 5000 total, 5000 started, 5000 done, 5000 succeeded, 0 failed, 0 errored, 0 timeout"
        ),
        "{text}"
    );
    assert!(text.contains("status codes: 5000 2xx"), "{text}");
    let m = sc.metrics().await;
    assert_eq!(
        sample(&m, "pilotfish_requests_total", &[("service", "users.default"), ("code", "200")]),
        5000.0
    );
}
