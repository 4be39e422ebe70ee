//! Outbound connections, from the local app to other services. The destination is named one of
//! three ways: by the HTTP `Host`/`:authority` (the explicit listener), by the per-service local
//! port it arrived on, or by the original destination of a connection iptables redirected here
//! (transparent mode), which is either a known service's `ADDRESS:PORT` or passed through as is.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use pilotfish_api::Protocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::accept::ConnSlot;
use super::detect::{self, Detected, PrefixedIo};
use crate::http::context::{Connection, HttpTarget};
use crate::http::pool::Version;
use crate::http::proxy::Proxy;
use crate::http::server;
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::tcp::forward::{self, Origin, TcpTarget};
use crate::telemetry::metrics::Direction;
use crate::transport;

/// Which outbound listener a connection arrived on.
#[derive(Clone, Copy)]
pub enum Listener {
    /// The outbound listener: explicit (HTTP by host) or transparent (iptables).
    Main,
    /// A per-service local listener on this port.
    Local(u16),
}

pub async fn handle(
    shared: Arc<Shared>,
    stream: TcpStream,
    client: SocketAddr,
    listener: Listener,
    slot: Arc<ConnSlot>,
) {
    let snap = shared.snapshot.load_full();
    let service = match listener {
        Listener::Local(port) => match snap.local_ports.iter().find(|(p, _)| *p == port) {
            Some((_, key)) => snap.service(key).map(|s| (s, s.spec.protocol(None))),
            None => None,
        },
        Listener::Main => match transport::original_dst(&stream) {
            Some(orig) => match snap.service_by_addr(orig) {
                Some((svc, protocol)) => Some((svc, protocol)),
                None => {
                    // Not a service we know: pass through untouched to where the app dialled.
                    let target = TcpTarget::Addr(orig, &snap.passthrough, None);
                    let origin = Origin { addr: client, prefix: Bytes::new(), peer: None };
                    return forward::forward(&shared, &snap, Direction::Outbound, stream, origin, target)
                        .await;
                }
            },
            None => None,
        },
    };
    let (service, protocol) = match (listener, service) {
        (Listener::Local(port), None) => {
            tracing::debug!(port, "local port no longer maps to a service; closing");
            return;
        }
        (_, Some((svc, protocol))) => (Some(svc.clone()), protocol),
        (Listener::Main, None) => (None, None),
    };

    if protocol == Some(Protocol::Tcp) {
        if let Some(svc) = &service {
            let origin = Origin { addr: client, prefix: Bytes::new(), peer: None };
            let target = TcpTarget::Service(svc);
            return forward::forward(&shared, &snap, Direction::Outbound, stream, origin, target).await;
        }
    }
    let mut stream = stream;
    // A port declared HTTP is a promise: what arrives there is routed and policed as HTTP or
    // refused, never tunnelled.
    let declared_http = matches!(protocol, Some(Protocol::Http | Protocol::Http2 | Protocol::Grpc));
    let detected = if declared_http {
        match detect::detect_http(&mut stream, snap.sidecar.timeouts.header_read.get()).await {
            Ok((Some(found), prefix)) => Ok((found, prefix)),
            Ok((None, _)) => {
                if let Some(svc) = &service {
                    svc.local.record(http::StatusCode::REQUEST_TIMEOUT);
                }
                return request_timeout(stream).await;
            }
            Err(e) => Err(e),
        }
    } else {
        detect::detect(&mut stream, snap.sidecar.timeouts.detect.get()).await
    };
    let (found, prefix) = match detected {
        Ok(detected) => detected,
        Err(e) => {
            tracing::debug!(%client, error = %e, "connection failed during protocol detection");
            return;
        }
    };
    let version = match (found, &service) {
        (Detected::Http1, _) => Version::Http1,
        (Detected::Http2, _) => Version::Http2,
        (Detected::Tls | Detected::Opaque, Some(svc)) => {
            let target = TcpTarget::Service(svc);
            let origin = Origin { addr: client, prefix, peer: None };
            return forward::forward(&shared, &snap, Direction::Outbound, stream, origin, target).await;
        }
        (Detected::Tls, None) => {
            tracing::info!(
                %client,
                "TLS on the explicit outbound listener has no destination: use a service's localPort or transparent mode"
            );
            return;
        }
        // Nothing here but HTTP has a destination: let the HTTP server answer 400 to whatever
        // this is (a malformed request line, a stray CRLF, a typo'd method).
        (Detected::Opaque, None) => Version::Http1,
    };
    let target = match service {
        Some(svc) => HttpTarget::Service { key: svc.key.clone(), protocol },
        None => HttpTarget::ByAuthority,
    };
    let direction = Direction::Outbound;
    let conn = Connection {
        shared: shared.clone(),
        direction,
        client,
        target,
        downstream: version,
        slot,
        peer: None,
        peer_header: None,
        edge: None,
    };
    serve_http(conn, stream, prefix, &snap).await;
}

/// Answers a client that sent no request line in time on a port declared HTTP, and closes.
async fn request_timeout(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\npilotfish-error: timeout\r\n\r\n";
    if stream.write_all(RESPONSE).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// Serves a connection detected as HTTP, `prefix` holding the bytes detection read.
pub(crate) async fn serve_http<S>(conn: Connection, stream: S, prefix: Bytes, snap: &Snapshot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (version, shutdown) = (conn.downstream, conn.shared.shutdown.clone());
    let io = PrefixedIo::new(prefix, stream);
    server::serve(io, version, Proxy::new(conn), &snap.sidecar, shutdown).await;
}
