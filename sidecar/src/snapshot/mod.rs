//! The configuration in force, as one immutable snapshot built off the hot path from validated
//! `api` resources and swapped in atomically. Lookups a request needs (service by host name, by
//! `ADDRESS:PORT`, by local port) are precomputed maps; metric handles and endpoint connection
//! pools are resolved here too (pools carry over from the previous snapshot).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pilotfish_api::policy::{
    grpc_code, BackendPolicySpec, CircuitBreaker, FailureKind, HealthCheck, LoadBalancer,
    RateLimitPolicySpec, RetryBudget, ServiceLimits, TargetRef,
};
use pilotfish_api::sidecar::InboundSpec;
use pilotfish_api::{Protocol, Resource, ServiceSpec, SidecarSpec, UnknownFields, Warning};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::retry::budget::TpsBudget;

pub mod route;

#[cfg(test)]
mod properties;

use self::route::{RouteSource, RouteTable};
use crate::http::pool::EndpointConns;
use crate::resilience::balance::{p2c, PeakEwma};
use crate::resilience::breaker::{Breaker, BreakerConfig, EjectionBudget};
use crate::resilience::ratelimit::policy::RateLimit;
use crate::resilience::retry::Conditions;
use crate::telemetry::metrics::{
    BreakerMetrics, Direction, EndpointMetrics, LiveSeries, Metrics, ResilienceMetrics, TargetMetrics,
};

/// Command-line settings that take precedence over the file's `Sidecar` document.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub admin: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    pub app: Option<SocketAddr>,
    pub drain: Option<std::time::Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Invalid(#[from] pilotfish_api::ConfigError),
    #[error("{0}")]
    Conflict(String),
    /// Building panicked although validation passed: a bug, contained so that the previous
    /// configuration stays in force and the reload or push-follow task lives on.
    #[error("building the configuration failed unexpectedly (please report this bug): {0}")]
    Panicked(String),
}

pub struct Snapshot {
    /// Increments with every accepted configuration.
    pub version: u64,
    /// Hash of the configuration text, to tell a real change from a touched file.
    pub hash: u64,
    pub source: String,
    pub resources: Vec<Resource>,
    /// Fields of the configuration accepted with a caveat (kept without effect, or dropped).
    pub warnings: Vec<Warning>,
    /// The effective settings of this sidecar (file plus command-line overrides).
    pub sidecar: SidecarSpec,
    pub name: String,
    pub namespace: String,
    services: HashMap<Arc<str>, Arc<ServiceRt>>,
    by_host: HashMap<String, Arc<ServiceRt>>,
    by_addr: HashMap<SocketAddr, (Arc<ServiceRt>, Option<Protocol>)>,
    pub local_ports: Vec<(u16, Arc<str>)>,
    pub inbound: Option<InboundRt>,
    pub passthrough: TargetMetrics,
    /// Labels requests refused before a service was chosen (no route).
    pub unrouted: EndpointMetrics,
    /// Cancelled when this snapshot is replaced: stops its active health checks.
    pub retired: CancellationToken,
}

/// A service as the request path sees it.
pub struct ServiceRt {
    /// `name.namespace`: the metrics label and the key for per-service listeners.
    pub key: Arc<str>,
    pub spec: ServiceSpec,
    pub endpoints: Vec<Arc<EndpointRt>>,
    next: AtomicUsize,
    pub metrics: TargetMetrics,
    /// Labels requests the sidecar answers itself for this service.
    pub local: EndpointMetrics,
    /// Its HTTPRoutes, or the default route to itself.
    pub routes: RouteTable,
    pub policy: ServicePolicy,
    /// Retries stay within a fraction of requests (shared by every route to this service).
    pub budget: Arc<TpsBudget>,
    retry_budget: RetryBudget,
    breaker_config: CircuitBreaker,
    pub resilience: ResilienceMetrics,
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

/// A service's `BackendPolicy`, or the defaults, in the form the request path uses.
pub struct ServicePolicy {
    pub load_balancer: LoadBalancer,
    pub failure_on: Vec<FailureKind>,
    pub limits: ServiceLimits,
    pub conditions: Conditions,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub max_body_bytes: u64,
    pub health_check: Option<HealthCheck>,
}

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

pub struct InboundRt {
    pub spec: InboundSpec,
    pub app: Arc<EndpointRt>,
    pub metrics: TargetMetrics,
    pub local: EndpointMetrics,
    /// Connections to the app (unbounded: the app's own limits apply).
    pub connections: Arc<AtomicUsize>,
    pub pending: AtomicUsize,
}

impl ServiceRt {
    /// Round-robin over the endpoints that are healthy, not ejected and not in `tried` (opaque
    /// TCP).
    pub fn pick(&self, now: Instant, tried: &[SocketAddr]) -> Option<&Arc<EndpointRt>> {
        let eps = &self.endpoints;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..eps.len())
            .map(|k| &eps[start.wrapping_add(k) % eps.len()])
            .find(|e| e.guard.as_ref().is_none_or(|g| g.is_usable(now)) && !tried.contains(&e.addr))
    }

    /// The load balancer: an endpoint that is healthy, whose breaker lets traffic through, that
    /// is not in `refused`, and (when another qualifies) that is not `avoid` — the endpoint a
    /// failed attempt just used.
    pub fn choose(
        &self,
        now: Instant,
        avoid: Option<SocketAddr>,
        refused: &[SocketAddr],
    ) -> Option<&Arc<EndpointRt>> {
        let eps = &self.endpoints;
        let usable = |i: usize| {
            eps[i].guard.as_ref().is_none_or(|g| g.is_usable(now)) && !refused.contains(&eps[i].addr)
        };
        let preferred = |i: usize| usable(i) && Some(eps[i].addr) != avoid;
        let chosen = match self.policy.load_balancer {
            LoadBalancer::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let scan = |ok: &dyn Fn(usize) -> bool| {
                    (0..eps.len()).map(|k| (start + k) % eps.len()).find(|i| ok(*i))
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
}

impl EndpointGuard {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn is_usable(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.breaker.is_available(now)
    }
}

impl Snapshot {
    /// Validates `text` and builds the snapshot it describes. Never panics: validation bounds
    /// every value to what the runtime accepts, and a panic that happens anyway is caught and
    /// returned as [`BuildError::Panicked`], a rejected configuration like any other.
    pub fn build(
        source: &str,
        text: &str,
        overrides: &Overrides,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        Self::build_with(source, text, overrides, previous, metrics, UnknownFields::Refuse)
    }

    /// [`Snapshot::build`], choosing what a field this version does not know does: refused in
    /// what users write, tolerated (with a warning) in what a newer control plane pushes.
    pub fn build_with(
        source: &str,
        text: &str,
        overrides: &Overrides,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        unknown: UnknownFields,
    ) -> Result<Self, BuildError> {
        // Unwind safety: a panic leaves nothing half-changed that anyone reads afterwards — the
        // snapshot under construction is dropped, `previous` is only read, and the metric
        // handles registered on the way are valid on their own.
        let build =
            AssertUnwindSafe(|| Self::build_unguarded(source, text, overrides, previous, metrics, unknown));
        std::panic::catch_unwind(build).unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(BuildError::Panicked(reason))
        })
    }

    fn build_unguarded(
        source: &str,
        text: &str,
        overrides: &Overrides,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        unknown: UnknownFields,
    ) -> Result<Self, BuildError> {
        let pilotfish_api::Parsed { resources, warnings } = pilotfish_api::parse_with(source, text, unknown)?;
        // Logged when they first appear, not again with every reload or push that keeps them.
        let same =
            |a: &Warning, b: &Warning| (&a.object, &a.field, &a.message) == (&b.object, &b.field, &b.message);
        for w in &warnings {
            if !previous.is_some_and(|p| p.warnings.iter().any(|old| same(old, w))) {
                tracing::warn!("{w}");
            }
        }
        let (name, namespace, mut sidecar) = resources
            .iter()
            .find_map(|r| match r {
                Resource::Sidecar(s) => {
                    Some((s.metadata.name.clone(), s.metadata.namespace.clone(), s.spec.clone()))
                }
                _ => None,
            })
            .unwrap_or_else(|| ("sidecar".into(), "default".into(), SidecarSpec::default()));
        apply_overrides(&mut sidecar, overrides)?;

        let mut pools: HashMap<SocketAddr, Arc<EndpointConns>> = HashMap::new();
        if let Some(prev) = previous {
            for svc in prev.services.values() {
                for ep in &svc.endpoints {
                    pools.insert(ep.addr, ep.conns.clone());
                }
            }
            if let Some(inbound) = &prev.inbound {
                pools.insert(inbound.app.addr, inbound.app.conns.clone());
            }
        }
        let mut endpoint =
            |direction: Direction, service: &str, addr: SocketAddr, guard: Option<&GuardFor>| {
                let label = addr.to_string();
                Arc::new(EndpointRt {
                    addr,
                    conns: pools.entry(addr).or_insert_with(|| EndpointConns::new(addr)).clone(),
                    metrics: metrics.endpoint(direction, service, &label),
                    guard: guard.map(|g| g(&label, addr)),
                    label,
                })
            };
        let attached = Attachments::collect(&resources);

        let mut services = HashMap::new();
        let mut by_host = HashMap::new();
        let mut by_addr = HashMap::new();
        let mut local_ports = Vec::new();
        for r in &resources {
            let Resource::Service(s) = r else { continue };
            let (svc_name, svc_ns) = (&s.metadata.name, &s.metadata.namespace);
            let key: Arc<str> = format!("{svc_name}.{svc_ns}").into();
            let backend_policy = attached.backend.get(&*key).copied();
            let policy = ServicePolicy::new(backend_policy);
            let cb = backend_policy.map(|p| p.circuit_breaker.clone()).unwrap_or_default();
            let budget = EjectionBudget::new(s.spec.endpoints.len(), cb.max_ejection_percent);
            // Endpoint state (breaker, load, health) survives a reload that leaves the breaker
            // settings and the number of endpoints alone; otherwise a reload would readmit
            // ejected endpoints.
            let prev = previous.and_then(|p| p.service(&key));
            let kept =
                prev.filter(|old| old.breaker_config == cb && old.endpoints.len() == s.spec.endpoints.len());
            let guard = |label: &str, addr: SocketAddr| {
                let old = kept.and_then(|old| old.endpoints.iter().find(|e| e.addr == addr));
                old.and_then(|e| e.guard.clone()).unwrap_or_else(|| {
                    Arc::new(EndpointGuard {
                        breaker: Breaker::new(
                            BreakerConfig {
                                consecutive_failures: cb.consecutive_failures,
                                base_ejection: cb.base_ejection_time.get(),
                                max_ejection: cb.max_ejection_time.get(),
                            },
                            budget.clone(),
                        ),
                        load: PeakEwma::new(Duration::from_millis(30), Duration::from_secs(10)),
                        healthy: AtomicBool::new(true),
                        breaker_metrics: metrics.breaker(&key, label),
                    })
                })
            };
            let carried = |route: &str, spec: &RateLimitPolicySpec| {
                prev.and_then(|old| old.routes.limiters().find(|(r, l)| &***r == route && l.spec == *spec))
                    .map(|(_, l)| l.clone())
            };
            let sources: Vec<RouteSource<'_>> = attached
                .routes
                .get(&*key)
                .map(|routes| {
                    routes
                        .iter()
                        .map(|(route_name, spec)| RouteSource {
                            name: route_name.clone(),
                            spec,
                            rate_limit: attached.route_limits.get(&**route_name).map(|p| {
                                carried(route_name, p).unwrap_or_else(|| {
                                    Arc::new(RateLimit::new(p, metrics.ratelimited(&key, route_name)))
                                })
                            }),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let routes = if sources.is_empty() {
                RouteTable::default_for(key.clone())
            } else {
                RouteTable::compile(&key, svc_ns, &sources)
            };
            let retry_budget = backend_policy.map(|p| p.retry_budget.clone()).unwrap_or_default();
            let svc = Arc::new(ServiceRt {
                endpoints: s
                    .spec
                    .endpoints
                    .iter()
                    .map(|e| endpoint(Direction::Outbound, &key, e.address, Some(&guard)))
                    .collect(),
                next: AtomicUsize::new(0),
                metrics: metrics.target(Direction::Outbound, &key),
                local: metrics.endpoint(Direction::Outbound, &key, ""),
                routes,
                policy,
                budget: prev
                    .filter(|old| old.retry_budget == retry_budget)
                    .map_or_else(|| Arc::new(tps_budget(&retry_budget)), |old| old.budget.clone()),
                resilience: metrics.resilience(&key),
                rate_limit: attached.service_limits.get(&*key).map(|p| {
                    prev.and_then(|old| old.rate_limit.clone().filter(|l| l.spec == **p))
                        .unwrap_or_else(|| Arc::new(RateLimit::new(p, metrics.ratelimited(&key, ""))))
                }),
                // Counters of requests and connections in flight span snapshots, like the
                // requests and connections themselves.
                in_flight: prev.map_or_else(Default::default, |old| old.in_flight.clone()),
                pending: prev.map_or_else(Default::default, |old| old.pending.clone()),
                connections: prev.map_or_else(Default::default, |old| old.connections.clone()),
                breaker_config: cb.clone(),
                retry_budget,
                spec: s.spec.clone(),
                key: key.clone(),
            });
            // Host names as Kubernetes DNS would resolve them; the short name only within the
            // sidecar's own namespace.
            for host in [
                format!("{svc_name}.{svc_ns}"),
                format!("{svc_name}.{svc_ns}.svc"),
                format!("{svc_name}.{svc_ns}.svc.cluster.local"),
            ] {
                by_host.insert(host, svc.clone());
            }
            if *svc_ns == namespace {
                by_host.insert(svc_name.clone(), svc.clone());
            }
            for ip in &s.spec.addresses {
                for p in &s.spec.ports {
                    by_addr.insert(SocketAddr::new(*ip, p.port), (svc.clone(), p.protocol));
                }
            }
            if let Some(port) = s.spec.local_port {
                local_ports.push((port, key.clone()));
            }
            services.insert(key, svc);
        }

        let inbound = sidecar.inbound.clone().map(|spec| InboundRt {
            app: endpoint(Direction::Inbound, &name, spec.app, None),
            metrics: metrics.target(Direction::Inbound, &name),
            local: metrics.endpoint(Direction::Inbound, &name, ""),
            connections: Arc::new(AtomicUsize::new(0)),
            pending: AtomicUsize::new(0),
            spec,
        });

        Ok(Self {
            version: previous.map_or(1, |p| p.version + 1),
            hash: hash_text(text),
            source: source.to_owned(),
            resources,
            warnings,
            sidecar,
            passthrough: metrics.target(Direction::Outbound, ""),
            unrouted: metrics.endpoint(Direction::Outbound, "", ""),
            retired: CancellationToken::new(),
            name,
            namespace,
            services,
            by_host,
            by_addr,
            local_ports,
            inbound,
        })
    }

    pub fn service(&self, key: &str) -> Option<&Arc<ServiceRt>> {
        self.services.get(key)
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceRt>> {
        self.services.values()
    }

    /// The service an HTTP authority (`users`, `users.default:80`, ...) names.
    pub fn service_by_authority(&self, authority: &str) -> Option<&Arc<ServiceRt>> {
        let host = strip_port(authority).trim_end_matches('.');
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&host.to_ascii_lowercase())
        } else {
            self.by_host.get(host)
        }
    }

    /// The service dialled as `ADDRESS:PORT` (transparent mode), with the port's protocol.
    pub fn service_by_addr(&self, addr: SocketAddr) -> Option<&(Arc<ServiceRt>, Option<Protocol>)> {
        self.by_addr.get(&addr)
    }

    /// The metric series this configuration uses; the rest are retired when it takes over
    /// ([`Metrics::retire`]).
    pub fn live_series(&self) -> LiveSeries {
        let mut live = LiveSeries::default();
        for svc in self.services.values() {
            live.service(&svc.key);
            for endpoint in &svc.endpoints {
                live.endpoint(&svc.key, &endpoint.label);
            }
            for (route, _) in svc.routes.limiters() {
                live.route(&svc.key, route);
            }
        }
        if let Some(inbound) = &self.inbound {
            live.service(&self.name);
            live.endpoint(&self.name, &inbound.app.label);
        }
        live
    }

    /// The configuration as `GET /config` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "hash": format!("{:016x}", self.hash),
            "source": self.source,
            "sidecar": self.sidecar,
            "resources": self.resources.iter().map(Resource::to_json).collect::<Vec<_>>(),
        })
    }

    /// Keeps the listener addresses and connection limit of the running snapshot (listeners
    /// are bound once), so `/config` shows what is in force. Returns whether the file asked for
    /// something different.
    pub fn keep_listeners_of(&mut self, running: &Snapshot) -> bool {
        let (new, old) = (&mut self.sidecar, &running.sidecar);
        let inbound_listen = |s: &SidecarSpec| s.inbound.as_ref().map(|i| i.listen);
        let differ = new.admin != old.admin
            || new.outbound.listen != old.outbound.listen
            || (new.inbound.is_some() && inbound_listen(new) != inbound_listen(old))
            || new.limits.max_connections != old.limits.max_connections;
        new.admin = old.admin;
        new.outbound.listen = old.outbound.listen;
        new.limits.max_connections = old.limits.max_connections;
        if let (Some(new), Some(old)) = (&mut new.inbound, &old.inbound) {
            new.listen = old.listen;
        }
        differ
    }
}

/// Makes (or carries over) the guard of an outbound endpoint, given its label and address.
type GuardFor<'a> = dyn Fn(&str, SocketAddr) -> Arc<EndpointGuard> + 'a;

/// Routes and policies by what they attach to.
struct Attachments<'a> {
    /// Service key → its HTTPRoutes (`namespace/name`, spec), in name order.
    routes: HashMap<String, Vec<(Arc<str>, &'a pilotfish_api::route::HttpRouteSpec)>>,
    backend: HashMap<String, &'a BackendPolicySpec>,
    service_limits: HashMap<String, &'a RateLimitPolicySpec>,
    /// Route `namespace/name` → its rate limit.
    route_limits: HashMap<String, &'a RateLimitPolicySpec>,
}

impl<'a> Attachments<'a> {
    fn collect(resources: &'a [Resource]) -> Self {
        let mut a = Attachments {
            routes: HashMap::new(),
            backend: HashMap::new(),
            service_limits: HashMap::new(),
            route_limits: HashMap::new(),
        };
        let target =
            |t: &TargetRef, ns: &str| (t.name.clone(), t.namespace.clone().unwrap_or_else(|| ns.to_owned()));
        for r in resources {
            let ns = &r.metadata().namespace;
            match r {
                Resource::HttpRoute(route) => {
                    let name: Arc<str> = format!("{ns}/{}", route.metadata.name).into();
                    for parent in &route.spec.parent_refs {
                        let key = format!("{}.{}", parent.name, parent.namespace.as_deref().unwrap_or(ns));
                        a.routes.entry(key).or_default().push((name.clone(), &route.spec));
                    }
                }
                Resource::BackendPolicy(p) => {
                    let (name, tns) = target(&p.spec.target_ref, ns);
                    a.backend.insert(format!("{name}.{tns}"), &p.spec);
                }
                Resource::RateLimitPolicy(p) => {
                    let (name, tns) = target(&p.spec.target_ref, ns);
                    if p.spec.target_ref.kind == "HTTPRoute" {
                        a.route_limits.insert(format!("{tns}/{name}"), &p.spec);
                    } else {
                        a.service_limits.insert(format!("{name}.{tns}"), &p.spec);
                    }
                }
                Resource::Sidecar(_) | Resource::Service(_) => {}
            }
        }
        for routes in a.routes.values_mut() {
            routes.sort_by(|x, y| x.0.cmp(&y.0));
        }
        a
    }
}

impl ServicePolicy {
    fn new(policy: Option<&BackendPolicySpec>) -> Self {
        let p = policy.cloned().unwrap_or_else(|| BackendPolicySpec {
            target_ref: TargetRef {
                group: None,
                kind: "Service".into(),
                name: String::new(),
                namespace: None,
            },
            load_balancer: LoadBalancer::default(),
            circuit_breaker: Default::default(),
            limits: Default::default(),
            retry_budget: Default::default(),
            retry: Default::default(),
            health_check: None,
        });
        Self {
            load_balancer: p.load_balancer,
            failure_on: p.circuit_breaker.failure_on,
            limits: p.limits,
            conditions: Conditions {
                retry_on: p.retry.retry_on,
                grpc_codes: p.retry.grpc_codes.iter().filter_map(|c| grpc_code(c)).collect(),
            },
            base_backoff: p.retry.base_backoff.get(),
            max_backoff: p.retry.max_backoff.get(),
            max_body_bytes: u64::from(p.retry.max_body_bytes),
            health_check: p.health_check,
        }
    }
}

/// tower's budget asserts on its arguments (a `minPerSecond` of 2^31 panics); validation keeps
/// them in range, and the clamps keep a build from panicking should a value slip past it.
fn tps_budget(b: &RetryBudget) -> TpsBudget {
    let ratio = if b.ratio.is_finite() { b.ratio.clamp(0.0, 1000.0) as f32 } else { 0.0 };
    TpsBudget::new(Duration::from_secs(10), b.min_per_second.min(i32::MAX as u32 - 1), ratio)
}

fn apply_overrides(sidecar: &mut SidecarSpec, o: &Overrides) -> Result<(), BuildError> {
    if let Some(admin) = o.admin {
        sidecar.admin = admin;
    }
    if let Some(outbound) = o.outbound {
        sidecar.outbound.listen = outbound;
    }
    match (&mut sidecar.inbound, o.app) {
        (Some(inbound), Some(app)) => inbound.app = app,
        (None, Some(app)) => {
            sidecar.inbound = Some(InboundSpec {
                listen: SocketAddr::from(([0, 0, 0, 0], 15006)),
                app,
                opaque_ports: Vec::new(),
            })
        }
        _ => {}
    }
    if let Some(listen) = o.inbound {
        match &mut sidecar.inbound {
            Some(inbound) => inbound.listen = listen,
            None => {
                return Err(BuildError::Conflict(
                    "--inbound needs an app to forward to: pass --app ADDR or set spec.inbound.app in the Sidecar document".into(),
                ))
            }
        }
    }
    if let Some(drain) = o.drain {
        sidecar.timeouts.drain = pilotfish_api::Duration::from_millis(drain.as_millis() as u64);
    }
    sidecar.validate().map_err(|e| {
        BuildError::Conflict(format!("with the command-line overrides applied, {}: {}", e.field, e.reason))
    })
}

fn strip_port(authority: &str) -> &str {
    // "[::1]:80" → "[::1]"; "users:80" → "users"; "users" → "users".
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

pub(crate) fn hash_text(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {name: web, namespace: shop}
spec: {outbound: {listen: 127.0.0.1:0}}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: users, namespace: shop}
spec:
  ports: [{port: 80, protocol: http}]
  addresses: [10.96.0.10]
  endpoints: [{address: 127.0.0.1:9001}, {address: 127.0.0.1:9002}]
  localPort: 18081
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: billing, namespace: other}
spec: {endpoints: [{address: 127.0.0.1:9003}]}
"#;

    fn build() -> Snapshot {
        Snapshot::build("test.yaml", CONFIG, &Overrides::default(), None, &Metrics::new()).unwrap()
    }

    #[test]
    fn resolves_service_host_names_like_cluster_dns() {
        let snap = build();
        for host in [
            "users",
            "users:80",
            "USERS.shop",
            "users.shop.svc",
            "users.shop.svc.cluster.local",
            "users.shop.svc.cluster.local.:80",
        ] {
            let svc = snap.service_by_authority(host).unwrap_or_else(|| panic!("{host}"));
            assert_eq!(&*svc.key, "users.shop");
        }
        // Short names only resolve in the sidecar's own namespace.
        assert!(snap.service_by_authority("billing").is_none());
        assert!(snap.service_by_authority("billing.other").is_some());
        assert!(snap.service_by_authority("nobody").is_none());
    }

    #[test]
    fn maps_virtual_addresses_and_local_ports() {
        let snap = build();
        let (svc, proto) = snap.service_by_addr("10.96.0.10:80".parse().unwrap()).unwrap();
        assert_eq!((&*svc.key, *proto), ("users.shop", Some(Protocol::Http)));
        assert!(snap.service_by_addr("10.96.0.10:81".parse().unwrap()).is_none());
        assert_eq!(snap.local_ports, vec![(18081, Arc::from("users.shop"))]);
    }

    #[test]
    fn round_robins_endpoints() {
        let snap = build();
        let svc = snap.service("users.shop").unwrap();
        let now = Instant::now();
        let picks: Vec<_> = (0..4).map(|_| svc.pick(now, &[]).unwrap().addr.port()).collect();
        assert_eq!(picks, [9001, 9002, 9001, 9002]);
        let tried = [svc.endpoints[0].addr];
        assert_eq!(svc.pick(now, &tried).unwrap().addr.port(), 9002);
        // Unhealthy endpoints take no connections.
        svc.endpoints[1].guard.as_ref().unwrap().healthy.store(false, Ordering::Relaxed);
        assert!(svc.pick(now, &tried).is_none());
        assert!((0..4).all(|_| svc.pick(now, &[]).unwrap().addr.port() == 9001));
    }

    #[test]
    fn reload_keeps_endpoint_pools_and_bumps_version() {
        let metrics = Metrics::new();
        let first = Snapshot::build("t", CONFIG, &Overrides::default(), None, &metrics).unwrap();
        let second = Snapshot::build("t", CONFIG, &Overrides::default(), Some(&first), &metrics).unwrap();
        assert_eq!(second.version, 2);
        let a = &first.service("users.shop").unwrap().endpoints[0].conns;
        let b = &second.service("users.shop").unwrap().endpoints[0].conns;
        assert!(Arc::ptr_eq(a, b));
    }

    #[test]
    fn endpoint_churn_does_not_grow_the_metrics() {
        let metrics = Metrics::new();
        let config = |port: u32| {
            format!(
                "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: users}}\nspec: {{endpoints: [{{address: 127.0.0.1:{port}}}]}}\n"
            )
        };
        let series =
            |text: &[u8]| String::from_utf8_lossy(text).lines().filter(|l| !l.starts_with('#')).count();
        let mut snap = Snapshot::build("t", &config(1000), &Overrides::default(), None, &metrics).unwrap();
        let mut first = None;
        for cycle in 0..3000u32 {
            let next =
                Snapshot::build("t", &config(1001 + cycle), &Overrides::default(), Some(&snap), &metrics)
                    .unwrap();
            let endpoint = &next.service("users.default").unwrap().endpoints[0];
            endpoint.metrics.record(http::StatusCode::OK);
            endpoint.metrics.record(http::StatusCode::from_u16(418).unwrap());
            metrics.retire(&next.live_series());
            snap = next;
            first.get_or_insert_with(|| series(&metrics.encode()));
        }
        let text = metrics.encode();
        assert_eq!(series(&text), first.unwrap(), "3,000 endpoint changes later, the same number of series");
        assert!(
            !String::from_utf8_lossy(&text).contains("127.0.0.1:1001\""),
            "a departed endpoint's series are gone"
        );
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            app: Some("127.0.0.1:8080".parse().unwrap()),
            inbound: Some("127.0.0.1:7000".parse().unwrap()),
            ..Overrides::default()
        };
        let snap = Snapshot::build("t", CONFIG, &o, None, &Metrics::new()).unwrap();
        let inbound = snap.sidecar.inbound.as_ref().unwrap();
        assert_eq!((inbound.listen.port(), inbound.app.port()), (7000, 8080));

        let o = Overrides { inbound: o.inbound, ..Overrides::default() };
        assert!(matches!(
            Snapshot::build("t", CONFIG, &o, None, &Metrics::new()),
            Err(BuildError::Conflict(_))
        ));
    }
}
