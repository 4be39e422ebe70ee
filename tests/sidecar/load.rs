//! Many concurrent HTTP/2 streams over one connection, with nghttp2's h2load.

use crate::support::*;

/// `n` requests as 100 concurrent streams on one HTTP/2 connection; h2load's report.
async fn h2load_100_streams(n: usize, url: &str) -> String {
    let out = tokio::process::Command::new("h2load")
        .args(["-n", &n.to_string(), "-c", "1", "-m", "100", url])
        .output()
        .await
        .expect("h2load is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

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
    let text = h2load_100_streams(5000, &format!("http://127.0.0.1:{port}/load")).await;
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

/// 100 concurrent streams through one sidecar to an HTTP/1.1 upstream with a listen backlog of
/// 5 (Python's http.server, a connection per request): the sidecar paces its connection attempts
/// and retries a failed connect, so the burst sees latency, never errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_an_upstream_with_a_listen_backlog_of_5_gets_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
    let app = App::python_with("backlog_server.py", &[dir.path().to_str().unwrap()]);
    let port = free_port();
    let config = format!(
        "{}{}",
        sidecar_doc(None, ""),
        service_doc(
            "small",
            &[app.addr()],
            &format!("  ports: [{{port: 80, protocol: http}}]\n  localPort: {port}\n")
        )
    );
    let _sc = Sidecar::start(&config);
    let text = h2load_100_streams(2000, &format!("http://127.0.0.1:{port}/hello.txt")).await;
    assert!(text.contains("2000 succeeded, 0 failed, 0 errored, 0 timeout"), "{text}");
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
}
