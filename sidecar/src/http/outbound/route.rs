//! Stage 1, route: which service a request is for, whether its rate limits let it in, which
//! rule of the service's route table it matches, and what that rule's filters do to it (redirect,
//! header modifiers, URL rewrite); last, its place under the service's `maxRequests`.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, LOCATION};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, Uri};
use pilotfish_api::{Protocol, SpiffeId};

use crate::http::body::ProxyBody;
use crate::http::context::{authority_of, HttpTarget, RequestContext};
use crate::http::errors::ProxyError;
use crate::resilience::limit::{Limit, OwnedClaim};
use crate::resilience::ratelimit::limiter::Decision;
use crate::resilience::ratelimit::policy::RateLimit;
use crate::snapshot::route::{self, Redirect, Rewrite, Rule};
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::EndpointMetrics;
use crate::upstream::service::ServiceRt;

/// A request the route stage let through.
pub struct Routed<'s> {
    pub service: &'s Arc<ServiceRt>,
    /// How the protocol of the service's port is found.
    pub port: PortHint,
    pub rule: &'s Arc<Rule>,
    /// The authority the request goes out with (a rewrite may have changed it).
    pub authority: Option<Authority>,
    /// The rate limits it passed, for the `RateLimit-*` response headers.
    pub limited: Vec<Decision>,
    /// Its place under the service's `maxRequests`, held until its response ends.
    pub in_flight: OwnedClaim,
}

/// A request the route stage answers itself.
pub enum Unrouted<'s> {
    /// Refused, counted on `local`.
    Refused { error: ProxyError, authority: Option<Authority>, local: &'s EndpointMetrics },
    /// Sent elsewhere by a `RequestRedirect` filter (boxed: redirects are rare, and every
    /// request moves this result).
    Redirected(Box<Response<ProxyBody>>),
}

/// Where a service's port protocol comes from: the port in the authority (explicit listener),
/// or the protocol already known for the connection (transparent `ADDRESS:PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortHint {
    Port(Option<u16>),
    Declared(Protocol),
}

impl PortHint {
    /// The protocol `service` declares for the port, or for its only port.
    pub fn protocol(self, service: &ServiceRt) -> Option<Protocol> {
        match self {
            Self::Declared(p) => Some(p),
            Self::Port(port) => service.spec.protocol(port).or_else(|| service.spec.protocol(None)),
        }
    }
}

/// Routes `req` (whose filters it applies in place).
pub fn route<'s, B>(cx: &RequestContext<'s>, req: &mut Request<B>) -> Result<Routed<'s>, Unrouted<'s>> {
    let snap = cx.snap;
    let refused = |error, authority, local| Unrouted::Refused { error, authority, local };
    let mut authority = match authority_of(req) {
        Ok(authority) => authority,
        Err(e) => return Err(refused(e, None, &snap.unrouted)),
    };
    if req.method() == Method::CONNECT {
        return Err(refused(ProxyError::ConnectUnsupported, authority, &snap.unrouted));
    }
    let (service, port) = match service_for(snap, &cx.conn.target, authority.as_ref()) {
        Ok(found) => found,
        Err(e) => return Err(refused(e, authority, &snap.unrouted)),
    };
    let local = &service.local;
    let client = cx.conn.client.ip();
    let peer = cx.conn.peer.as_deref();

    // Rate limit on the service, then route, then rate limit on the route.
    let mut limited = Vec::new();
    if let Some(limit) = &service.rate_limit {
        match check_rate(limit, client, peer, req) {
            Ok(d) => limited.push(d),
            Err(e) => return Err(refused(e, authority, local)),
        }
    }
    let uri = req.uri();
    let Some(selected) = service.routes.select(req.method(), uri.path(), uri.query(), req.headers()) else {
        let e = ProxyError::NoRoute(format!("{} {}", service.key, uri.path()));
        return Err(refused(e, authority, local));
    };
    let rule = selected.rule;
    if let Some(limit) = &rule.rate_limit {
        match check_rate(limit, client, peer, req) {
            Ok(d) => limited.push(d),
            Err(e) => return Err(refused(e, authority, local)),
        }
    }
    if let Some(redirect) = &rule.redirect {
        let res = redirect_response(redirect, req, authority.as_ref(), selected.prefix);
        return Err(Unrouted::Redirected(Box::new(res)));
    }
    if let Some(mods) = &rule.request_headers {
        mods.apply(req.headers_mut());
    }
    if let Some(rewrite) = &rule.rewrite {
        apply_rewrite(rewrite, req, &mut authority, selected.prefix);
    }

    // Limits: fail fast rather than queue without bound.
    let Some(in_flight) = OwnedClaim::take(&service.in_flight, service.policy.limits.max_requests as usize)
    else {
        service.resilience.overflowed(Limit::MaxRequests);
        let e = ProxyError::Overloaded { service: service.key.to_string(), limit: Limit::MaxRequests };
        return Err(refused(e, authority, local));
    };
    Ok(Routed { service, port, rule, authority, limited, in_flight })
}

/// The service a request is for: named by its authority (explicit listener) or fixed by the
/// connection (local port, transparent address); with how to find its port's protocol.
fn service_for<'s>(
    snap: &'s Snapshot,
    target: &HttpTarget,
    authority: Option<&Authority>,
) -> Result<(&'s Arc<ServiceRt>, PortHint), ProxyError> {
    match target {
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

/// Counts the request against `limit` ([`RateLimit::check`]): its decision, or the refusal.
fn check_rate<B>(
    limit: &RateLimit,
    client: IpAddr,
    peer: Option<&SpiffeId>,
    req: &Request<B>,
) -> Result<Decision, ProxyError> {
    limit.check(client, peer, req).map_err(ProxyError::RateLimited)
}

fn redirect_response<B>(
    redirect: &Redirect,
    req: &Request<B>,
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
    let mut res = Response::new(ProxyBody::local(Bytes::new()));
    *res.status_mut() = redirect.status;
    if let Ok(location) = HeaderValue::from_str(&format!("{scheme}://{host}{port}{path}{query}")) {
        res.headers_mut().insert(LOCATION, location);
    }
    res
}

fn apply_rewrite<B>(
    rewrite: &Rewrite,
    req: &mut Request<B>,
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
