//! gRPC through a sidecar pair: Python grpcio client → outbound of A → inbound of B → grpcio app.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_bidi_streaming_through_a_sidecar_pair() {
    let app = App::python("grpc_server.py");
    let b = Sidecar::start(&sidecar_doc(Some(app.addr()), PLAINTEXT_INBOUND));
    let b_inbound = b.inbound.unwrap();
    let config = format!(
        "{}{}",
        sidecar_doc(None, ""),
        service_doc("echo", &[b_inbound], "  ports: [{port: 50051, protocol: grpc}]\n"),
    );
    let a = Sidecar::start(&config);
    let out = run_python("grpc_client.py", &[&a.outbound.to_string(), "echo:50051"]).await;
    assert_eq!(out.trim(), "ok");

    // Both hops saw the calls; the failing call is a gRPC error, not an HTTP one.
    let m = a.metrics().await;
    assert!(sample(&m, "pilotfish_requests_total", &[("service", "echo.default"), ("code", "200")]) >= 4.0);
    let m = b.metrics().await;
    assert!(sample(&m, "pilotfish_requests_total", &[("direction", "inbound"), ("code", "200")]) >= 4.0);
}
