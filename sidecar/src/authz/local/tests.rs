//! Authorization of opaque TCP on the inbound path, over real sockets: a denied connection is
//! closed before the app is even connected to (so no byte reaches it), an allowed one is
//! forwarded, and each denial is counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::listener::accept::ConnSlot;
use crate::listener::inbound;
use crate::snapshot::{Overrides, Snapshot};
use crate::state::Shared;
use crate::telemetry::metrics::Metrics;

/// An opaque app that echoes what it reads; the receiver gets one message per connection it
/// accepts.
async fn echo_app() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = accepted.send(());
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, rx)
}

/// A plaintext client's connection, handled by the inbound listener of sidecar `users` whose
/// spec gets `authz`, in front of the opaque `app`: what the client reads back after sending
/// `ping`, and the shared state (for the metrics).
async fn ping_through(app: SocketAddr, authz: &str) -> (Vec<u8>, Arc<Shared>) {
    let yaml = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: users}}\nspec:\n  inbound: {{listen: 127.0.0.1:0, app: {app}, opaquePorts: [{}]}}\n{authz}",
        app.port()
    );
    let metrics = Metrics::new();
    let snap = Snapshot::build("test.yaml", &yaml, &Overrides::default(), None, &metrics).unwrap();
    let shared = Shared::new(snap, metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (stream, peer) = listener.accept().await.unwrap();
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let slot = Arc::new(ConnSlot::new(permit, IntGauge::new("open", "open").unwrap()));
    tokio::spawn(inbound::handle(shared.clone(), stream, peer, slot));
    client.write_all(b"ping").await.unwrap();
    let mut read = vec![0; 4];
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut read)).await.unwrap().unwrap_or(0);
    read.truncate(n);
    (read, shared)
}

fn denied(shared: &Shared) -> String {
    let text = String::from_utf8(shared.metrics.encode()).unwrap();
    text.lines().filter(|l| l.starts_with("pilotfish_authz_denied_total")).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_denied_connection_reads_eof_and_the_app_is_never_connected_to() {
    let (app, mut accepted) = echo_app().await;
    // Unset: `authenticated`, and a plaintext caller has no identity.
    let (read, shared) = ping_through(app, "").await;
    assert_eq!(read, b"", "the client reads no byte: EOF (or a reset, as it had sent some)");
    assert!(accepted.try_recv().is_err(), "the app never saw a connection");
    assert_eq!(denied(&shared), "pilotfish_authz_denied_total{policy=\"default\",service=\"users\"} 1");
}

#[tokio::test]
async fn an_allowed_connection_is_forwarded() {
    let (app, mut accepted) = echo_app().await;
    let (read, shared) = ping_through(app, "  authorization: {default: allow}\n").await;
    assert_eq!(read, b"ping");
    assert!(accepted.try_recv().is_ok());
    assert_eq!(denied(&shared), "pilotfish_authz_denied_total{policy=\"default\",service=\"users\"} 0");
}
