//! Inbound connections, from other services to the local app. The port's mTLS mode decides
//! first: a sidecar's mesh mTLS (a ClientHello offering a mesh ALPN) is terminated
//! ([`super::terminate`]); plaintext and other TLS pass through in `permissive` and `disabled`
//! mode and are refused, and counted by reason, in `strict` mode. What passes through is
//! detected as before: HTTP proxied to the app (the peer recorded in `x-forwarded-for` and
//! `forwarded`), anything else forwarded as opaque bytes. A connection redirected by iptables
//! goes to the app's address on the port originally dialled.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use pilotfish_api::mtls::MtlsMode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::accept::ConnSlot;
use super::detect::{self, read_hello, Detected};
use super::outbound::serve_http;
use super::terminate::{self, Terminating};
use crate::http::context::{Connection, HttpTarget};
use crate::http::pool::{EndpointConns, Version};
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::tcp::forward::{self, Origin, TcpTarget};
use crate::telemetry::metrics::Direction;
use crate::tls::{FailureReason, Sniff};
use crate::transport;
use crate::upstream::endpoint::EndpointRt;

pub async fn handle(shared: Arc<Shared>, mut stream: TcpStream, client: SocketAddr, slot: Arc<ConnSlot>) {
    let snap = shared.snapshot.load_full();
    let Some(inbound) = &snap.inbound else { return };
    let app = inbound.spec.app;
    let target = match transport::original_dst(&stream) {
        Some(orig) if orig.port() != app.port() => SocketAddr::new(app.ip(), orig.port()),
        _ => app,
    };
    let identity = shared.identity.load_full();
    let mode = inbound.mtls.mode(target.port(), identity.is_some());
    let opaque = inbound.spec.opaque_ports.contains(&target.port());
    // Detection and the ClientHello share one deadline.
    let deadline = Instant::now() + snap.sidecar.timeouts.detect.get();
    let (found, prefix) = if opaque && mode == MtlsMode::Disabled {
        (Detected::Opaque, Bytes::new())
    } else {
        match detect::detect(&mut stream, snap.sidecar.timeouts.detect.get()).await {
            Ok(detected) => detected,
            Err(e) => {
                tracing::debug!(%client, error = %e, "connection failed during protocol detection");
                return;
            }
        }
    };
    let (hello, prefix) = match found {
        Detected::Tls if mode != MtlsMode::Disabled => {
            match read_hello(&mut stream, prefix, deadline).await {
                Ok(read) => read,
                Err(e) => {
                    tracing::debug!(%client, error = %e, "connection failed while reading its ClientHello");
                    return;
                }
            }
        }
        Detected::Tls => (Sniff::OtherTls, prefix),
        _ => (Sniff::Plaintext, prefix),
    };
    match (hello, mode, identity) {
        (Sniff::Mesh(_), MtlsMode::Strict | MtlsMode::Permissive, Some(identity)) => {
            let conn = Terminating { shared: &shared, snap: &snap, client, target, slot, deadline };
            return terminate::serve(conn, &identity, stream, prefix, app_endpoint(&shared, &snap, target))
                .await;
        }
        (Sniff::Mesh(_), MtlsMode::Strict, None) => {
            return refuse(&shared, stream, client, FailureReason::NoLocalIdentity, found).await;
        }
        (_, MtlsMode::Strict, _) => {
            let reason = hello.refusal().unwrap_or(FailureReason::Other);
            return refuse(&shared, stream, client, reason, found).await;
        }
        _ => {}
    }
    // An opaque port stays opaque: detection above only looked for a sidecar's ClientHello.
    let version = match found {
        Detected::Http1 if !opaque => Version::Http1,
        Detected::Http2 if !opaque => Version::Http2,
        _ => {
            // Authorization before a byte reaches the app: a denied connection is dropped here.
            if !snap.authz.admit_connection(None, client, target.port(), snap.sidecar.access_log) {
                return;
            }
            let to = TcpTarget::Addr(target, &inbound.metrics, Some(&snap.name));
            let origin = Origin { addr: client, prefix, peer: None };
            return forward::forward(&shared, &snap, Direction::Inbound, stream, origin, to).await;
        }
    };
    let conn = Connection {
        shared: shared.clone(),
        direction: Direction::Inbound,
        client,
        target: HttpTarget::App(app_endpoint(&shared, &snap, target)),
        downstream: version,
        slot,
        peer: None,
        peer_header: None,
        edge: Some(shared.metrics.edges.inbound(None)),
    };
    serve_http(conn, stream, prefix, &snap).await;
}

/// The app's endpoint for a connection to `target`: the configured app port uses the shared
/// pool (`None`); another port gets connections of its own.
fn app_endpoint(shared: &Shared, snap: &Snapshot, target: SocketAddr) -> Option<Arc<EndpointRt>> {
    let app = snap.inbound.as_ref()?.spec.app;
    (target != app).then(|| {
        let label = target.to_string();
        Arc::new(EndpointRt {
            addr: target,
            conns: EndpointConns::new(target, None),
            metrics: shared.metrics.endpoint(Direction::Inbound, &snap.name, &label),
            guard: None,
            label,
        })
    })
}

/// Refuses a connection a strict port does not take, counted by `reason`. A plaintext HTTP/1
/// client is told why (other clients would not understand an answer).
async fn refuse(
    shared: &Shared,
    mut stream: TcpStream,
    client: SocketAddr,
    reason: FailureReason,
    found: Detected,
) {
    shared.metrics.mesh.refused(reason);
    tracing::debug!(%client, %reason, "connection refused: this inbound port accepts mesh mTLS only (strict)");
    if found == Detected::Http1 {
        const RESPONSE: &[u8] = b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 90\r\nconnection: close\r\npilotfish-error: forbidden\r\n\r\nthis port accepts mesh mTLS only (strict mode): call the service through your own sidecar\n";
        let _ = stream.write_all(RESPONSE).await;
    }
    let _ = stream.shutdown().await;
}
