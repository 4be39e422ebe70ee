//! The L4 path: forwarding an opaque connection to an endpoint, a service's endpoints, or the
//! original destination, with the bytes already read during detection sent first. A meshed
//! endpoint is reached over mesh mTLS (`pilotfish.io/tcp`, after a transport header).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use tokio::time::Instant;

use bytes::Bytes;
use pilotfish_api::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::header::{Carried, TransportHeader};
use super::splice;
use crate::identity::Identity;
use crate::resilience::retry::Outcome;
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::telemetry::access_log::{self, TcpRecord, Tls};
use crate::telemetry::edges::{EdgeStats, NO_ROUTE};
use crate::telemetry::metrics::{Direction, TargetMetrics};
use crate::tls::MeshAlpn;
use crate::transport;
use crate::upstream::endpoint::EndpointRt;
use crate::upstream::mesh;
use crate::upstream::service::ServiceRt;

/// Where an opaque connection goes.
pub enum TcpTarget<'a> {
    /// One of a service's endpoints (round-robin over the usable ones; on connect failure the
    /// next is tried).
    Service(&'a Arc<ServiceRt>),
    /// A fixed address: the app (inbound) or an unknown original destination (passthrough).
    Addr(SocketAddr, &'a TargetMetrics, Option<&'a str>),
}

/// The downstream side of an opaque connection: where it came from, the bytes detection
/// already read from it, and (inbound over mesh mTLS) the peer's verified identity.
pub struct Origin<'a> {
    pub addr: SocketAddr,
    pub prefix: Bytes,
    pub peer: Option<&'a Arc<SpiffeId>>,
}

/// A connection to where the bytes go: plain, or mesh mTLS to a meshed endpoint.
type Upstream = Either<TcpStream, TlsStream<TcpStream>>;

/// Connects to one of a service's endpoints: round-robin over those that are healthy and whose
/// circuit breaker admits a connection, trying up to three; a failed connect counts against the
/// endpoint's breaker as it does for HTTP. A meshed endpoint is dialled as `identity`.
async fn connect_to_service(
    svc: &ServiceRt,
    timeout: std::time::Duration,
    identity: Option<&Arc<Identity>>,
    opened: &prometheus::IntCounter,
) -> std::io::Result<(Upstream, Option<Arc<EdgeStats>>)> {
    let mut tried = Vec::new();
    let mut last = None;
    while tried.len() < MAX_CONNECT_ATTEMPTS {
        let now = Instant::now();
        let Some(endpoint) = pick(svc, now, &tried) else { break };
        tried.push(endpoint.addr);
        let guard = endpoint.guard.as_ref().expect("outbound endpoints have guards");
        let Some(attempt) = guard.admit(now) else { continue };
        // A dial that failed for this sidecar's own reason (no identity yet) is not the
        // endpoint's fault: it is not counted against it.
        let mut blamed = true;
        let connected = match endpoint.conns.identity() {
            None => transport::connect(endpoint.addr, timeout).await.map(Either::Left),
            Some(expected) => {
                let header = TransportHeader { carried: Carried::Opaque, port: 0 };
                let dialled =
                    mesh::dial(identity, endpoint.addr, expected, MeshAlpn::Tcp, Some(header), timeout).await;
                match dialled {
                    Ok(stream) => {
                        opened.inc();
                        Ok(Either::Right(stream))
                    }
                    Err(e) => {
                        if e.is_identity_mismatch() {
                            svc.identity_mismatch.inc();
                        }
                        blamed = e.blames_endpoint();
                        Err(std::io::Error::other(e))
                    }
                }
            }
        };
        let outcome = if connected.is_ok() { Outcome::Connected } else { Outcome::ConnectFailure };
        let done = Instant::now();
        if blamed {
            guard.settle(attempt, outcome, done - now, &svc.policy.failure_on, done);
        }
        match connected {
            Ok(stream) => return Ok((stream, endpoint.metrics.edge(NO_ROUTE).cloned())),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::other(format!("service {} has no healthy endpoint that is not ejected", svc.key))
    }))
}

/// The L4 balancer: round-robin over the endpoints that are healthy, not ejected and not in
/// `tried`. (Opaque connections are long-lived and few; a latency estimate says little.)
pub fn pick<'s>(svc: &'s ServiceRt, now: Instant, tried: &[SocketAddr]) -> Option<&'s Arc<EndpointRt>> {
    let eps = &svc.endpoints;
    let start = svc.round_robin_start();
    (0..eps.len())
        .map(|k| &eps[start.wrapping_add(k) % eps.len()])
        .find(|e| e.guard.as_ref().is_none_or(|g| g.is_usable(now)) && !tried.contains(&e.addr))
}

/// Endpoints one opaque connection tries before giving up.
const MAX_CONNECT_ATTEMPTS: usize = 3;

pub async fn forward<C>(
    shared: &Shared,
    snap: &Snapshot,
    direction: Direction,
    mut client: C,
    origin: Origin<'_>,
    target: TcpTarget<'_>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Origin { addr: client_addr, prefix, peer } = origin;
    let started = StdInstant::now();
    let connect_timeout = snap.sidecar.timeouts.connect.get();
    let (server, metrics, service) = match target {
        TcpTarget::Service(svc) => {
            let identity = shared.identity.load_full();
            let opened = &shared.metrics.mesh.opened_outbound;
            let server = connect_to_service(svc, connect_timeout, identity.as_ref(), opened).await;
            (server, &svc.metrics, Some(&*svc.key))
        }
        TcpTarget::Addr(addr, metrics, service) => {
            let server = transport::connect(addr, connect_timeout).await;
            (server.map(|s| (Either::Left(s), None)), metrics, service)
        }
    };
    let (mut server, edge) = match server {
        // Inbound, the edge is the caller's (the server side).
        Ok((server, None)) if direction == Direction::Inbound => {
            (server, Some(shared.metrics.edges.inbound(peer.map(|p| &**p))))
        }
        Ok(server) => server,
        Err(e) => {
            tracing::debug!(client = %client_addr, error = %e, "opaque connection refused");
            let _ = client.shutdown().await;
            return;
        }
    };
    let (upstream, tls) = match &server {
        Either::Left(tcp) => (tcp.peer_addr().ok(), Tls::of(peer.is_some())),
        Either::Right(mesh) => (mesh.get_ref().0.peer_addr().ok(), Tls::Mtls),
    };
    if let Some(edge) = &edge {
        edge.tcp_opened();
    }
    let mut result = Ok(());
    if !prefix.is_empty() {
        result = server.write_all(&prefix).await;
        metrics.tcp_client_to_server.inc_by(prefix.len() as u64);
    }
    let mut moved = splice::Transferred::default();
    if result.is_ok() {
        let idle = snap.sidecar.timeouts.idle.get();
        let counters = (&metrics.tcp_client_to_server, &metrics.tcp_server_to_client);
        (moved, result) = splice::splice(client, server, idle, counters).await;
    }
    moved.client_to_server += prefix.len() as u64;
    if let Some(edge) = &edge {
        edge.tcp_closed(moved.client_to_server, moved.server_to_client);
    }
    if let Err(e) = &result {
        tracing::debug!(client = %client_addr, error = %e, "opaque connection ended with an error");
    }
    if snap.sidecar.access_log {
        access_log::tcp(&TcpRecord {
            direction: direction.as_str(),
            client: client_addr,
            upstream,
            service: service.map(str::to_owned),
            duration_ms: access_log::millis(started.elapsed()),
            bytes_client_to_server: moved.client_to_server,
            bytes_server_to_client: moved.server_to_client,
            tls,
            peer: peer.cloned(),
            error: result.err().map(|e| e.to_string()),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::snapshot::Overrides;
    use crate::telemetry::metrics::Metrics;

    const CONFIG: &str = "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {name: users, namespace: shop}\nspec: {endpoints: [{address: 127.0.0.1:9001}, {address: 127.0.0.1:9002}]}\n";

    fn build() -> Snapshot {
        Snapshot::build("test.yaml", CONFIG, &Overrides::default(), None, &Metrics::new()).unwrap()
    }

    #[test]
    fn round_robins_endpoints() {
        let snap = build();
        let svc = snap.service("users.shop").unwrap();
        let now = Instant::now();
        let picks: Vec<_> = (0..4).map(|_| pick(svc, now, &[]).unwrap().addr.port()).collect();
        assert_eq!(picks, [9001, 9002, 9001, 9002]);
        let tried = [svc.endpoints[0].addr];
        assert_eq!(pick(svc, now, &tried).unwrap().addr.port(), 9002);
        // Unhealthy endpoints take no connections.
        svc.endpoints[1].guard.as_ref().unwrap().healthy.store(false, Ordering::Relaxed);
        assert!(pick(svc, now, &tried).is_none());
        assert!((0..4).all(|_| pick(svc, now, &[]).unwrap().addr.port() == 9001));
    }
}
