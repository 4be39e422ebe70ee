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
use pilotfish_api::Protocol;

use super::body::{Completion, ProxyBody};
use super::errors::ProxyError;
use super::headers;
use super::pool::Version;
use crate::access_log::{self, HttpRecord};
use crate::config::{EndpointRt, Snapshot};
use crate::listen::ConnSlot;
use crate::metrics::{Direction, EndpointMetrics, TargetMetrics};
use crate::state::Shared;
use crate::tcp;

/// Where the requests of one connection go.
#[derive(Clone)]
pub enum HttpTarget {
    /// The explicit outbound listener: the service named by `Host` / `:authority`.
    ByAuthority,
    /// A known service (per-service local port, or transparent `ADDRESS:PORT`).
    Service {
        key: Arc<str>,
        protocol: Option<Protocol>,
    },
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

/// The endpoint chosen for one request, and the handles for accounting it.
#[derive(Clone, Copy)]
struct Dispatch<'a> {
    endpoint: &'a Arc<EndpointRt>,
    version: Version,
    metrics: &'a TargetMetrics,
    service: &'a str,
}

type Refusal<'a> = (ProxyError, &'a EndpointMetrics);

impl Proxy {
    pub fn new(
        shared: Arc<Shared>,
        direction: Direction,
        client: SocketAddr,
        target: HttpTarget,
        downstream: Version,
        slot: Arc<ConnSlot>,
    ) -> Self {
        let conn = ConnContext {
            shared,
            direction,
            client,
            target,
            downstream,
            slot,
        };
        Self {
            conn: Arc::new(conn),
        }
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
        let grpc = is_grpc(&req);
        let authority = match authority_of(&req) {
            Ok(authority) => authority,
            Err(e) => return self.fail(&snap, &req, None, e, grpc, &snap.unrouted, started),
        };
        if req.method() == Method::CONNECT {
            let e = ProxyError::ConnectUnsupported;
            return self.fail(
                &snap,
                &req,
                authority.as_ref(),
                e,
                grpc,
                &snap.unrouted,
                started,
            );
        }
        let mut dispatch = match self.resolve(&snap, authority.as_ref()) {
            Ok(d) => d,
            Err((e, local)) => {
                return self.fail(&snap, &req, authority.as_ref(), e, grpc, local, started)
            }
        };
        let record = snap.sidecar.access_log.then(|| {
            Box::new((
                self.record(&req, authority.as_ref(), dispatch.service),
                started,
            ))
        });
        let upgrade = self.downstream == Version::Http1 && headers::wants_upgrade(req.headers());
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        if upgrade {
            // Protocol switches (WebSocket) exist only in HTTP/1.1.
            dispatch.version = Version::Http1;
        }
        let forwarded_for = (self.direction == Direction::Inbound).then(|| self.client.ip());
        prepare(&mut req, dispatch, authority, upgrade, forwarded_for);

        let connect_timeout = snap.sidecar.timeouts.connect.get();
        let endpoint = dispatch.endpoint;
        let (mut res, conn) = match endpoint
            .conns
            .send(dispatch.version, req, connect_timeout)
            .await
        {
            Ok(sent) => sent,
            Err(e) => {
                let e = ProxyError::from(e);
                tracing::debug!(endpoint = %endpoint.addr, error = %e, "request failed");
                return self.respond_local(e, grpc, &endpoint.metrics, record);
            }
        };
        dispatch
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        endpoint.metrics.record(res.status());

        let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(res.headers_mut(), switching && upgrade);
        let conn = if switching {
            if let Some(downstream) = on_upgrade {
                let upstream = hyper::upgrade::on(&mut res);
                let tunnel = Tunnel {
                    slot: self.slot.clone(),
                    metrics: dispatch.metrics.clone(),
                    idle: snap.sidecar.timeouts.idle.get(),
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

    fn resolve<'a>(
        &'a self,
        snap: &'a Snapshot,
        authority: Option<&Authority>,
    ) -> Result<Dispatch<'a>, Refusal<'a>> {
        let (service, declared) = match &self.target {
            HttpTarget::App(adhoc) => {
                let Some(inbound) = &snap.inbound else {
                    return Err((ProxyError::NoRoute("inbound".into()), &snap.unrouted));
                };
                return Ok(Dispatch {
                    endpoint: adhoc.as_ref().unwrap_or(&inbound.app),
                    version: self.downstream,
                    metrics: &inbound.metrics,
                    service: &snap.name,
                });
            }
            HttpTarget::ByAuthority => {
                let Some(authority) = authority else {
                    return Err((ProxyError::MissingAuthority, &snap.unrouted));
                };
                let Some(service) = snap.service_by_authority(authority.as_str()) else {
                    let e = ProxyError::NoRoute(authority.as_str().to_owned());
                    return Err((e, &snap.unrouted));
                };
                (service, service.spec.protocol(authority.port_u16()))
            }
            HttpTarget::Service { key, protocol } => match snap.service(key) {
                Some(service) => (service, protocol.or_else(|| service.spec.protocol(None))),
                None => return Err((ProxyError::NoRoute(key.to_string()), &snap.unrouted)),
            },
        };
        let Some(endpoint) = service.pick() else {
            return Err((
                ProxyError::NoEndpoints(service.key.to_string()),
                &service.local,
            ));
        };
        let version = match declared {
            Some(Protocol::Http) => Version::Http1,
            Some(Protocol::Http2 | Protocol::Grpc) => Version::Http2,
            Some(Protocol::Tcp) | None => self.downstream,
        };
        Ok(Dispatch {
            endpoint,
            version,
            metrics: &service.metrics,
            service: &service.key,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn fail(
        &self,
        snap: &Snapshot,
        req: &Request<Incoming>,
        authority: Option<&Authority>,
        e: ProxyError,
        grpc: bool,
        local: &EndpointMetrics,
        started: Instant,
    ) -> Response<ProxyBody> {
        tracing::debug!(error = %e, "request refused");
        let record = snap
            .sidecar
            .access_log
            .then(|| Box::new((self.record(req, authority, ""), started)));
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

    fn record(
        &self,
        req: &Request<Incoming>,
        authority: Option<&Authority>,
        service: &str,
    ) -> HttpRecord {
        HttpRecord {
            direction: self.direction.as_str(),
            client: self.client,
            method: req.method().to_string(),
            authority: authority.map(|a| a.as_str().to_owned()).unwrap_or_default(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
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
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            error: None,
        }
    }
}

/// Rewrites the request for the next hop: hop-by-hop fields out, the peer recorded (inbound),
/// and the URI, version and `Host` in the form the upstream protocol wants, carrying the
/// authority the request was routed by.
fn prepare(
    req: &mut Request<Incoming>,
    dispatch: Dispatch<'_>,
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
    let authority = authority.unwrap_or_else(|| {
        Authority::try_from(dispatch.endpoint.label.as_str()).expect("IP:PORT is an authority")
    });
    match dispatch.version {
        Version::Http1 => {
            parts.scheme = None;
            parts.authority = None;
            *req.version_mut() = http::Version::HTTP_11;
            let host = HeaderValue::from_str(authority.as_str())
                .expect("an authority is a valid header value");
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
                let counters = (
                    &self.metrics.tcp_client_to_server,
                    &self.metrics.tcp_server_to_client,
                );
                let (_, result) =
                    tcp::splice(TokioIo::new(down), TokioIo::new(up), self.idle, counters).await;
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
        Some(host) => Authority::try_from(host.as_bytes()).map(Some).map_err(|_| {
            ProxyError::InvalidHost(String::from_utf8_lossy(host.as_bytes()).into_owned())
        }),
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
