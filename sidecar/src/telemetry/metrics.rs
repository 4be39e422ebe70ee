//! The sidecar's Prometheus metrics: the families, and the per-target handles that the request
//! path uses. Label values are resolved when a service's runtime state is built (with the
//! snapshot, or when a request first needs the service), never per request (status codes are
//! resolved once, the first time each code is seen on an endpoint). So a service's series
//! appear once something has called it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use super::edges::{EdgeStats, Edges, RouteId};
use super::identity::IdentityMetrics;
use super::mesh::MeshMetrics;
use crate::resilience::breaker::{BreakerState, Transition};
use crate::resilience::limit::Limit;
use crate::resilience::retry::Reason;
use http::StatusCode;
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Which way traffic flows through this sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From other services to the local app.
    Inbound,
    /// From the local app to other services.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// Every metric family the sidecar exports, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    open_connections: IntGaugeVec,
    tcp_bytes: IntCounterVec,
    pub config_version: IntGauge,
    pub config_errors: IntCounter,
    pub access_log_dropped: IntCounter,
    circuit_state: IntGaugeVec,
    circuit_transitions: IntCounterVec,
    overflow: IntCounterVec,
    retries: IntCounterVec,
    retry_budget_exhausted: IntCounterVec,
    ratelimited: IntCounterVec,
    authz_denied: IntCounterVec,
    pub mesh: MeshMetrics,
    pub identity: IdentityMetrics,
    /// Per-edge counts for the control plane's telemetry (managed mode reports them).
    pub edges: Edges,
    /// Telemetry reports the control plane did not take (their counts are lost).
    pub stats_reports_dropped: IntCounter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let requests = IntCounterVec::new(
            Opts::new("pilotfish_requests_total", "HTTP requests completed, by response status"),
            &["direction", "service", "endpoint", "code"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "pilotfish_request_duration_seconds",
                "Time from receiving a request to sending its response headers",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["direction", "service"],
        )
        .expect("valid metric");
        let open_connections = IntGaugeVec::new(
            Opts::new("pilotfish_open_connections", "Connections accepted and not yet closed"),
            &["direction"],
        )
        .expect("valid metric");
        let tcp_bytes = IntCounterVec::new(
            Opts::new("pilotfish_tcp_bytes_total", "Bytes forwarded on opaque TCP connections"),
            &["direction", "service", "flow"],
        )
        .expect("valid metric");
        let config_version = IntGauge::new(
            "pilotfish_config_version",
            "Version of the configuration in force (increments on every accepted change)",
        )
        .expect("valid metric");
        let config_errors = IntCounter::new(
            "pilotfish_config_errors_total",
            "Configurations rejected (the previous one stayed in force)",
        )
        .expect("valid metric");

        let access_log_dropped = IntCounter::new(
            "pilotfish_access_log_dropped_total",
            "Access log lines dropped because stdout was not read fast enough",
        )
        .expect("valid metric");

        let circuit_state = IntGaugeVec::new(
            Opts::new("pilotfish_circuit_state", "Endpoint circuit breaker: 0 closed, 1 open, 2 half-open"),
            &["service", "endpoint"],
        )
        .expect("valid metric");
        let circuit_transitions = IntCounterVec::new(
            Opts::new("pilotfish_circuit_transitions_total", "Circuit breaker state changes, by new state"),
            &["service", "endpoint", "to"],
        )
        .expect("valid metric");
        let overflow = IntCounterVec::new(
            Opts::new("pilotfish_overflow_total", "Requests failed fast because a service limit was reached"),
            &["service", "limit"],
        )
        .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new("pilotfish_retries_total", "Retried attempts, by what made the previous one fail"),
            &["service", "reason"],
        )
        .expect("valid metric");
        let retry_budget_exhausted = IntCounterVec::new(
            Opts::new(
                "pilotfish_retry_budget_exhausted_total",
                "Retries not made because the retry budget was spent",
            ),
            &["service"],
        )
        .expect("valid metric");
        let ratelimited = IntCounterVec::new(
            Opts::new("pilotfish_ratelimited_total", "Requests refused with 429 by a RateLimitPolicy"),
            &["service", "route"],
        )
        .expect("valid metric");
        let authz_denied = IntCounterVec::new(
            Opts::new(
                "pilotfish_authz_denied_total",
                "Inbound requests and connections denied by authorization, by the AuthorizationPolicy that denied them (or `default`)",
            ),
            &["service", "policy"],
        )
        .expect("valid metric");

        let stats_reports_dropped = IntCounter::new(
            "pilotfish_stats_reports_dropped_total",
            "Telemetry reports to the control plane that failed (their counts are lost)",
        )
        .expect("valid metric");

        let registry = Registry::new();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(open_connections.clone()),
            Box::new(tcp_bytes.clone()),
            Box::new(config_version.clone()),
            Box::new(config_errors.clone()),
            Box::new(access_log_dropped.clone()),
            Box::new(circuit_state.clone()),
            Box::new(circuit_transitions.clone()),
            Box::new(overflow.clone()),
            Box::new(retries.clone()),
            Box::new(retry_budget_exhausted.clone()),
            Box::new(ratelimited.clone()),
            Box::new(authz_denied.clone()),
            Box::new(stats_reports_dropped.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let mesh = MeshMetrics::register(&registry);
        let identity = IdentityMetrics::register(&registry);
        Arc::new(Self {
            mesh,
            registry,
            requests,
            request_duration,
            open_connections,
            tcp_bytes,
            config_version,
            config_errors,
            access_log_dropped,
            circuit_state,
            circuit_transitions,
            overflow,
            retries,
            retry_budget_exhausted,
            ratelimited,
            authz_denied,
            identity,
            edges: Edges::default(),
            stats_reports_dropped,
        })
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("writing to a Vec cannot fail");
        out
    }

    pub fn open_connections(&self, direction: Direction) -> IntGauge {
        self.open_connections.with_label_values(&[direction.as_str()])
    }

    /// Handles for traffic to one service (or to the local app, inbound).
    pub fn target(&self, direction: Direction, service: &str) -> TargetMetrics {
        let d = direction.as_str();
        TargetMetrics {
            duration: self.request_duration.with_label_values(&[d, service]),
            tcp_client_to_server: self.tcp_bytes.with_label_values(&[d, service, "client_to_server"]),
            tcp_server_to_client: self.tcp_bytes.with_label_values(&[d, service, "server_to_client"]),
        }
    }

    /// Handles for requests answered by one endpoint of a service (`endpoint` is empty for
    /// responses the sidecar produced itself).
    pub fn endpoint(&self, direction: Direction, service: &str, endpoint: &str) -> EndpointMetrics {
        EndpointMetrics {
            family: self.requests.clone(),
            labels: [direction.as_str().to_owned(), service.to_owned(), endpoint.to_owned()],
            codes: Default::default(),
            edge: None,
            routes: Box::default(),
        }
    }
}

/// The services, endpoints and routes a configuration has series for; what is not listed is
/// retired from the metrics when that configuration takes over.
#[derive(Debug, Default)]
pub struct LiveSeries {
    services: HashSet<String>,
    /// (service, endpoint)
    endpoints: HashSet<(String, String)>,
    /// (service, route)
    routes: HashSet<(String, String)>,
}

impl LiveSeries {
    pub fn service(&mut self, service: &str) {
        self.services.insert(service.to_owned());
    }

    pub fn endpoint(&mut self, service: &str, endpoint: &str) {
        self.endpoints.insert((service.to_owned(), endpoint.to_owned()));
    }

    pub fn route(&mut self, service: &str, route: &str) {
        self.routes.insert((service.to_owned(), route.to_owned()));
    }

    /// Whether a series with these labels belongs to something no longer configured. Series
    /// with no service (passthrough, unrouted) always stay.
    fn is_retired(&self, labels: &HashMap<&str, &str>) -> bool {
        let Some(&service) = labels.get("service").filter(|s| !s.is_empty()) else { return false };
        let pair = |other: &str| (service.to_owned(), other.to_owned());
        !self.services.contains(service)
            || labels.get("endpoint").is_some_and(|e| !e.is_empty() && !self.endpoints.contains(&pair(e)))
            || labels.get("route").is_some_and(|r| !r.is_empty() && !self.routes.contains(&pair(r)))
    }
}

impl Metrics {
    /// Removes the series of services, endpoints and routes that `live` no longer has; without
    /// this, endpoint churn (instances coming and going in managed mode) would grow `/metrics`
    /// for ever. In-flight requests of the old configuration may still count on handles of
    /// removed series; those counts are simply not exported.
    pub fn retire(&self, live: &LiveSeries) {
        retire_from(&self.requests, live);
        retire_from(&self.request_duration, live);
        retire_from(&self.tcp_bytes, live);
        retire_from(&self.circuit_state, live);
        retire_from(&self.circuit_transitions, live);
        retire_from(&self.overflow, live);
        retire_from(&self.retries, live);
        retire_from(&self.retry_budget_exhausted, live);
        retire_from(&self.ratelimited, live);
        retire_from(&self.authz_denied, live);
        retire_from(&self.mesh.identity_mismatch, live);
    }

    pub fn breaker(&self, service: &str, endpoint: &str) -> BreakerMetrics {
        let to = |state: BreakerState| {
            self.circuit_transitions.with_label_values(&[service, endpoint, state.as_str()])
        };
        let state = self.circuit_state.with_label_values(&[service, endpoint]);
        state.set(BreakerState::Closed.as_gauge());
        BreakerMetrics {
            state,
            transitions: [to(BreakerState::Closed), to(BreakerState::Open), to(BreakerState::HalfOpen)],
        }
    }

    pub fn resilience(&self, service: &str) -> ResilienceMetrics {
        ResilienceMetrics {
            overflow: Limit::ALL.map(|limit| self.overflow.with_label_values(&[service, limit.as_str()])),
            retries: Reason::ALL.map(|r| self.retries.with_label_values(&[service, r.as_str()])),
            budget_exhausted: self.retry_budget_exhausted.with_label_values(&[service]),
        }
    }

    pub fn ratelimited(&self, service: &str, route: &str) -> IntCounter {
        self.ratelimited.with_label_values(&[service, route])
    }

    /// Calls into `service` denied by `policy` (a policy's name, or `default`).
    pub fn authz_denied(&self, service: &str, policy: &str) -> IntCounter {
        self.authz_denied.with_label_values(&[service, policy])
    }
}

fn retire_from<T: MetricVecBuilder>(family: &MetricVec<T>, live: &LiveSeries) {
    for collected in family.collect() {
        for metric in collected.get_metric() {
            let labels: HashMap<&str, &str> =
                metric.get_label().iter().map(|l| (l.name(), l.value())).collect();
            if live.is_retired(&labels) {
                let _ = family.remove(&labels);
            }
        }
    }
}

/// An endpoint's circuit breaker, as exported.
pub struct BreakerMetrics {
    state: IntGauge,
    transitions: [IntCounter; 3],
}

impl BreakerMetrics {
    pub fn record(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        self.state.set(t.to.as_gauge());
        let i = match t.to {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        self.transitions[i].inc();
    }
}

/// A service's limits and retries, as exported.
pub struct ResilienceMetrics {
    /// By [`Limit::ALL`] order.
    overflow: [IntCounter; 3],
    retries: [IntCounter; 5],
    pub budget_exhausted: IntCounter,
}

impl ResilienceMetrics {
    /// Counts a request failed fast at `limit`.
    pub fn overflowed(&self, limit: Limit) {
        let i = Limit::ALL.iter().position(|l| *l == limit).expect("every limit is listed");
        self.overflow[i].inc();
    }

    pub fn retried(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).expect("every reason is listed");
        self.retries[i].inc();
    }
}

/// Status codes whose counters are resolved once per endpoint; any other code is resolved when
/// it occurs (rare codes pay a label lookup, common ones an atomic add).
const COMMON_CODES: [u16; 20] =
    [101, 200, 201, 202, 204, 206, 301, 302, 304, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504, 499];

#[derive(Clone)]
pub struct TargetMetrics {
    pub duration: Histogram,
    pub tcp_client_to_server: IntCounter,
    pub tcp_server_to_client: IntCounter,
}

pub struct EndpointMetrics {
    family: IntCounterVec,
    labels: [String; 3],
    codes: [OnceLock<IntCounter>; COMMON_CODES.len()],
    /// The telemetry edge its requests count on when no route sent them (outbound to a
    /// service only), and by route the edges of those that routes sent.
    edge: Option<Arc<EdgeStats>>,
    routes: Box<[(RouteId, Arc<EdgeStats>)]>,
}

impl EndpointMetrics {
    /// Counting its requests on the telemetry edges of calls to `service` at an endpoint
    /// proving `identity`: one for each of `routes` (the HTTPRoutes that send it traffic), one
    /// for requests no route sent.
    pub fn with_edges(
        self,
        edges: &Edges,
        service: &str,
        identity: Option<String>,
        routes: &[(RouteId, Arc<str>)],
    ) -> Self {
        let routes = routes
            .iter()
            .map(|(id, name)| (*id, edges.outbound(service, identity.clone(), Some(name.clone()))))
            .collect();
        Self { edge: Some(edges.outbound(service, identity, None)), routes, ..self }
    }

    /// The telemetry edge of its requests that `route` sent: a scan of the few routes to one
    /// service, no lookup by name.
    pub fn edge(&self, route: RouteId) -> Option<&Arc<EdgeStats>> {
        match self.routes.iter().find(|(id, _)| *id == route) {
            Some((_, edge)) => Some(edge),
            None => self.edge.as_ref(),
        }
    }

    pub fn record(&self, status: StatusCode) {
        let resolve = || {
            let [d, s, e] = &self.labels;
            self.family.with_label_values(&[d.as_str(), s, e, status.as_str()])
        };
        match COMMON_CODES.iter().position(|c| *c == status.as_u16()) {
            Some(slot) => self.codes[slot].get_or_init(resolve).inc(),
            None => resolve().inc(),
        }
    }
}
