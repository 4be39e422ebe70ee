//! The outbound request path, from the local app to another service, as three named stages:
//!
//! 1. [`route`] — the service (by authority or by connection), its rate limit, the route rule
//!    the request matches, the rule's rate limit and filters, the service's `maxRequests`;
//! 2. [`attempts`] — the retry loop: the replay buffer, the traffic split, backoff, the retry
//!    budget and the route's deadline;
//! 3. [`endpoint`] — one attempt: the balancer, the circuit breaker's admission, the per-try
//!    timeout, the send over a pooled connection, and the outcome's bookkeeping.
//!
//! [`to_service`] runs them top to bottom; each hands the next a typed result (`Routed`,
//! `Admitted`, `Attempted`) and the [`RequestContext`] carries what all of them read.
//!
//! Why plain async functions and not tower layers (linkerd2-proxy's way): a layer per stage
//! would own its request type and box or wrap the future of the one below; here the stages
//! share borrowed state (the snapshot a request loaded once, the route rule it matched, the
//! endpoint a retry must avoid) and the retry loop re-enters the endpoint stage with a rebuilt
//! request and a new backend choice. Plain functions keep that as borrows: no `Service` clones,
//! no extra `Arc`s or boxed stage futures per request (only the outgoing request is boxed, once
//! per attempt, to keep the futures small), and one function to read top to bottom. A new
//! stage is a function (or a step within one) in this folder, called in order below.
//!
//! Each stage's future lives inside the one above it and is moved into it, so its size is paid
//! for at every level (`benches/instructions.sh` measures it): a stage is an `async` block that
//! does not copy its arguments, takes large values by reference or in a `Box` (the outgoing
//! request), and boxes the futures of rare work (opening a connection) rather than hold them.

pub mod attempts;
pub mod endpoint;
pub mod route;
#[cfg(test)]
mod tests;

use std::future::Future;

use http::{Request, Response};
use hyper::body::Incoming;

use self::attempts::{Answered, Failed};
use self::route::Unrouted;
use crate::http::body::ProxyBody;
use crate::http::context::RequestContext;
use crate::http::headers;
use crate::http::pool::Version;
use crate::http::respond::{respond, Downstream};

/// Proxies `req` to the service it is for, or answers it locally.
///
/// An `async` block, not an `async fn` (as [`attempts::run`] and the proxy's handler): an
/// `async fn` copies its arguments into its future, which would then hold the request twice
/// (rust-lang/rust#62958), and each stage's future is moved into the one above it.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice (rust-lang/rust#62958)"
)]
pub fn to_service<'a>(
    cx: RequestContext<'a>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Response<ProxyBody>> + Send + 'a {
    async move {
        let routed = match route::route(&cx, &mut req) {
            Ok(routed) => routed,
            Err(Unrouted::Refused { error, authority, local }) => {
                return cx.refuse(&req, authority.as_ref(), error, local)
            }
            Err(Unrouted::Redirected(res)) => return *res,
        };
        if let Some(span) = cx.span {
            span.routed(&routed.service.key, &routed.rule.route);
        }
        // From here on its telemetry counts on the route's edges.
        let cx = RequestContext { route: routed.rule.route_id, ..cx };
        let record = cx.record_for(&req, routed.authority.as_ref(), &routed.service.key);
        let upgrade = cx.conn.downstream == Version::Http1 && headers::wants_upgrade(req.headers());
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (parts, incoming) = req.into_parts();
        match attempts::run(&cx, &routed, parts, incoming, upgrade).await {
            Ok(Answered { mut answer, endpoint, metrics }) => {
                if let Some(span) = cx.span {
                    span.endpoint(endpoint.conns.identity());
                }
                if let Some(mods) = &routed.rule.response_headers {
                    mods.apply(answer.0.headers_mut());
                }
                headers::add_rate_limit_headers(answer.0.headers_mut(), &routed.limited);
                let mut res = respond(&cx, answer, endpoint, metrics, Downstream { record, on_upgrade });
                if let ProxyBody::Upstream { done, .. } = res.body_mut() {
                    done.hold(routed.in_flight);
                }
                res
            }
            Err(Failed::Body { parts, error }) => {
                let req = Request::from_parts(*parts, ());
                cx.refuse(&req, routed.authority.as_ref(), error, &routed.service.local)
            }
            Err(Failed::Local { error, local }) => cx.respond_local(error, local, record),
        }
    }
}
