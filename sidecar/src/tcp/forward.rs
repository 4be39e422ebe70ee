//! The L4 path: forwarding an opaque connection to an endpoint, a service's endpoints, or the
//! original destination, with the bytes already read during detection sent first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::splice;
use crate::resilience::attempt::Attempt;
use crate::resilience::retry::Outcome;
use crate::snapshot::{ServiceRt, Snapshot};
use crate::telemetry::access_log::{self, TcpRecord};
use crate::telemetry::metrics::{Direction, TargetMetrics};
use crate::transport;

/// Where an opaque connection goes.
pub enum TcpTarget<'a> {
    /// One of a service's endpoints (round-robin over the usable ones; on connect failure the
    /// next is tried).
    Service(&'a Arc<ServiceRt>),
    /// A fixed address: the app (inbound) or an unknown original destination (passthrough).
    Addr(SocketAddr, &'a TargetMetrics, Option<&'a str>),
}

/// Connects to one of a service's endpoints: round-robin over those that are healthy and whose
/// circuit breaker admits a connection, trying up to three; a failed connect counts against the
/// endpoint's breaker as it does for HTTP.
async fn connect_to_service(svc: &ServiceRt, timeout: std::time::Duration) -> std::io::Result<TcpStream> {
    let mut tried = Vec::new();
    let mut last = None;
    while tried.len() < MAX_CONNECT_ATTEMPTS {
        let now = tokio::time::Instant::now();
        let Some(endpoint) = svc.pick(now, &tried) else { break };
        tried.push(endpoint.addr);
        let guard = endpoint.guard.as_ref().expect("outbound endpoints have guards");
        let Some(admission) = guard.breaker.admit(now) else { continue };
        guard.breaker_metrics.record(admission.transition);
        let attempt = Attempt::start(&guard.breaker, &guard.load, admission.probe);
        let connected = transport::connect(endpoint.addr, timeout).await;
        let outcome = if connected.is_ok() { Outcome::Connected } else { Outcome::ConnectFailure };
        let done = tokio::time::Instant::now();
        guard.breaker_metrics.record(attempt.finish(outcome, done - now, &svc.policy.failure_on, done));
        match connected {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::other(format!("service {} has no healthy endpoint that is not ejected", svc.key))
    }))
}

/// Endpoints one opaque connection tries before giving up.
const MAX_CONNECT_ATTEMPTS: usize = 3;

pub async fn forward(
    snap: &Snapshot,
    direction: Direction,
    mut client: TcpStream,
    client_addr: SocketAddr,
    prefix: Bytes,
    target: TcpTarget<'_>,
) {
    let started = Instant::now();
    let connect_timeout = snap.sidecar.timeouts.connect.get();
    let (server, metrics, service) = match target {
        TcpTarget::Service(svc) => {
            (connect_to_service(svc, connect_timeout).await, &svc.metrics, Some(&*svc.key))
        }
        TcpTarget::Addr(addr, metrics, service) => {
            (transport::connect(addr, connect_timeout).await, metrics, service)
        }
    };
    let mut server = match server {
        Ok(server) => server,
        Err(e) => {
            tracing::debug!(client = %client_addr, error = %e, "opaque connection refused");
            let _ = client.shutdown().await;
            return;
        }
    };
    let upstream = server.peer_addr().ok();
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
            error: result.err().map(|e| e.to_string()),
        });
    }
}
