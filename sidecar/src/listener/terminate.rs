//! Terminating a sidecar's mesh mTLS on the inbound port and serving what the connection
//! carries, with the peer's verified identity on the connection (`Connection::peer`) for
//! authorization and the app:
//! - `pilotfish.io/h2`: HTTP/2 between the sidecars; each request reaches the app in the HTTP
//!   version its caller's app spoke (see [`crate::http::orig_proto`]);
//! - `pilotfish.io/tcp`: a transport header, then opaque bytes forwarded to the app, or raw
//!   HTTP/1.1 (an upgrade such as WebSocket) served like any HTTP/1.1 connection. Bytes the
//!   caller calls opaque are detected like a plaintext connection's unless the port is declared
//!   opaque: HTTP found there is served as HTTP, so no caller reaches the app past the L7 path.
//!
//! A handshake that fails is counted in `pilotfish_inbound_tls_refused_total` by reason.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::accept::ConnSlot;
use super::detect::{self, Detected};
use super::outbound::serve_http;
use crate::http::context::{Connection, HttpTarget};
use crate::http::inbound::peer_header;
use crate::http::pool::Version;
use crate::identity::Identity;
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::tcp::forward::{self, Origin, TcpTarget};
use crate::tcp::header::{Carried, TransportHeader};
use crate::telemetry::metrics::Direction;
use crate::tls::{accept_mesh, FailureReason, MeshAlpn};
use crate::upstream::endpoint::EndpointRt;

/// An accepted connection about to be terminated.
pub struct Terminating<'a> {
    pub shared: &'a Arc<Shared>,
    pub snap: &'a Snapshot,
    pub client: SocketAddr,
    /// Where its bytes go: the app's address and the port the connection was for.
    pub target: SocketAddr,
    pub slot: Arc<ConnSlot>,
    /// Detection's deadline, which the handshake and the transport header share.
    pub deadline: Instant,
}

/// Completes the handshake as `identity` (`prefix`: the bytes detection read) and serves the
/// connection; `app` is the app's endpoint when `target` is not the configured app port.
pub async fn serve(
    conn: Terminating<'_>,
    identity: &Identity,
    stream: TcpStream,
    prefix: Bytes,
    app: Option<Arc<EndpointRt>>,
) {
    let Terminating { shared, snap, client, target, slot, deadline } = conn;
    let refused = |reason: FailureReason| {
        shared.metrics.mesh.refused(reason);
    };
    let established =
        match tokio::time::timeout_at(deadline, accept_mesh(&identity.configs, prefix, stream)).await {
            Ok(Ok(established)) => established,
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "mesh mTLS refused");
                return refused(e.reason());
            }
            Err(_) => {
                tracing::debug!(%client, "mesh mTLS handshake did not finish within the detect timeout");
                return refused(FailureReason::Other);
            }
        };
    shared.metrics.mesh.opened_inbound.inc();
    let (mut stream, peer) = (established.stream, Arc::new(established.peer));
    let (version, prefix) = match established.alpn {
        MeshAlpn::Http2 => (Version::Http2, Bytes::new()),
        MeshAlpn::Tcp => match tokio::time::timeout_at(deadline, TransportHeader::read(&mut stream)).await {
            Ok(Ok(TransportHeader { carried: Carried::Http1, port: 0 })) => (Version::Http1, Bytes::new()),
            Ok(Ok(TransportHeader { carried: Carried::Opaque, port: 0 })) => {
                let Some(inbound) = &snap.inbound else { return };
                // Authorization before a byte reaches the app: a denied connection is dropped
                // here, at once.
                let access_log = snap.sidecar.access_log;
                if !snap.authz.admit_connection(Some(&peer), client, target.port(), access_log) {
                    return;
                }
                // What the caller calls opaque is then checked like a plaintext connection: HTTP
                // to a port not declared opaque goes through the L7 path (authorization by path,
                // the peer header stripped and set), never raw to the app.
                let (found, prefix) = if inbound.spec.opaque_ports.contains(&target.port()) {
                    (Detected::Opaque, Bytes::new())
                } else {
                    match detect::detect(&mut stream, snap.sidecar.timeouts.detect.get()).await {
                        Ok(detected) => detected,
                        Err(e) => {
                            return tracing::debug!(%client, %peer, error = %e, "mesh TCP failed in detection")
                        }
                    }
                };
                match found {
                    Detected::Http1 => (Version::Http1, prefix),
                    Detected::Http2 => (Version::Http2, prefix),
                    Detected::Tls | Detected::Opaque => {
                        let to = TcpTarget::Addr(target, &inbound.metrics, Some(&snap.name));
                        let origin = Origin { addr: client, prefix, peer: Some(&peer) };
                        return forward::forward(shared, snap, Direction::Inbound, stream, origin, to).await;
                    }
                }
            }
            // A port other than the one the connection reached would let a peer pick any
            // port of the app's host (the sidecar's own admin port among them): not taken.
            Ok(Ok(header)) => {
                return tracing::debug!(%client, %peer, ?header, "mesh transport header for another port refused");
            }
            Ok(Err(e)) => return tracing::debug!(%client, %peer, error = %e, "bad mesh transport header"),
            Err(_) => return tracing::debug!(%client, %peer, "no mesh transport header in time"),
        },
    };
    let conn = Connection {
        shared: shared.clone(),
        direction: Direction::Inbound,
        client,
        target: HttpTarget::App(app),
        downstream: version,
        slot,
        peer_header: Some(peer_header(&peer)),
        edge: Some(shared.metrics.edges.inbound(Some(&peer))),
        peer: Some(peer),
    };
    serve_http(conn, stream, prefix, snap).await;
}
