//! A WebSocket (HTTP/1.1 Upgrade) through the outbound proxy.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    let app = App::python("ws_echo.py");
    let config = format!("{}{}", sidecar_doc(None, ""), service_doc("echo", &[app.addr()], ""));
    let sc = Sidecar::start(&config);
    let out = run_python("ws_client.py", &["127.0.0.1", &sc.outbound.port().to_string(), "echo"]).await;
    assert_eq!(out.trim(), "ok");
    let m = sc.metrics().await;
    assert_eq!(sample(&m, "pilotfish_requests_total", &[("service", "echo.default"), ("code", "101")]), 1.0);
}
