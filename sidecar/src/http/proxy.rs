//! The L7 path as a `tower::Service` per downstream connection: each request gets its
//! correlation headers, then goes to the local app ([`super::inbound`]) or through the
//! outbound stages ([`super::outbound`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::context::{Connection, HttpTarget, RequestContext};
use super::correlation;
use super::errors::ERROR_HEADER;
use super::inbound::to_app;
use super::outbound::to_service;
use crate::telemetry::trace::HopSpan;

/// Handles the requests of one downstream connection.
#[derive(Clone)]
pub struct Proxy {
    conn: Arc<Connection>,
}

impl Proxy {
    pub fn new(conn: Connection) -> Self {
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
        Box::pin(handle(self.conn.clone(), req))
    }
}

/// One request, to the app or through the outbound stages (an `async` block for the reason
/// given at [`to_service`]; this future is the one boxed per request).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice (rust-lang/rust#62958)"
)]
fn handle(
    conn: Arc<Connection>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send {
    async move {
        let started = Instant::now();
        let snap = conn.shared.snapshot.load_full();
        let request_id = correlation::request_id(req.headers_mut());
        let tracing = conn.shared.tracing.get();
        let hop = correlation::next_hop(req.headers_mut(), tracing.map(|t| t.sampling()));
        let span = hop.map(|hop| HopSpan::start(hop, conn.direction, &req));
        let mut cx = RequestContext::new(&conn, &snap, &req, started);
        cx.span = span.as_ref().map(|s| &s.learned);
        let mut res = match &conn.target {
            HttpTarget::App(adhoc) => to_app(cx, adhoc.as_ref(), req).await,
            _ => to_service(cx, req).await,
        };
        if let (Some(span), Some(tracing)) = (span, tracing) {
            span.end(tracing, res.status(), res.headers().get(ERROR_HEADER), conn.peer.as_deref());
        }
        res.headers_mut().entry(&correlation::REQUEST_ID).or_insert(request_id);
        Ok(res)
    }
}
