//! A service as the request path sees it: its compiled routes and policy (from the snapshot)
//! beside the state that outlives a request — endpoints, the retry budget, the counters behind
//! its limits, the round-robin position. Built with each snapshot; what must survive a reload
//! (endpoint state, budgets, counters, rate limiters) is carried over by the builder.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pilotfish_api::policy::{CircuitBreaker, RetryBudget};
use pilotfish_api::ServiceSpec;
use prometheus::IntCounter;
use tower::retry::budget::TpsBudget;

use super::endpoint::EndpointRt;
use crate::resilience::ratelimit::policy::RateLimit;
use crate::snapshot::policy::ServicePolicy;
use crate::snapshot::route::RouteTable;
use crate::telemetry::metrics::{EndpointMetrics, ResilienceMetrics, TargetMetrics};

pub struct ServiceRt {
    /// `name.namespace`: the metrics label and the key for per-service listeners.
    pub key: Arc<str>,
    pub spec: ServiceSpec,
    pub endpoints: Vec<Arc<EndpointRt>>,
    /// Where the next round-robin scan starts.
    pub(crate) next: AtomicUsize,
    pub metrics: TargetMetrics,
    /// Labels requests the sidecar answers itself for this service.
    pub local: EndpointMetrics,
    /// Its HTTPRoutes, or the default route to itself.
    pub routes: RouteTable,
    pub policy: ServicePolicy,
    /// Retries stay within a fraction of requests (shared by every route to this service).
    pub budget: Arc<TpsBudget>,
    /// What `budget` was made from: a reload that keeps it keeps the budget's history.
    pub(crate) retry_budget: RetryBudget,
    /// What the endpoints' breakers were made from: a reload that keeps it keeps their state.
    pub(crate) breaker_config: CircuitBreaker,
    pub resilience: ResilienceMetrics,
    /// Mesh dials to its endpoints whose server proved another identity than the registry's.
    pub identity_mismatch: IntCounter,
    /// A `RateLimitPolicy` attached to the service.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// Requests to this service now in flight, until their response ends (for `maxRequests`).
    pub in_flight: Arc<AtomicUsize>,
    /// Requests now waiting for a new connection (for `maxPendingRequests`).
    pub pending: Arc<AtomicUsize>,
    /// Connections to its endpoints now open (for `maxConnections`); carried across reloads,
    /// since the connections are.
    pub connections: Arc<AtomicUsize>,
}

impl ServiceRt {
    /// Where a round-robin scan of the endpoints starts: one step further for every scan.
    pub fn round_robin_start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether any endpoint passes its active health check: with none, the service has
    /// nothing to offer whatever its breakers say.
    pub fn any_healthy(&self) -> bool {
        self.endpoints.iter().any(|e| e.guard.as_ref().is_none_or(|g| g.is_healthy()))
    }

    pub fn endpoint(&self, addr: SocketAddr) -> Option<&Arc<EndpointRt>> {
        self.endpoints.iter().find(|e| e.addr == addr)
    }
}
