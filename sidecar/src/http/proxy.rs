//! The HTTP request path: pick the target service and endpoint, rewrite the request for the next
//! hop, send it over a pooled connection, and hand the response back — as a `tower::Service`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::{HeaderValue, CONTENT_TYPE, EXPECT, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pilotfish_api::policy::LoadBalancer;
use pilotfish_api::Protocol;
use tokio::time::Instant as TokioInstant;

use super::body::{Completion, ProxyBody};
use super::correlation;
use super::errors::ProxyError;
use super::headers;
use super::pool::{Connect, Reusable, SendError, UpstreamError, Version};
use super::request_body::{keep_for_replay, KeepError, Keeping, RequestBody};
use crate::listener::accept::ConnSlot;
use crate::resilience::balance::p2c;
use crate::resilience::limit::{Limit, OwnedClaim};
use crate::resilience::ratelimit::limiter::Decision;
use crate::resilience::ratelimit::policy::{LimitKey, RateLimit};
use crate::resilience::retry::{self, Outcome};
use crate::snapshot::route::{self, Redirect, Rewrite};
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::tcp::splice;
use crate::telemetry::access_log::{self, HttpRecord};
use crate::telemetry::metrics::{Direction, EndpointMetrics, TargetMetrics};
use crate::upstream::endpoint::EndpointRt;
use crate::upstream::service::ServiceRt;
use tower::retry::budget::Budget;

/// Where the requests of one connection go.
#[derive(Clone)]
pub enum HttpTarget {
    /// The explicit outbound listener: the service named by `Host` / `:authority`.
    ByAuthority,
    /// A known service (per-service local port, or transparent `ADDRESS:PORT`).
    Service { key: Arc<str>, protocol: Option<Protocol> },
    /// The local app (inbound).
    App(Option<Arc<EndpointRt>>),
}

/// Handles the requests of one downstream connection.
#[derive(Clone)]
pub struct Proxy {
    conn: Arc<ConnContext>,
}

struct ConnContext {
    shared: Arc<Shared>,
    direction: Direction,
    client: SocketAddr,
    target: HttpTarget,
    downstream: Version,
    /// The connection's listener slot, shared with any tunnel an upgrade starts.
    slot: Arc<ConnSlot>,
}

impl Proxy {
    pub fn new(
        shared: Arc<Shared>,
        direction: Direction,
        client: SocketAddr,
        target: HttpTarget,
        downstream: Version,
        slot: Arc<ConnSlot>,
    ) -> Self {
        let conn = ConnContext { shared, direction, client, target, downstream, slot };
        Self { conn: Arc::new(conn) }
    }
}

impl tower::Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let conn = self.conn.clone();
        Box::pin(async move { Ok(conn.handle(req).await) })
    }
}

impl ConnContext {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let snap = self.shared.snapshot.load_full();
        let request_id = correlation::request_id(req.headers_mut());
        correlation::next_hop(req.headers_mut());
        let mut res = match &self.target {
            HttpTarget::App(adhoc) => self.to_app(&snap, adhoc.as_ref(), req, started).await,
            _ => self.to_service(&snap, req, started).await,
        };
        res.headers_mut().entry(&correlation::REQUEST_ID).or_insert(request_id);
        res
    }

    /// Inbound: straight to the local app.
    async fn to_app(
        &self,
        snap: &Snapshot,
        adhoc: Option<&Arc<EndpointRt>>,
        mut req: Request<Incoming>,
        started: Instant,
    ) -> Response<ProxyBody> {
        let grpc = is_grpc(&req);
        let Some(inbound) = &snap.inbound else {
            return self.fail(
                snap,
                &req,
                None,
                ProxyError::NoRoute("inbound".into()),
                grpc,
                &snap.unrouted,
                started,
            );
        };
        let authority = match authority_of(&req) {
            Ok(a) => a,
            Err(e) => return self.fail(snap, &req, None, e, grpc, &inbound.local, started),
        };
        let endpoint = adhoc.unwrap_or(&inbound.app);
        let record = self.record_for(snap, &req, authority.as_ref(), &snap.name, started);
        let upgrade = self.downstream == Version::Http1 && headers::wants_upgrade(req.headers());
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut out = Request::from_parts(parts, RequestBody::streaming(body));
        prepare(&mut out, self.downstream, endpoint, authority, upgrade, Some(self.client.ip()));
        let connect = Connect {
            timeout: snap.sidecar.timeouts.connect.get(),
            open: &inbound.connections,
            max_open: usize::MAX,
            pending: &inbound.pending,
            max_pending: usize::MAX,
        };
        match endpoint.conns.send(self.downstream, out, &connect).await {
            Ok((res, conn)) => {
                let exchange = Exchange { metrics: &inbound.metrics, idle: snap.sidecar.timeouts.idle.get() };
                self.respond(res, conn, endpoint, exchange, on_upgrade, record, started)
            }
            Err(e) => self.respond_local(ProxyError::from(e.error), grpc, &endpoint.metrics, record),
        }
    }

    /// Outbound: the service, its route, its policies, retries and the balancer — the request
    /// path in the order the design lays it out, top to bottom.
    async fn to_service(
        &self,
        snap: &Snapshot,
        mut req: Request<Incoming>,
        started: Instant,
    ) -> Response<ProxyBody> {
        let grpc = is_grpc(&req);
        let fail = |req: &Request<Incoming>, authority: Option<&Authority>, e, local| {
            self.fail(snap, req, authority, e, grpc, local, started)
        };
        let mut authority = match authority_of(&req) {
            Ok(authority) => authority,
            Err(e) => return fail(&req, None, e, &snap.unrouted),
        };
        if req.method() == Method::CONNECT {
            return fail(&req, authority.as_ref(), ProxyError::ConnectUnsupported, &snap.unrouted);
        }
        let (service, declared_port) = match self.service(snap, authority.as_ref()) {
            Ok(found) => found,
            Err(e) => return fail(&req, authority.as_ref(), e, &snap.unrouted),
        };
        let local = &service.local;

        // Rate limit on the service, then route, then rate limit on the route.
        let mut limited = Vec::new();
        if let Some(limit) = &service.rate_limit {
            match self.check_rate(limit, &req) {
                Ok(d) => limited.push(d),
                Err(e) => return fail(&req, authority.as_ref(), e, local),
            }
        }
        let uri = req.uri().clone();
        let Some(selected) = service.routes.select(req.method(), uri.path(), uri.query(), req.headers())
        else {
            let e = ProxyError::NoRoute(format!("{} {}", service.key, uri.path()));
            return fail(&req, authority.as_ref(), e, local);
        };
        let rule = selected.rule;
        if let Some(limit) = &rule.rate_limit {
            match self.check_rate(limit, &req) {
                Ok(d) => limited.push(d),
                Err(e) => return fail(&req, authority.as_ref(), e, local),
            }
        }
        if let Some(redirect) = &rule.redirect {
            return redirect_response(redirect, &req, authority.as_ref(), selected.prefix);
        }
        if let Some(mods) = &rule.request_headers {
            mods.apply(req.headers_mut());
        }
        if let Some(rewrite) = &rule.rewrite {
            apply_rewrite(rewrite, &mut req, &mut authority, selected.prefix);
        }

        // Limits: fail fast rather than queue without bound.
        let limits = &service.policy.limits;
        let in_flight = match OwnedClaim::take(&service.in_flight, limits.max_requests as usize) {
            Some(claim) => claim,
            None => {
                service.resilience.overflow_requests.inc();
                let e =
                    ProxyError::Overloaded { service: service.key.to_string(), limit: Limit::MaxRequests };
                return fail(&req, authority.as_ref(), e, local);
            }
        };

        let record = self.record_for(snap, &req, authority.as_ref(), &service.key, started);
        let upgrade = self.downstream == Version::Http1 && headers::wants_upgrade(req.headers());
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        // Retries need the body again: requests that may be retried (idempotent, keyed, or gRPC
        // under a gRPC retry policy) keep a body that fits the replay buffer. A non-idempotent
        // gRPC call is retried only when the server said it did nothing (a listed gRPC status)
        // or no connection was made.
        let deadline = rule.request_timeout.map(|t| TokioInstant::from_std(started) + t);
        let idempotent = retry::is_idempotent(req.method(), req.headers());
        let grpc_retries = grpc && !service.policy.conditions.grpc_codes.is_empty();
        let retry = rule.retry.as_ref().filter(|_| idempotent || grpc_retries);
        let (mut parts, incoming) = req.into_parts();
        let mut body = None;
        // Reading the body to keep is bounded even when the route sets no timeout: a stalled
        // body must not hold its place under maxRequests for ever.
        let body_timeout = snap.sidecar.timeouts.request_body.get();
        let body_deadline = TokioInstant::from_std(started) + body_timeout;
        let read_until = deadline.map_or(body_deadline, |d| d.min(body_deadline));
        let replay = match retry {
            Some(_) => match keep_for_replay(incoming, service.policy.max_body_bytes, read_until).await {
                Err(KeepError::Timeout) => {
                    let req = Request::from_parts(take_parts(&mut parts), ());
                    let e = match deadline {
                        Some(d) if d <= body_deadline => {
                            ProxyError::Timeout(rule.request_timeout.unwrap_or_default())
                        }
                        _ => ProxyError::RequestBodyTimeout(body_timeout),
                    };
                    return self.fail(snap, &req, authority.as_ref(), e, grpc, local, started);
                }
                Ok(Keeping::Kept(kept)) => Some(kept),
                Ok(Keeping::TooLarge(streaming)) => {
                    body = Some(streaming);
                    None
                }
                Err(KeepError::Body(e)) => {
                    let req = Request::from_parts(take_parts(&mut parts), ());
                    let e = ProxyError::RequestBody(e.to_string());
                    return self.fail(snap, &req, authority.as_ref(), e, grpc, local, started);
                }
            },
            None => {
                body = Some(RequestBody::streaming(incoming));
                None
            }
        };
        let max_retries = match (&replay, retry) {
            (Some(_), Some(r)) => r.attempts,
            _ => 0,
        };
        // A request that never went out comes back from the pool, so a failed connect is
        // retried for any method and body: as often as the route allows, and at least
        // DEFAULT_CONNECT_RETRIES times.
        let connect_retries = rule.retry.as_ref().map_or(0, |r| r.attempts).max(DEFAULT_CONNECT_RETRIES);

        let connect_timeout = snap.sidecar.timeouts.connect.get();
        service.budget.deposit();
        let mut retries = 0;
        let mut avoid = None;
        loop {
            let backend_key = rule.pick_backend();
            let Some(backend) = snap.service(backend_key) else {
                let e = ProxyError::UnknownBackend(backend_key.to_string());
                return self.respond_local(e, grpc, local, record);
            };
            // The balancer's choice, or the next one if its breaker admits no request just now
            // (another request took the single half-open probe).
            let mut refused = Vec::new();
            let (endpoint, attempt) = loop {
                let now = TokioInstant::now();
                let Some(endpoint) = choose(backend, now, avoid, &refused) else {
                    let e = unavailable(backend);
                    return self.respond_local(e, grpc, &backend.local, record);
                };
                let guard = endpoint.guard.as_ref().expect("outbound endpoints have guards");
                match guard.admit(now) {
                    Some(attempt) => break (endpoint, attempt),
                    None => refused.push(endpoint.addr),
                }
            };
            let version = match (upgrade, declared(backend, declared_port)) {
                (true, _) => Version::Http1,
                (false, Some(Protocol::Http)) => Version::Http1,
                (false, Some(Protocol::Http2 | Protocol::Grpc)) => Version::Http2,
                (false, _) => self.downstream,
            };
            let attempt_body = match (&replay, body.take()) {
                (Some(kept), _) => RequestBody::replay(kept),
                (None, Some(streaming)) => streaming,
                // Only a request that came back unsent is attempted again without a replay
                // buffer, and it brings its body back.
                (None, None) => unreachable!(
                    "only an unsent request, which brings its body back, is retried without replay"
                ),
            };
            let mut out = match &replay {
                Some(_) => rebuild(&parts, attempt_body),
                None => Request::from_parts(take_parts(&mut parts), attempt_body),
            };
            prepare(&mut out, version, endpoint, authority.clone(), upgrade, None);

            let sent_at = TokioInstant::now();
            let try_deadline = match (rule.try_timeout.map(|t| sent_at + t), deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let connect = Connect {
                timeout: connect_timeout,
                open: &backend.connections,
                max_open: backend.policy.limits.max_connections as usize,
                pending: &backend.pending,
                max_pending: backend.policy.limits.max_pending_requests as usize,
            };
            let mut blamed = true;
            let send = endpoint.conns.send(version, out, &connect);
            let result = match try_deadline {
                Some(at) => tokio::time::timeout_at(at, send).await.map_err(|_| at),
                None => Ok(send.await),
            };
            let finished = TokioInstant::now();
            let (outcome, result) = match result {
                Ok(Ok((res, conn))) => {
                    let grpc_status = res
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    (Outcome::Response { status: res.status().as_u16(), grpc: grpc_status }, Ok((res, conn)))
                }
                Ok(Err(SendError { error: UpstreamError::Overflow(limit), .. })) => {
                    // A limit of ours, not the endpoint's failure: no breaker, no retry.
                    drop(attempt);
                    let r = &backend.resilience;
                    let counter = match limit {
                        Limit::MaxConnections => &r.overflow_connections,
                        _ => &r.overflow_pending,
                    };
                    counter.inc();
                    let e = ProxyError::Overloaded { service: backend.key.to_string(), limit };
                    return self.respond_local(e, grpc, &backend.local, record);
                }
                Ok(Err(SendError { error, unsent })) => {
                    let outcome = if error.is_connect() { Outcome::ConnectFailure } else { Outcome::Reset };
                    if let (Some(req), None) = (unsent, &replay) {
                        let (back, streaming) = (*req).into_parts();
                        parts = back;
                        body = Some(streaming);
                    }
                    // A failure shared by a queue of requests counts against the endpoint once.
                    blamed = error.blames_endpoint();
                    (outcome, Err(ProxyError::from(error)))
                }
                Err(at) => {
                    let limit = rule.request_timeout.filter(|_| Some(at) == deadline).or(rule.try_timeout);
                    (Outcome::Timeout, Err(ProxyError::Timeout(limit.unwrap_or_default())))
                }
            };
            let transition = match blamed {
                true => attempt.finish(outcome, finished - sent_at, &backend.policy.failure_on, finished),
                false => None,
            };
            endpoint
                .guard
                .as_ref()
                .expect("outbound endpoints have guards")
                .breaker_metrics
                .record(transition);

            let may_retry = match outcome {
                Outcome::ConnectFailure => retries < connect_retries && (replay.is_some() || body.is_some()),
                _ => retries < max_retries,
            };
            let reason = may_retry
                .then(|| service.policy.conditions.reason(outcome, retry.map_or(&[][..], |r| &r.codes)))
                .flatten()
                .filter(|r| idempotent || matches!(r, retry::Reason::Grpc | retry::Reason::ConnectFailure));
            if let Some(reason) = reason {
                let base = retry.and_then(|r| r.backoff).unwrap_or(service.policy.base_backoff);
                let pause = retry::backoff(retries, base, service.policy.max_backoff);
                // No time left for another attempt: answer with what this one got.
                let in_time = deadline.is_none_or(|d| finished + pause < d);
                if in_time && service.budget.withdraw() {
                    service.resilience.retried(reason);
                    tokio::time::sleep_until(finished + pause).await;
                    retries += 1;
                    avoid = Some(endpoint.addr);
                    continue;
                }
                if in_time {
                    service.resilience.budget_exhausted.inc();
                }
            }
            return match result {
                Ok((mut res, conn)) => {
                    if let Some(mods) = &rule.response_headers {
                        mods.apply(res.headers_mut());
                    }
                    headers::add_rate_limit_headers(res.headers_mut(), &limited);
                    let exchange =
                        Exchange { metrics: &backend.metrics, idle: snap.sidecar.timeouts.idle.get() };
                    let mut res = self.respond(res, conn, endpoint, exchange, on_upgrade, record, started);
                    if let ProxyBody::Upstream { done, .. } = res.body_mut() {
                        done.hold(in_flight);
                    }
                    res
                }
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.addr, error = %e, "request failed");
                    self.respond_local(e, grpc, &endpoint.metrics, record)
                }
            };
        }
    }

    /// The service a request is for: named by its authority (explicit listener) or fixed by
    /// the connection (local port, transparent address); with the port for its protocol.
    fn service<'s>(
        &self,
        snap: &'s Snapshot,
        authority: Option<&Authority>,
    ) -> Result<(&'s Arc<ServiceRt>, PortHint), ProxyError> {
        match &self.target {
            HttpTarget::ByAuthority => {
                let authority = authority.ok_or(ProxyError::MissingAuthority)?;
                let service = snap
                    .service_by_authority(authority.as_str())
                    .ok_or_else(|| ProxyError::NoRoute(authority.as_str().to_owned()))?;
                Ok((service, PortHint::Port(authority.port_u16())))
            }
            HttpTarget::Service { key, protocol } => {
                let service = snap.service(key).ok_or_else(|| ProxyError::NoRoute(key.to_string()))?;
                Ok((service, protocol.map_or(PortHint::Port(None), PortHint::Declared)))
            }
            HttpTarget::App(_) => unreachable!("inbound requests go to the app"),
        }
    }

    fn check_rate(&self, limit: &RateLimit, req: &Request<Incoming>) -> Result<Decision, ProxyError> {
        let peer;
        let key = match &limit.key {
            LimitKey::Global => None,
            LimitKey::Header(name) => req.headers().get(name).map(HeaderValue::as_bytes),
            LimitKey::Peer => {
                // An IPv4 peer and the same address mapped into IPv6 are one peer.
                peer = match self.client.ip() {
                    std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                    std::net::IpAddr::V6(ip) => ip.octets(),
                };
                Some(&peer[..])
            }
        };
        let decision = limit.limiter.check(key, TokioInstant::now());
        if decision.allowed {
            return Ok(decision);
        }
        limit.refused.inc();
        Err(ProxyError::RateLimited(decision))
    }

    /// Hands an endpoint's response back downstream: accounting, hop-by-hop headers, a tunnel
    /// for a protocol switch, and the body wrapped so its end releases the connection.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        mut res: Response<Incoming>,
        conn: Option<Reusable>,
        endpoint: &EndpointRt,
        exchange: Exchange<'_>,
        on_upgrade: Option<hyper::upgrade::OnUpgrade>,
        record: Option<Box<(HttpRecord, Instant)>>,
        started: Instant,
    ) -> Response<ProxyBody> {
        exchange.metrics.duration.observe(started.elapsed().as_secs_f64());
        endpoint.metrics.record(res.status());
        let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(res.headers_mut(), switching && on_upgrade.is_some());
        let conn = if switching {
            if let Some(downstream) = on_upgrade {
                let upstream = hyper::upgrade::on(&mut res);
                let tunnel = Tunnel {
                    slot: self.slot.clone(),
                    metrics: exchange.metrics.clone(),
                    idle: exchange.idle,
                };
                self.shared.tracker.spawn(tunnel.run(downstream, upstream));
            }
            None
        } else {
            conn
        };
        let mut record = record;
        if let Some(r) = record.as_mut() {
            r.0.status = res.status().as_u16();
            r.0.upstream = Some(endpoint.addr);
        }
        res.map(|body| ProxyBody::upstream(body, Completion::new(conn, record)))
    }

    fn record_for<B>(
        &self,
        snap: &Snapshot,
        req: &Request<B>,
        authority: Option<&Authority>,
        service: &str,
        started: Instant,
    ) -> Option<Box<(HttpRecord, Instant)>> {
        snap.sidecar.access_log.then(|| Box::new((self.record(req, authority, service), started)))
    }

    /// A request refused before reaching an endpoint (the body may already be gone: `B` is
    /// whatever is left of the request).
    #[allow(clippy::too_many_arguments)]
    fn fail<B>(
        &self,
        snap: &Snapshot,
        req: &Request<B>,
        authority: Option<&Authority>,
        e: ProxyError,
        grpc: bool,
        local: &EndpointMetrics,
        started: Instant,
    ) -> Response<ProxyBody> {
        tracing::debug!(error = %e, "request refused");
        let record = self.record_for(snap, req, authority, "", started);
        self.respond_local(e, grpc, local, record)
    }

    fn respond_local(
        &self,
        e: ProxyError,
        grpc: bool,
        local: &EndpointMetrics,
        record: Option<Box<(HttpRecord, Instant)>>,
    ) -> Response<ProxyBody> {
        let res = e.respond(grpc);
        // gRPC callers get a 200 carrying grpc-status; the metric counts the failure's status.
        local.record(e.status());
        if let Some(entry) = record {
            let (mut r, started) = *entry;
            r.status = res.status().as_u16();
            r.error = Some(e.reason());
            r.duration_ms = access_log::millis(started.elapsed());
            access_log::http(&r);
        }
        res
    }

    fn record<B>(&self, req: &Request<B>, authority: Option<&Authority>, service: &str) -> HttpRecord {
        HttpRecord {
            direction: self.direction.as_str(),
            client: self.client,
            method: req.method().to_string(),
            authority: authority.map(|a| a.as_str().to_owned()).unwrap_or_default(),
            path: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            protocol: match self.downstream {
                Version::Http1 => "HTTP/1.1",
                Version::Http2 => "HTTP/2",
            },
            status: 0,
            duration_ms: 0.0,
            response_bytes: 0,
            upstream: None,
            service: (!service.is_empty()).then(|| service.to_owned()),
            request_id: req
                .headers()
                .get(&correlation::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            traceparent: req.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned),
            error: None,
        }
    }
}

/// Where a service's port protocol comes from: the port in the authority (explicit listener),
/// or the protocol already known for the connection (transparent `ADDRESS:PORT`).
#[derive(Clone, Copy)]
enum PortHint {
    Port(Option<u16>),
    Declared(Protocol),
}

fn declared(service: &ServiceRt, hint: PortHint) -> Option<Protocol> {
    match hint {
        PortHint::Declared(p) => Some(p),
        PortHint::Port(port) => service.spec.protocol(port).or_else(|| service.spec.protocol(None)),
    }
}

/// Where an exchange is accounted, and the idle timeout for a tunnel it may turn into.
struct Exchange<'a> {
    metrics: &'a TargetMetrics,
    idle: std::time::Duration,
}

/// The load balancer: an endpoint that is healthy, whose breaker lets traffic through, that is
/// not in `refused`, and (when another qualifies) that is not `avoid` — the endpoint a failed
/// attempt just used.
pub fn choose<'s>(
    service: &'s ServiceRt,
    now: TokioInstant,
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

/// Why a service has no endpoint to offer: none at all, none healthy, or all ejected.
fn unavailable(service: &ServiceRt) -> ProxyError {
    if service.any_healthy() {
        ProxyError::CircuitOpen(service.key.to_string())
    } else {
        ProxyError::NoEndpoints(service.key.to_string())
    }
}

/// Retries of a request whose connection failed (it never went out), when the route allows
/// fewer.
const DEFAULT_CONNECT_RETRIES: u32 = 2;

fn take_parts(slot: &mut http::request::Parts) -> http::request::Parts {
    let mut taken = Request::new(()).into_parts().0;
    std::mem::swap(slot, &mut taken);
    taken
}

fn rebuild(template: &http::request::Parts, body: RequestBody) -> Request<RequestBody> {
    let mut req = Request::new(body);
    *req.method_mut() = template.method.clone();
    *req.uri_mut() = template.uri.clone();
    *req.version_mut() = template.version;
    *req.headers_mut() = template.headers.clone();
    req
}

fn redirect_response(
    redirect: &Redirect,
    req: &Request<Incoming>,
    authority: Option<&Authority>,
    prefix: Option<&str>,
) -> Response<ProxyBody> {
    // The sidecar only sees plaintext HTTP, so the request's scheme is http.
    let scheme = redirect.scheme.as_deref().unwrap_or("http");
    let host = redirect.hostname.as_deref().or_else(|| authority.map(|a| a.host())).unwrap_or("localhost");
    // Gateway API: with neither port nor scheme set, keep the request's port; a port that is the
    // scheme's default is left out.
    let port = redirect
        .port
        .or_else(|| redirect.scheme.is_none().then(|| authority.and_then(|a| a.port_u16())).flatten());
    let port = match (scheme, port) {
        ("http", Some(80)) | ("https", Some(443)) | (_, None) => String::new(),
        (_, Some(p)) => format!(":{p}"),
    };
    let path = match &redirect.path {
        Some(m) => route::modify_path(req.uri().path(), m, prefix),
        None => req.uri().path().to_owned(),
    };
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut res = Response::new(ProxyBody::local(bytes::Bytes::new()));
    *res.status_mut() = redirect.status;
    if let Ok(location) = HeaderValue::from_str(&format!("{scheme}://{host}{port}{path}{query}")) {
        res.headers_mut().insert(http::header::LOCATION, location);
    }
    res
}

fn apply_rewrite(
    rewrite: &Rewrite,
    req: &mut Request<Incoming>,
    authority: &mut Option<Authority>,
    prefix: Option<&str>,
) {
    if let Some(host) = &rewrite.hostname {
        if let Ok(a) = Authority::try_from(host.as_bytes()) {
            *authority = Some(a);
        }
    }
    if let Some(modifier) = &rewrite.path {
        let path = route::modify_path(req.uri().path(), modifier, prefix);
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = PathAndQuery::try_from(pq) {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
}

/// Rewrites the request for the next hop: hop-by-hop fields out, the peer recorded (inbound),
/// and the URI, version and `Host` in the form the upstream protocol wants, carrying the
/// authority the request was routed by.
fn prepare(
    req: &mut Request<RequestBody>,
    version: Version,
    endpoint: &EndpointRt,
    authority: Option<Authority>,
    upgrade: bool,
    forwarded_for: Option<std::net::IpAddr>,
) {
    headers::strip_hop_by_hop(req.headers_mut(), upgrade);
    // `100-continue` is answered to the client by this hop, when the body is first read.
    req.headers_mut().remove(EXPECT);
    if let Some(peer) = forwarded_for {
        headers::append_forwarded(req.headers_mut(), peer);
    }
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    let authority = authority
        .unwrap_or_else(|| Authority::try_from(endpoint.label.as_str()).expect("IP:PORT is an authority"));
    match version {
        Version::Http1 => {
            parts.scheme = None;
            parts.authority = None;
            *req.version_mut() = http::Version::HTTP_11;
            let host =
                HeaderValue::from_str(authority.as_str()).expect("an authority is a valid header value");
            req.headers_mut().insert(HOST, host);
        }
        Version::Http2 => {
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority);
            *req.version_mut() = http::Version::HTTP_2;
            req.headers_mut().remove(HOST);
        }
    }
    *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path make a URI");
}

/// An upgraded connection (e.g. WebSocket) relayed byte for byte; it keeps the downstream
/// connection's listener slot, and closes after the idle timeout like opaque TCP.
struct Tunnel {
    slot: Arc<ConnSlot>,
    metrics: TargetMetrics,
    idle: std::time::Duration,
}

impl Tunnel {
    async fn run(self, downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
        match tokio::try_join!(downstream, upstream) {
            Ok((down, up)) => {
                let counters = (&self.metrics.tcp_client_to_server, &self.metrics.tcp_server_to_client);
                let (_, result) =
                    splice::splice(TokioIo::new(down), TokioIo::new(up), self.idle, counters).await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
        }
        drop(self.slot);
    }
}

/// The authority to route by: the URI's (HTTP/2 `:authority`, HTTP/1 absolute form) or `Host`.
fn authority_of<B>(req: &Request<B>) -> Result<Option<Authority>, ProxyError> {
    if let Some(a) = req.uri().authority() {
        return Ok(Some(a.clone()));
    }
    match req.headers().get(HOST) {
        None => Ok(None),
        Some(host) => Authority::try_from(host.as_bytes())
            .map(Some)
            .map_err(|_| ProxyError::InvalidHost(String::from_utf8_lossy(host.as_bytes()).into_owned())),
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
