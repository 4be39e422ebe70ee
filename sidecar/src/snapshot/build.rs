//! Building a [`Snapshot`] from configuration text: parse and validate (in `api`), apply the
//! command-line overrides, attach routes and policies to their services, and make the runtime
//! state — carrying over from the previous snapshot what must survive a reload: connection
//! pools, endpoint breakers and load, retry budgets, rate limiters, and the counters behind
//! service limits.
//!
//! A service's runtime state (route table, endpoints, breakers, budgets, metric series) is built
//! the first time a request needs it ([`Builder::service`]): a sidecar holds state only for what
//! its app calls, so a mesh of 10,000 services does not cost every sidecar 10,000 services. The
//! snapshot builds eagerly what has state to keep — the services the previous snapshot had
//! built — and what must run without requests: services with active health checks.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pilotfish_api::policy::{BackendPolicySpec, CircuitBreaker, RateLimitPolicySpec, RetryBudget, TargetRef};
use pilotfish_api::{Metadata, Resource, ServiceSpec, SidecarSpec, SpiffeId, UnknownFields, Warning};
use tokio_util::sync::CancellationToken;
use tower::retry::budget::TpsBudget;

use super::overrides::{OverrideConflict, Overrides};
use super::policy::ServicePolicy;
use super::route::{RouteSource, RouteTable};
use super::{ServiceSlot, Snapshot};
use crate::authz::{Authorizer, LocalAuthz};
use crate::http::pool::EndpointConns;
use crate::resilience::balance::PeakEwma;
use crate::resilience::breaker::{Breaker, BreakerConfig, EjectionBudget};
use crate::resilience::ratelimit::policy::RateLimit;
use crate::telemetry::edges::RouteId;
use crate::telemetry::metrics::{Direction, Metrics};
use crate::upstream::app::{InboundMtls, InboundRt};
use crate::upstream::endpoint::{EndpointGuard, EndpointRt};
use crate::upstream::service::ServiceRt;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Invalid(#[from] pilotfish_api::ConfigError),
    #[error(transparent)]
    Conflict(#[from] OverrideConflict),
    /// Building panicked although validation passed: a bug, contained so that the previous
    /// configuration stays in force and the reload or push-follow task lives on.
    #[error("building the configuration failed unexpectedly (please report this bug): {0}")]
    Panicked(String),
}

impl Snapshot {
    /// Validates `text` and builds the snapshot it describes. Never panics: validation bounds
    /// every value to what the runtime accepts, and a panic that happens anyway is caught and
    /// returned as [`BuildError::Panicked`], a rejected configuration like any other. (A
    /// service first called later is built then, from the same validated values; a panic there
    /// would fail that request, not the process.)
    pub fn build(
        source: &str,
        text: &str,
        overrides: &Overrides,
        previous: Option<&Snapshot>,
        metrics: &Arc<Metrics>,
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
        metrics: &Arc<Metrics>,
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
        metrics: &Arc<Metrics>,
        unknown: UnknownFields,
    ) -> Result<Self, BuildError> {
        let pilotfish_api::Parsed { mut resources, warnings } =
            pilotfish_api::parse_with(source, text, unknown)?;
        // Kept for the snapshot's life (`/config`, services built on first use), so without the
        // spare room parsing grew it by: up to half of it, at a few hundred bytes a resource.
        resources.shrink_to_fit();
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
        overrides.apply(&mut sidecar)?;

        let mut pools = Pools::carried_from(previous);
        let mut attached = Attachments::collect(&resources);
        let mut slots = Vec::new();
        let mut services = HashMap::new();
        let mut by_addr = HashMap::new();
        let mut local_ports = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            let Resource::Service(s) = r else { continue };
            let (svc_name, svc_ns) = (&s.metadata.name, &s.metadata.namespace);
            let key: Arc<str> = format!("{svc_name}.{svc_ns}").into();
            let slot = slots.len() as u32;
            for ip in &s.spec.addresses {
                for p in &s.spec.ports {
                    by_addr.insert(SocketAddr::new(*ip, p.port), (slot, p.protocol));
                }
            }
            if let Some(port) = s.spec.local_port {
                local_ports.push((port, key.clone()));
            }
            slots.push(ServiceSlot {
                service: i as u32,
                routes: attached
                    .routes
                    .remove(&*key)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect(),
                backend: attached.backend.get(&*key).copied(),
                rate_limit: attached.service_limits.get(&*key).copied(),
                built: OnceLock::new(),
                key: key.clone(),
            });
            services.insert(key, slot);
        }
        // The sidecar's own Service may set its inbound mTLS (managed mode has no other way).
        let own_service = resources.iter().find_map(|r| match r {
            Resource::Service(s) if s.metadata.name == name && s.metadata.namespace == namespace => {
                Some(&s.spec.mtls)
            }
            _ => None,
        });
        // A `{peer: true}` limit on the sidecar's own Service is also enforced here, on the way
        // in, where the caller's identity is known (callers' sidecars only know their app).
        let own_key = format!("{name}.{namespace}");
        let inbound_limit = attached
            .service_limits
            .get(&own_key)
            .map(|&i| rate_limit_spec(&resources, i))
            .filter(|p| RateLimit::by_peer(p))
            .map(|p| {
                previous
                    .and_then(|old| old.inbound.as_ref()?.rate_limit.clone().filter(|l| l.spec == *p))
                    .unwrap_or_else(|| Arc::new(RateLimit::new(p, metrics.ratelimited(&own_key, "inbound"))))
            });
        let inbound = sidecar.inbound.clone().map(|spec| InboundRt {
            rate_limit: inbound_limit,
            app: pools.endpoint(metrics, EndpointOf::App(&name), (spec.app, None), |_| None),
            mtls: InboundMtls::new(&spec.mtls, own_service, overrides.inbound_mtls),
            metrics: metrics.target(Direction::Inbound, &name),
            local: metrics.endpoint(Direction::Inbound, &name, ""),
            connections: Arc::new(AtomicUsize::new(0)),
            pending: AtomicUsize::new(0),
            spec,
        });

        let authorizer = Authorizer::compile(&resources, sidecar.authorization.default);
        let authz = LocalAuthz::new(authorizer, &name, &namespace, metrics);
        let snap = Self {
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
            slots: slots.into_boxed_slice(),
            services,
            by_addr,
            local_ports,
            inbound,
            authz,
            builder: Builder {
                metrics: metrics.clone(),
                route_limits: attached.route_limits,
                routes_to: attached.routes_to,
                pools: Mutex::new(pools),
            },
        };
        if let Some(previous) = previous {
            snap.catch_up(previous);
        }
        for slot in snap.slots.iter().filter(|s| s.built.get().is_none()) {
            if slot.backend.is_some_and(|i| backend_spec(&snap.resources, i).health_check.is_some()) {
                let _ = slot.built.set(snap.builder.service(&snap.resources, slot, previous));
            }
        }
        // Pools of services the previous snapshot had and this one did not build need not
        // outlive the build: those services are gone, or will start cold when first called.
        let mut pools = Pools::default();
        pools.add(snap.built_services().flat_map(|svc| svc.endpoints.iter()));
        pools.add(snap.inbound.iter().map(|i| &i.app));
        *snap.builder.pools.lock().unwrap_or_else(|e| e.into_inner()) = pools;
        Ok(snap)
    }
}

/// What building a service on first use needs, kept in the snapshot.
pub(super) struct Builder {
    metrics: Arc<Metrics>,
    /// Route `namespace/name` → its `RateLimitPolicy` (a position in the resources).
    route_limits: HashMap<String, u32>,
    /// Service key → the HTTPRoutes that send it traffic (positions in the resources).
    routes_to: HashMap<String, Vec<u32>>,
    /// Endpoints of different services at the same address share one pool.
    pools: Mutex<Pools>,
}

impl Builder {
    /// One service's runtime state, with what `previous` had for it carried over.
    pub(super) fn service(
        &self,
        resources: &[Resource],
        slot: &ServiceSlot,
        previous: Option<&Snapshot>,
    ) -> Arc<ServiceRt> {
        // A panic while another thread held the lock left the map whole: inserts are atomic.
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let routes_to = self.routes_to.get(&*slot.key).map_or(&[][..], Vec::as_slice);
        let attached = Attached { route_limits: &self.route_limits, routes_to };
        service(resources, slot, attached, previous, &self.metrics, &mut pools)
    }
}

fn service_spec(resources: &[Resource], i: u32) -> (&Metadata, &ServiceSpec) {
    match &resources[i as usize] {
        Resource::Service(s) => (&s.metadata, &s.spec),
        _ => unreachable!("a service slot points at a Service"),
    }
}

fn backend_spec(resources: &[Resource], i: u32) -> &BackendPolicySpec {
    match &resources[i as usize] {
        Resource::BackendPolicy(p) => &p.spec,
        _ => unreachable!("a backend attachment points at a BackendPolicy"),
    }
}

fn rate_limit_spec(resources: &[Resource], i: u32) -> &RateLimitPolicySpec {
    match &resources[i as usize] {
        Resource::RateLimitPolicy(p) => &p.spec,
        _ => unreachable!("a rate limit attachment points at a RateLimitPolicy"),
    }
}

/// What is attached to a service besides what its slot holds.
struct Attached<'a> {
    /// Route `namespace/name` → its `RateLimitPolicy`.
    route_limits: &'a HashMap<String, u32>,
    /// The HTTPRoutes that send the service traffic (positions in the resources).
    routes_to: &'a [u32],
}

/// The [`RouteId`] and `namespace/name` of the HTTPRoute at `position` in the resources.
fn route_name(resources: &[Resource], position: u32) -> (RouteId, Arc<str>) {
    let Resource::HttpRoute(route) = &resources[position as usize] else {
        unreachable!("a route attachment points at an HTTPRoute")
    };
    (position + 1, format!("{}/{}", route.metadata.namespace, route.metadata.name).into())
}

/// One service's runtime state, with what the previous snapshot had for it carried over.
fn service(
    resources: &[Resource],
    slot: &ServiceSlot,
    Attached { route_limits, routes_to }: Attached<'_>,
    previous: Option<&Snapshot>,
    metrics: &Metrics,
    pools: &mut Pools,
) -> Arc<ServiceRt> {
    let (meta, spec) = service_spec(resources, slot.service);
    let key = slot.key.clone();
    let backend_policy = slot.backend.map(|i| backend_spec(resources, i));
    let cb = backend_policy.map(|p| p.circuit_breaker.clone()).unwrap_or_default();
    let budget = EjectionBudget::new(spec.endpoints.len(), cb.max_ejection_percent);
    // Endpoint state (breaker, load, health) survives a reload that leaves the breaker
    // settings and the number of endpoints alone; otherwise a reload would readmit ejected
    // endpoints.
    let prev = previous.and_then(|p| p.built(&key));
    let kept = prev.filter(|old| old.breaker_config == cb && old.endpoints.len() == spec.endpoints.len());
    let guard = |label: &str, addr: SocketAddr| {
        let old = kept.and_then(|old| old.endpoint(addr)).and_then(|e| e.guard.clone());
        Some(old.unwrap_or_else(|| Arc::new(new_guard(&cb, &budget, metrics, &key, label))))
    };
    // Each endpoint's telemetry edges, one per route that sends it traffic, resolved here so
    // that a request finds its own by the route's number.
    let routes_to: Vec<(RouteId, Arc<str>)> = routes_to.iter().map(|&p| route_name(resources, p)).collect();
    let endpoint_list = spec
        .endpoints
        .iter()
        .map(|e| {
            // Validation parsed every identity already.
            let identity = e.identity.as_deref().and_then(|id| id.parse().ok()).map(Arc::new);
            let of = EndpointOf::Service { key: &key, routes: &routes_to };
            pools.endpoint(metrics, of, (e.address, identity), |label| guard(label, e.address))
        })
        .collect();
    let carried = |route: &str, spec: &RateLimitPolicySpec| {
        prev.and_then(|old| old.routes.limiters().find(|(r, l)| &***r == route && l.spec == *spec))
            .map(|(_, l)| l.clone())
    };
    let sources: Vec<RouteSource<'_>> = slot
        .routes
        .iter()
        .map(|&i| {
            let Resource::HttpRoute(route) = &resources[i as usize] else {
                unreachable!("a route attachment points at an HTTPRoute")
            };
            let (id, route_name) = route_name(resources, i);
            RouteSource {
                id,
                rate_limit: route_limits.get(&*route_name).map(|&p| {
                    let p = rate_limit_spec(resources, p);
                    carried(&route_name, p).unwrap_or_else(|| {
                        Arc::new(RateLimit::new(p, metrics.ratelimited(&key, &route_name)))
                    })
                }),
                name: route_name,
                spec: &route.spec,
            }
        })
        .collect();
    let routes = if sources.is_empty() {
        RouteTable::default_for(key.clone())
    } else {
        RouteTable::compile(&key, &meta.namespace, &sources)
    };
    let retry_budget = backend_policy.map(|p| p.retry_budget.clone()).unwrap_or_default();
    Arc::new(ServiceRt {
        endpoints: endpoint_list,
        next: AtomicUsize::new(0),
        metrics: metrics.target(Direction::Outbound, &key),
        local: metrics.endpoint(Direction::Outbound, &key, "").with_edges(
            &metrics.edges,
            &key,
            None,
            &routes_to,
        ),
        routes,
        policy: ServicePolicy::new(backend_policy),
        budget: prev
            .filter(|old| old.retry_budget == retry_budget)
            .map_or_else(|| Arc::new(tps_budget(&retry_budget)), |old| old.budget.clone()),
        resilience: metrics.resilience(&key),
        identity_mismatch: metrics.mesh.identity_mismatch(&key),
        rate_limit: slot.rate_limit.map(|i| rate_limit_spec(resources, i)).map(|p| {
            prev.and_then(|old| old.rate_limit.clone().filter(|l| l.spec == *p))
                .unwrap_or_else(|| Arc::new(RateLimit::new(p, metrics.ratelimited(&key, ""))))
        }),
        // Counters of requests and connections in flight span snapshots, like the requests
        // and connections themselves.
        in_flight: prev.map_or_else(Default::default, |old| old.in_flight.clone()),
        pending: prev.map_or_else(Default::default, |old| old.pending.clone()),
        connections: prev.map_or_else(Default::default, |old| old.connections.clone()),
        breaker_config: cb.clone(),
        retry_budget,
        spec: spec.clone(),
        key,
    })
}

fn new_guard(
    cb: &CircuitBreaker,
    budget: &Arc<EjectionBudget>,
    metrics: &Metrics,
    service: &str,
    label: &str,
) -> EndpointGuard {
    let config = BreakerConfig {
        consecutive_failures: cb.consecutive_failures,
        base_ejection: cb.base_ejection_time.get(),
        max_ejection: cb.max_ejection_time.get(),
    };
    EndpointGuard {
        breaker: Breaker::new(config, budget.clone()),
        load: PeakEwma::new(Duration::from_millis(30), Duration::from_secs(10)),
        healthy: AtomicBool::new(true),
        breaker_metrics: metrics.breaker(service, label),
    }
}

/// Whose endpoint [`Pools::endpoint`] makes.
enum EndpointOf<'a> {
    /// An outbound service's (key `name.namespace`), which `routes` send traffic to.
    Service { key: &'a str, routes: &'a [(RouteId, Arc<str>)] },
    /// The local app's (the sidecar's own service `name`).
    App(&'a str),
}

/// Connection pools by endpoint: the previous snapshot's, so that a reload keeps warm
/// connections, and those made since.
#[derive(Default)]
struct Pools {
    /// By address and the identity the endpoint must prove: a changed identity gets a new pool.
    by_endpoint: HashMap<(SocketAddr, Option<Arc<SpiffeId>>), Arc<EndpointConns>>,
}

impl Pools {
    fn carried_from(previous: Option<&Snapshot>) -> Self {
        let mut pools = Pools::default();
        if let Some(prev) = previous {
            pools.add(prev.built_services().flat_map(|svc| svc.endpoints.iter()));
            pools.add(prev.inbound.iter().map(|i| &i.app));
        }
        pools
    }

    fn add<'e>(&mut self, endpoints: impl Iterator<Item = &'e Arc<EndpointRt>>) {
        for ep in endpoints {
            self.by_endpoint.insert((ep.addr, ep.conns.identity().cloned()), ep.conns.clone());
        }
    }

    /// An endpoint (meshed when it has an `identity`) of what `of` says, with the guard
    /// `guard` makes for it given its label (outbound endpoints have one).
    fn endpoint(
        &mut self,
        metrics: &Metrics,
        of: EndpointOf<'_>,
        (addr, identity): (SocketAddr, Option<Arc<SpiffeId>>),
        guard: impl FnOnce(&str) -> Option<Arc<EndpointGuard>>,
    ) -> Arc<EndpointRt> {
        let label = addr.to_string();
        let endpoint_metrics = match of {
            EndpointOf::Service { key, routes } => {
                let identity = identity.as_ref().map(|id| id.to_string());
                let counted = metrics.endpoint(Direction::Outbound, key, &label);
                counted.with_edges(&metrics.edges, key, identity, routes)
            }
            EndpointOf::App(name) => metrics.endpoint(Direction::Inbound, name, &label),
        };
        let pool = self
            .by_endpoint
            .entry((addr, identity.clone()))
            .or_insert_with(|| EndpointConns::new(addr, identity));
        Arc::new(EndpointRt {
            addr,
            conns: pool.clone(),
            metrics: endpoint_metrics,
            guard: guard(&label),
            label,
        })
    }
}

/// Routes and policies by what they attach to, as positions in the resources.
struct Attachments {
    /// Service key → its HTTPRoutes (`namespace/name`, position), in name order.
    routes: HashMap<String, Vec<(String, u32)>>,
    /// Service key → the HTTPRoutes (position) that send it traffic, as a backend.
    routes_to: HashMap<String, Vec<u32>>,
    backend: HashMap<String, u32>,
    service_limits: HashMap<String, u32>,
    /// Route `namespace/name` → its rate limit.
    route_limits: HashMap<String, u32>,
}

impl Attachments {
    fn collect(resources: &[Resource]) -> Self {
        let mut a = Attachments {
            routes: HashMap::new(),
            routes_to: HashMap::new(),
            backend: HashMap::new(),
            service_limits: HashMap::new(),
            route_limits: HashMap::new(),
        };
        let target =
            |t: &TargetRef, ns: &str| (t.name.clone(), t.namespace.clone().unwrap_or_else(|| ns.to_owned()));
        for (i, r) in resources.iter().enumerate() {
            let i = i as u32;
            let ns = &r.metadata().namespace;
            match r {
                Resource::HttpRoute(route) => {
                    let name = format!("{ns}/{}", route.metadata.name);
                    for parent in &route.spec.parent_refs {
                        let parent_ns = parent.namespace.as_deref().unwrap_or(ns);
                        let key = format!("{}.{parent_ns}", parent.name);
                        // The parent counts its route's local failures (a body that failed, an
                        // unknown backend) whatever the backends; as the route table resolves
                        // them (`route::compile_rule`): no backend is the parent itself, a
                        // backend without a namespace is in the parent's.
                        a.routes_to.entry(key.clone()).or_default().push(i);
                        for rule in &route.spec.rules {
                            for b in &rule.backend_refs {
                                let backend_ns = b.namespace.as_deref().unwrap_or(parent_ns);
                                a.routes_to.entry(format!("{}.{backend_ns}", b.name)).or_default().push(i);
                            }
                        }
                        a.routes.entry(key).or_default().push((name.clone(), i));
                    }
                }
                Resource::BackendPolicy(p) => {
                    let (name, tns) = target(&p.spec.target_ref, ns);
                    a.backend.insert(format!("{name}.{tns}"), i);
                }
                Resource::RateLimitPolicy(p) => {
                    let (name, tns) = target(&p.spec.target_ref, ns);
                    if p.spec.target_ref.kind == "HTTPRoute" {
                        a.route_limits.insert(format!("{tns}/{name}"), i);
                    } else {
                        a.service_limits.insert(format!("{name}.{tns}"), i);
                    }
                }
                Resource::Sidecar(_)
                | Resource::Service(_)
                | Resource::AuthorizationPolicy(_)
                | Resource::Rollout(_) => {}
            }
        }
        for routes in a.routes.values_mut() {
            routes.sort_by(|x, y| x.0.cmp(&y.0));
        }
        for routes in a.routes_to.values_mut() {
            routes.sort_unstable();
            routes.dedup();
        }
        a
    }
}

/// tower's budget asserts on its arguments (a `minPerSecond` of 2^31 panics); validation keeps
/// them in range, and the clamps keep a build from panicking should a value slip past it.
fn tps_budget(b: &RetryBudget) -> TpsBudget {
    let ratio = if b.ratio.is_finite() { b.ratio.clamp(0.0, 1000.0) as f32 } else { 0.0 };
    TpsBudget::new(Duration::from_secs(10), b.min_per_second.min(i32::MAX as u32 - 1), ratio)
}

/// Tells a real change from a touched file or a resent push.
pub fn hash_text(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}
