//! Stage 3, endpoint: one attempt on one endpoint of a backend service — the balancer's choice,
//! the endpoint's circuit breaker admitting it, the send over the endpoint's pooled connections
//! under the per-try timeout, and the bookkeeping of what became of it (latency in the load
//! estimate, the breaker's verdict, the service-limit counters).
//!
//! The balancer is power-of-two-choices over peak-EWMA load (or least requests, or round-robin,
//! as the `BackendPolicy` says) among endpoints that are healthy and whose breaker is not open;
//! an endpoint whose breaker refuses this attempt (another request holds its half-open probe)
//! is passed over for the next choice. See `resilience::balance` for why not tower's balancer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use pilotfish_api::policy::{FailureKind, LoadBalancer};
use tokio::time::Instant;

use crate::http::context::RequestContext;
use crate::http::errors::ProxyError;
use crate::http::pool::{Connect, SendError, UpstreamError, Version};
use crate::http::request_body::RequestBody;
use crate::http::respond::Answer;
use crate::resilience::attempt::Attempt;
use crate::resilience::balance::p2c;
use crate::resilience::retry::Outcome;
use crate::upstream::endpoint::{EndpointGuard, EndpointRt};
use crate::upstream::mesh::MeshClient;
use crate::upstream::service::ServiceRt;

/// The balancer: an endpoint that is healthy, whose breaker lets traffic through, that is not
/// in `refused`, and (when another qualifies) that is not `avoid` — the endpoint a failed
/// attempt just used.
pub fn choose<'s>(
    service: &'s ServiceRt,
    now: Instant,
    avoid: Option<SocketAddr>,
    refused: &[SocketAddr],
) -> Option<&'s Arc<EndpointRt>> {
    let eps = &service.endpoints;
    let usable =
        |i: usize| eps[i].guard.as_ref().is_none_or(|g| g.is_usable(now)) && !refused.contains(&eps[i].addr);
    let preferred = |i: usize| usable(i) && Some(eps[i].addr) != avoid;
    let chosen = match service.policy.load_balancer {
        LoadBalancer::RoundRobin => {
            let start = service.round_robin_start();
            let scan = |ok: &dyn Fn(usize) -> bool| {
                (0..eps.len()).map(|k| start.wrapping_add(k) % eps.len()).find(|i| ok(*i))
            };
            scan(&preferred).or_else(|| scan(&usable))
        }
        lb => {
            let cost = |i: usize| match (&eps[i].guard, lb) {
                (Some(g), LoadBalancer::LeastRequests) => g.load.in_flight() as f64,
                (Some(g), _) => g.load.cost(now),
                (None, _) => 0.0,
            };
            p2c(eps.len(), preferred, cost).or_else(|| p2c(eps.len(), usable, cost))
        }
    };
    chosen.map(|i| &eps[i])
}

/// An endpoint the balancer chose and its breaker admitted, holding the attempt's place in the
/// endpoint's load (and, when half-open, the breaker's probe) until the attempt is settled.
pub struct Admitted<'s> {
    pub endpoint: &'s Arc<EndpointRt>,
    guard: &'s EndpointGuard,
    attempt: Attempt<'s>,
}

/// Chooses an endpoint of `service` whose breaker admits an attempt now; when none does, why
/// the service has nothing to offer.
pub fn admit(service: &ServiceRt, avoid: Option<SocketAddr>) -> Result<Admitted<'_>, ProxyError> {
    let mut refused = Vec::new();
    loop {
        let now = Instant::now();
        let Some(endpoint) = choose(service, now, avoid, &refused) else {
            return Err(unavailable(service));
        };
        let guard = endpoint.guard.as_deref().expect("outbound endpoints have guards");
        match guard.admit(now) {
            Some(attempt) => return Ok(Admitted { endpoint, guard, attempt }),
            None => refused.push(endpoint.addr),
        }
    }
}

/// Why a service has no endpoint to offer: none at all, none healthy, or all ejected.
fn unavailable(service: &ServiceRt) -> ProxyError {
    if service.any_healthy() {
        ProxyError::CircuitOpen(service.key.to_string())
    } else {
        ProxyError::NoEndpoints(service.key.to_string())
    }
}

/// How long one attempt may take: the route's per-try timeout, and the request's deadline with
/// the route timeout it comes from.
#[derive(Debug, Clone, Copy)]
pub struct TryLimits {
    pub per_try: Option<Duration>,
    pub deadline: Option<(Instant, Duration)>,
}

impl TryLimits {
    /// When an attempt sent at `sent_at` runs out of time.
    pub fn until(&self, sent_at: Instant) -> Option<Instant> {
        match (self.per_try.map(|t| sent_at + t), self.deadline.map(|(at, _)| at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timeout an attempt that ran out of time at `at` failed: the route's, when its
    /// deadline was what ran out, otherwise the per-try timeout.
    pub fn expired(&self, at: Instant) -> ProxyError {
        let route = self.deadline.filter(|(deadline, _)| *deadline == at).map(|(_, timeout)| timeout);
        ProxyError::Timeout(route.or(self.per_try).unwrap_or_default())
    }
}

/// What became of an attempt that reached the endpoint's connection pool.
pub struct Attempted<'s> {
    pub endpoint: &'s Arc<EndpointRt>,
    pub outcome: Outcome,
    pub finished: Instant,
    pub result: Result<Answer, ProxyError>,
    /// The request, when it never went out (a retry may send it elsewhere, whatever its body).
    pub unsent: Option<Box<Request<RequestBody>>>,
}

impl<'s> Admitted<'s> {
    /// Sends `req` (already prepared for the endpoint) in `version`, within `limits` and the
    /// limits of `service` on connections and pending requests, and settles the attempt. `Err`
    /// when one of those service limits refused it: the sidecar's own limit, not the endpoint's
    /// failure, so no breaker verdict and no retry.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice (rust-lang/rust#62958)"
    )]
    pub fn send<'a>(
        self,
        cx: &'a RequestContext<'a>,
        service: &'a ServiceRt,
        version: Version,
        req: Box<Request<RequestBody>>,
        limits: TryLimits,
    ) -> impl Future<Output = Result<Attempted<'s>, ProxyError>> + Send + 'a
    where
        's: 'a,
    {
        async move {
            // Only a meshed endpoint needs this sidecar's identity: one atomic load, no more.
            let mesh = self.endpoint.conns.identity().map(|_| MeshClient {
                identity: cx.conn.shared.identity.load_full(),
                max_age: cx.snap.sidecar.outbound.mesh_max_age.get(),
                opened: cx.conn.shared.metrics.mesh.opened_outbound.clone(),
            });
            let connect = Connect {
                timeout: cx.snap.sidecar.timeouts.connect.get(),
                open: &service.connections,
                max_open: service.policy.limits.max_connections as usize,
                pending: &service.pending,
                max_pending: service.policy.limits.max_pending_requests as usize,
                mesh: mesh.as_ref(),
            };
            let sent_at = Instant::now();
            let send = self.endpoint.conns.send(version, req, &connect);
            let result = match limits.until(sent_at) {
                Some(at) => tokio::time::timeout_at(at, send).await.map_err(|_| at),
                None => Ok(send.await),
            };
            let finished = Instant::now();
            let (outcome, blamed, result, unsent) = match result {
                Ok(Ok((res, conn))) => (response_outcome(&res), true, Ok((res, conn)), None),
                Ok(Err(SendError { error: UpstreamError::Overflow(limit), .. })) => {
                    drop(self.attempt);
                    service.resilience.overflowed(limit);
                    return Err(ProxyError::Overloaded { service: service.key.to_string(), limit });
                }
                Ok(Err(SendError { error, unsent })) => {
                    if error.is_identity_mismatch() {
                        service.identity_mismatch.inc();
                    }
                    let outcome = if error.is_connect() { Outcome::ConnectFailure } else { Outcome::Reset };
                    // A failure shared by a queue of requests counts against the endpoint once.
                    let blamed = error.blames_endpoint();
                    (outcome, blamed, Err(ProxyError::from(error)), unsent)
                }
                Err(at) => (Outcome::Timeout, true, Err(limits.expired(at)), None),
            };
            let endpoint = self.endpoint;
            self.settle(outcome, blamed, finished - sent_at, &service.policy.failure_on, finished);
            Ok(Attempted { endpoint, outcome, finished, result, unsent })
        }
    }

    /// Records what became of the attempt: when it is the endpoint's own evidence (`blamed`),
    /// its latency and its breaker verdict; otherwise it only gives its place back.
    pub fn settle(
        self,
        outcome: Outcome,
        blamed: bool,
        elapsed: Duration,
        failure_on: &[FailureKind],
        now: Instant,
    ) {
        if blamed {
            self.guard.settle(self.attempt, outcome, elapsed, failure_on, now);
        }
    }
}

/// A response's outcome: its status, and its `grpc-status` when a trailers-only gRPC response
/// carries one in its headers.
fn response_outcome(res: &Response<Incoming>) -> Outcome {
    let grpc = res.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    Outcome::Response { status: res.status().as_u16(), grpc }
}
