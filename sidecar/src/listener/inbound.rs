//! Inbound connections, from other services to the local app: detect the protocol, then proxy
//! HTTP (recording the peer in `x-forwarded-for`/`forwarded`) or forward opaque bytes to the app.
//! A connection redirected by iptables goes to the app's address on the port originally dialled.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::accept::ConnSlot;
use super::detect::{self, Detected};
use super::outbound::serve_http;
use crate::http::context::{Connection, HttpTarget};
use crate::http::pool::{EndpointConns, Version};
use crate::state::Shared;
use crate::tcp::forward::{self, TcpTarget};
use crate::telemetry::metrics::Direction;
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
    let opaque = inbound.spec.opaque_ports.contains(&target.port());
    let (found, prefix) = if opaque {
        (Detected::Opaque, bytes::Bytes::new())
    } else {
        match detect::detect(&mut stream, snap.sidecar.timeouts.detect.get()).await {
            Ok(detected) => detected,
            Err(e) => {
                tracing::debug!(%client, error = %e, "connection failed during protocol detection");
                return;
            }
        }
    };
    let version = match found {
        Detected::Http1 => Version::Http1,
        Detected::Http2 => Version::Http2,
        Detected::Tls | Detected::Opaque => {
            // Authorization before a byte reaches the app: a denied connection is dropped here.
            if !snap.authz.admit_connection(None, client, target.port(), snap.sidecar.access_log) {
                return;
            }
            let to = TcpTarget::Addr(target, &inbound.metrics, Some(&snap.name));
            return forward::forward(&snap, Direction::Inbound, stream, client, prefix, to).await;
        }
    };
    // The configured app port uses the shared pool; another port gets its own connections.
    let endpoint = (target != app).then(|| {
        let label = target.to_string();
        Arc::new(EndpointRt {
            addr: target,
            conns: EndpointConns::new(target),
            metrics: shared.metrics.endpoint(Direction::Inbound, &snap.name, &label),
            guard: None,
            label,
        })
    });
    let target = HttpTarget::App(endpoint);
    let direction = Direction::Inbound;
    let conn = Connection {
        shared: shared.clone(),
        direction,
        client,
        target,
        downstream: version,
        slot,
        peer: None,
    };
    serve_http(conn, stream, prefix, &snap).await;
}
