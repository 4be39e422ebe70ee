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
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pilotfish_api::Protocol;

use super::body::{Completion, ProxyBody};
use super::errors::ProxyError;
use super::headers;
use super::pool::Version;
use crate::access_log::{self, HttpRecord};
use crate::config::{EndpointRt, Snapshot};
use crate::metrics::{Direction, EndpointMetrics, TargetMetrics};
use crate::state::Shared;

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
}

/// The endpoint chosen for one request, and the handles for accounting it.
#[derive(Clone, Copy)]
struct Dispatch<'a> {
    endpoint: &'a Arc<EndpointRt>,
    version: Version,
    metrics: &'a TargetMetrics,
    service: &'a str,
}

impl Proxy {
    pub fn new(
        shared: Arc<Shared>,
        direction: Direction,
        client: SocketAddr,
        target: HttpTarget,
        downstream: Version,
    ) -> Self {
        Self {
            conn: Arc::new(ConnContext {
                shared,
                direction,
                client,
                target,
                downstream,
            }),
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
        let authority = authority_of(&req);
        let grpc = is_grpc(&req);

        let dispatch = match self.resolve(&snap, authority.as_deref()) {
            Ok(d) => d,
            Err((e, local)) => return self.fail(&snap, &req, e, grpc, local, started),
        };
        let record = snap.sidecar.access_log.then(|| {
            Box::new((
                self.record(&req, authority.as_deref(), dispatch.service),
                started,
            ))
        });
        let upgrade = self.downstream == Version::Http1 && headers::wants_upgrade(req.headers());
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let forwarded_for = (self.direction == Direction::Inbound).then(|| self.client.ip());
        prepare(
            &mut req,
            dispatch,
            authority.as_deref(),
            upgrade,
            forwarded_for,
        );

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
                self.shared.tracker.spawn(tunnel(downstream, upstream));
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

    #[allow(clippy::result_large_err)]
    fn resolve<'a>(
        &'a self,
        snap: &'a Snapshot,
        authority: Option<&str>,
    ) -> Result<Dispatch<'a>, (ProxyError, &'a EndpointMetrics)> {
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
                let Some(service) = snap.service_by_authority(authority) else {
                    return Err((ProxyError::NoRoute(authority.to_owned()), &snap.unrouted));
                };
                (service, service.spec.protocol(port_of(authority)))
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

    fn fail(
        &self,
        snap: &Snapshot,
        req: &Request<Incoming>,
        e: ProxyError,
        grpc: bool,
        local: &EndpointMetrics,
        started: Instant,
    ) -> Response<ProxyBody> {
        tracing::debug!(error = %e, "request refused");
        let record = snap
            .sidecar
            .access_log
            .then(|| Box::new((self.record(req, authority_of(req).as_deref(), ""), started)));
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
        local.record(res.status());
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
        authority: Option<&str>,
        service: &str,
    ) -> HttpRecord {
        HttpRecord {
            direction: self.direction.as_str(),
            client: self.client,
            method: req.method().to_string(),
            authority: authority.unwrap_or_default().to_owned(),
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
/// and the URI and version in the form the upstream protocol wants, keeping the authority the
/// caller asked for.
fn prepare(
    req: &mut Request<Incoming>,
    dispatch: Dispatch<'_>,
    authority: Option<&str>,
    upgrade: bool,
    forwarded_for: Option<std::net::IpAddr>,
) {
    headers::strip_hop_by_hop(req.headers_mut(), upgrade);
    // `100-continue` was answered to the client when its body was first read.
    req.headers_mut().remove(EXPECT);
    if let Some(peer) = forwarded_for {
        headers::append_forwarded(req.headers_mut(), peer);
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match dispatch.version {
        Version::Http1 => {
            let origin_form = path
                .parse::<Uri>()
                .unwrap_or_else(|_| Uri::from_static("/"));
            *req.uri_mut() = origin_form;
            *req.version_mut() = http::Version::HTTP_11;
            if !req.headers().contains_key(HOST) {
                if let Some(v) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
                    req.headers_mut().insert(HOST, v);
                }
            }
        }
        Version::Http2 => {
            let fallback = dispatch.endpoint.label.as_str();
            let uri = Uri::builder()
                .scheme("http")
                .authority(authority.unwrap_or(fallback))
                .path_and_query(path)
                .build()
                .unwrap_or_else(|_| Uri::from_static("/"));
            *req.uri_mut() = uri;
            *req.version_mut() = http::Version::HTTP_2;
            req.headers_mut().remove(HOST);
        }
    }
}

async fn tunnel(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(downstream, upstream) {
        Ok((down, up)) => {
            let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
            if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
    }
}

fn authority_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    req.headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn port_of(authority: &str) -> Option<u16> {
    let (_, port) = authority.rsplit_once(':')?;
    port.parse().ok()
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
