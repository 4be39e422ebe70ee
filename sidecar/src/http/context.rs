//! What a request carries through the L7 path: its connection ([`Connection`]: who sent it,
//! where its connection's requests go) and the request itself ([`RequestContext`]: the
//! snapshot it reads, when it arrived, whether it speaks gRPC), with the answers every stage may
//! give without reaching an endpoint — a local failure, logged and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{CONTENT_TYPE, HOST};
use http::uri::Authority;
use http::{HeaderValue, Request, Response};
use pilotfish_api::{Protocol, SpiffeId};

use super::body::ProxyBody;
use super::correlation;
use super::errors::ProxyError;
use super::pool::Version;
use crate::listener::accept::ConnSlot;
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::telemetry::access_log::{self, HttpRecord, Tls};
use crate::telemetry::edges::{EdgeStats, RouteId, NO_ROUTE};
use crate::telemetry::metrics::{Direction, EndpointMetrics};
use crate::telemetry::trace::Learned;
use crate::upstream::endpoint::EndpointRt;

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

/// One downstream connection, as each of its requests sees it.
pub struct Connection {
    pub shared: Arc<Shared>,
    pub direction: Direction,
    pub client: SocketAddr,
    pub target: HttpTarget,
    /// The HTTP version the client speaks.
    pub downstream: Version,
    /// The connection's listener slot, shared with any tunnel an upgrade starts.
    pub slot: Arc<ConnSlot>,
    /// The peer's verified mesh identity: set on inbound connections that arrived over mesh
    /// mTLS, `None` for plaintext.
    pub peer: Option<Arc<SpiffeId>>,
    /// `peer` as the app reads it in `x-pilotfish-peer-identity`, made once per connection
    /// (see [`super::inbound::peer_header`]) so no request allocates it.
    pub peer_header: Option<HeaderValue>,
    /// Inbound: the telemetry edge of calls from `peer` (the server side), resolved once per
    /// connection. Outbound requests count on their endpoint's edge instead.
    pub edge: Option<Arc<EdgeStats>>,
}

/// An access-log line waiting for its request to end (with when the request arrived).
pub type PendingRecord = Option<Box<(HttpRecord, Instant)>>;

/// One request on its way through the L7 path: what every stage needs besides the request.
#[derive(Clone, Copy)]
pub struct RequestContext<'a> {
    pub conn: &'a Connection,
    /// The configuration in force when the request arrived; it keeps it to the end.
    pub snap: &'a Snapshot,
    /// When the request arrived: its duration and its deadline count from here.
    pub started: Instant,
    /// Whether the client speaks gRPC: local failures answer with a `grpc-status`.
    pub grpc: bool,
    /// What a sampled request's span learns on the way; `None` when it is not sampled.
    pub span: Option<&'a Learned>,
    /// The HTTPRoute that routed it, once one has ([`NO_ROUTE`] before, and inbound).
    pub route: RouteId,
}

impl<'a> RequestContext<'a> {
    pub fn new<B>(conn: &'a Connection, snap: &'a Snapshot, req: &Request<B>, started: Instant) -> Self {
        let grpc =
            req.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        Self { conn, snap, started, grpc, span: None, route: NO_ROUTE }
    }

    /// A request refused before reaching an endpoint (the body may already be gone: `B` is
    /// whatever is left of the request), counted on `local` and logged without a service.
    pub fn refuse<B>(
        &self,
        req: &Request<B>,
        authority: Option<&Authority>,
        e: ProxyError,
        local: &EndpointMetrics,
    ) -> Response<ProxyBody> {
        tracing::debug!(error = %e, "request refused");
        let record = self.record_for(req, authority, "");
        self.respond_local(e, local, record)
    }

    /// The sidecar's own answer to a failure: counted on `local`, logged with `record`.
    pub fn respond_local(
        &self,
        e: ProxyError,
        local: &EndpointMetrics,
        record: PendingRecord,
    ) -> Response<ProxyBody> {
        let res = e.respond(self.grpc);
        // gRPC callers get a 200 carrying grpc-status; the metric counts the failure's status.
        local.record(e.status());
        if let Some(edge) = self.edge(local) {
            edge.record(e.status().as_u16(), None, self.started.elapsed());
        }
        if let Some(entry) = record {
            let (mut r, started) = *entry;
            r.status = res.status().as_u16();
            r.error = Some(e.reason());
            r.duration_ms = access_log::millis(started.elapsed());
            access_log::http(&r);
        }
        res
    }

    /// The telemetry edge of a response counted on `metrics`: its endpoint's for the route
    /// that sent it (outbound), or the connection's caller's (inbound).
    pub fn edge<'m>(&self, metrics: &'m EndpointMetrics) -> Option<&'m Arc<EdgeStats>>
    where
        'a: 'm,
    {
        metrics.edge(self.route).or(self.conn.edge.as_ref())
    }

    /// The request's access-log line, when the access log is on or a tap samples the request;
    /// `service` empty when none was chosen.
    pub fn record_for<B>(
        &self,
        req: &Request<B>,
        authority: Option<&Authority>,
        service: &str,
    ) -> PendingRecord {
        let tapped = self.conn.shared.tap.sample(req.method(), req.uri().path());
        (self.snap.sidecar.access_log || tapped)
            .then(|| Box::new((self.record(req, authority, service, tapped), self.started)))
    }

    fn record<B>(
        &self,
        req: &Request<B>,
        authority: Option<&Authority>,
        service: &str,
        tapped: bool,
    ) -> HttpRecord {
        HttpRecord {
            direction: self.conn.direction.as_str(),
            client: self.conn.client,
            method: req.method().to_string(),
            authority: authority.map(|a| a.as_str().to_owned()).unwrap_or_default(),
            path: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            protocol: match self.conn.downstream {
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
            // Outbound, the endpoint decides (see `respond`).
            tls: Tls::of(self.conn.peer.is_some()),
            peer: self.conn.peer.clone(),
            // Outbound, the endpoint decides (see `respond`).
            server: None,
            error: None,
            logged: self.snap.sidecar.access_log,
            tap: tapped.then(|| self.conn.shared.tap.clone()),
        }
    }
}

/// The authority to route by: the URI's (HTTP/2 `:authority`, HTTP/1 absolute form) or `Host`.
pub fn authority_of<B>(req: &Request<B>) -> Result<Option<Authority>, ProxyError> {
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
