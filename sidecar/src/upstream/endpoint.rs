//! An endpoint as the request path sees it: its address, its connection pool, its metrics and,
//! for outbound endpoints, the guard that decides whether it takes traffic — circuit breaker,
//! load estimate and health — with the admission and bookkeeping both the L7 and L4 paths use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pilotfish_api::policy::FailureKind;
use tokio::time::Instant;

use crate::http::pool::EndpointConns;
use crate::resilience::attempt::Attempt;
use crate::resilience::balance::PeakEwma;
use crate::resilience::breaker::Breaker;
use crate::resilience::retry::Outcome;
use crate::telemetry::metrics::{BreakerMetrics, EndpointMetrics};

pub struct EndpointRt {
    pub addr: SocketAddr,
    pub label: String,
    pub conns: Arc<EndpointConns>,
    pub metrics: EndpointMetrics,
    /// Outbound endpoints only: breaker, load and health (carried across reloads).
    pub guard: Option<Arc<EndpointGuard>>,
}

pub struct EndpointGuard {
    pub breaker: Breaker,
    pub load: PeakEwma,
    /// Set by active health checks; an unhealthy endpoint takes no traffic.
    pub healthy: AtomicBool,
    pub breaker_metrics: BreakerMetrics,
}

impl EndpointGuard {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the balancer may offer the endpoint: healthy, and its breaker not open.
    pub fn is_usable(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.breaker.is_available(now)
    }

    /// Asks the breaker to admit one attempt (`None`: not now — another request holds the
    /// half-open probe); the attempt counts in the endpoint's load until it is settled.
    pub fn admit(&self, now: Instant) -> Option<Attempt<'_>> {
        let admission = self.breaker.admit(now)?;
        self.breaker_metrics.record(admission.transition);
        Some(Attempt::start(&self.breaker, &self.load, admission.probe))
    }

    /// Settles an attempt with what became of it: its latency in the load estimate and its
    /// verdict on the breaker, exported.
    pub fn settle(
        &self,
        attempt: Attempt<'_>,
        outcome: Outcome,
        elapsed: Duration,
        failure_on: &[FailureKind],
        now: Instant,
    ) {
        self.breaker_metrics.record(attempt.finish(outcome, elapsed, failure_on, now));
    }
}
