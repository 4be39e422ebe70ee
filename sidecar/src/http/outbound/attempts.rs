//! Stage 2, attempts: the retry loop. Each attempt picks a backend by the rule's weights and
//! hands the request to the endpoint stage; what comes back decides whether to try again.
//!
//! A request may be retried when the route asks for it, the request is idempotent (or keyed,
//! or gRPC under a gRPC retry policy), and its body fits the replay buffer; a request that
//! never went out comes back from the pool and is retried for any method and body. Every retry
//! waits out an exponential backoff with full jitter, withdraws from the service's retry budget
//! (so retries never amplify an outage), and must fit before the route's deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::Request;
use hyper::body::Incoming;
use pilotfish_api::Protocol;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use super::endpoint::{self, TryLimits};
use super::route::Routed;
use crate::http::context::RequestContext;
use crate::http::errors::ProxyError;
use crate::http::next_hop::{prepare, rebuild, take_parts};
use crate::http::orig_proto;
use crate::http::pool::Version;
use crate::http::request_body::{keep_for_replay, KeepError, Keeping, RequestBody};
use crate::http::respond::Answer;
use crate::resilience::retry::{self, Conditions, Outcome, Reason};
use crate::snapshot::route::{RetryRule, Rule};
use crate::telemetry::metrics::{EndpointMetrics, TargetMetrics};
use crate::upstream::endpoint::EndpointRt;
use crate::upstream::service::ServiceRt;

/// Retries of a request whose connection failed (it never went out), when the route allows
/// fewer.
const DEFAULT_CONNECT_RETRIES: u32 = 2;

/// The answer of the last attempt, with where it came from.
pub struct Answered<'s> {
    pub answer: Answer,
    pub endpoint: &'s EndpointRt,
    /// The backend service's metrics (the rule may split traffic over several).
    pub metrics: &'s TargetMetrics,
}

/// A request the attempts stage answers itself.
pub enum Failed<'s> {
    /// Its body could not be kept for replay: refused like a request no service took, with
    /// what is left of the request (boxed: this is rare, and every request moves this result).
    Body { parts: Box<Parts>, error: ProxyError },
    /// No attempt got an answer: the failure, counted on `local`.
    Local { error: ProxyError, local: &'s EndpointMetrics },
}

/// How one request may be retried, fixed before its first attempt.
pub struct Plan<'s> {
    /// Retries after an attempt that went out: the route's, when they apply and the body was
    /// kept for replay.
    pub max_retries: u32,
    /// Retries after a failed connect (nothing went out).
    pub connect_retries: u32,
    /// Whether the request may be sent twice; if not, only a gRPC status listed for retries or
    /// a failed connect (the server said or did nothing) is retried.
    pub idempotent: bool,
    /// The route's retriable status codes (none when its retry does not apply).
    pub codes: &'s [u16],
    pub conditions: &'s Conditions,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub deadline: Option<Instant>,
    pub budget: &'s TpsBudget,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at `at`, for `reason`.
    Retry { reason: Reason, at: Instant },
    /// A retry was due but the budget is spent: answer with this attempt.
    BudgetSpent,
    /// Answer with this attempt.
    Answer,
}

impl Plan<'_> {
    /// After attempt number `retries` ended with `outcome` at `finished`; `resendable` when the
    /// request can go out again (kept for replay, or back unsent).
    pub fn after(&self, outcome: Outcome, retries: u32, resendable: bool, finished: Instant) -> Next {
        let may_retry = match outcome {
            Outcome::ConnectFailure => retries < self.connect_retries && resendable,
            _ => retries < self.max_retries,
        };
        let reason = may_retry
            .then(|| self.conditions.reason(outcome, self.codes))
            .flatten()
            .filter(|r| self.idempotent || matches!(r, Reason::Grpc | Reason::ConnectFailure));
        let Some(reason) = reason else { return Next::Answer };
        let pause = retry::backoff(retries, self.base_backoff, self.max_backoff);
        // No time left for another attempt: answer with what this one got.
        if self.deadline.is_some_and(|d| finished + pause >= d) {
            return Next::Answer;
        }
        if !self.budget.withdraw() {
            return Next::BudgetSpent;
        }
        Next::Retry { reason, at: finished + pause }
    }
}

/// The route's retry, if it applies to a request: idempotent, or gRPC under a gRPC retry
/// policy.
fn retry_for<'s>(service: &ServiceRt, rule: &'s Rule, idempotent: bool, grpc: bool) -> Option<&'s RetryRule> {
    let grpc_retries = grpc && !service.policy.conditions.grpc_codes.is_empty();
    rule.retry.as_ref().filter(|_| idempotent || grpc_retries)
}

/// Attempts the request (its head `parts`, which a retry copies, and its body `incoming`) until
/// an attempt is answered or the plan says stop (an `async` block for the reason given at
/// [`super::to_service`]).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice (rust-lang/rust#62958)"
)]
pub fn run<'a, 's: 'a>(
    cx: &'a RequestContext<'s>,
    routed: &'a Routed<'s>,
    mut parts: Parts,
    incoming: Incoming,
    upgrade: bool,
) -> impl Future<Output = Result<Answered<'s>, Failed<'s>>> + Send + 'a {
    async move {
        let (service, rule) = (routed.service, routed.rule);
        let deadline = rule.request_timeout.map(|t| (Instant::from_std(cx.started) + t, t));
        let idempotent = retry::is_idempotent(&parts.method, &parts.headers);
        let retry = retry_for(service, rule, idempotent, cx.grpc);

        // Retries need the body again: a request that may be retried keeps a body that fits the
        // replay buffer. Reading it is bounded even when the route sets no timeout: a stalled body
        // must not hold its place under maxRequests for ever.
        let mut body = None;
        let body_timeout = cx.snap.sidecar.timeouts.request_body.get();
        let body_deadline = Instant::from_std(cx.started) + body_timeout;
        let read_until = deadline.map_or(body_deadline, |(d, _)| d.min(body_deadline));
        let replay = match retry {
            Some(_) => match keep_for_replay(incoming, service.policy.max_body_bytes, read_until).await {
                Ok(Keeping::Kept(kept)) => Some(kept),
                Ok(Keeping::TooLarge(streaming)) => {
                    body = Some(streaming);
                    None
                }
                Err(KeepError::Timeout) => {
                    let error = match deadline {
                        Some((d, timeout)) if d <= body_deadline => ProxyError::Timeout(timeout),
                        _ => ProxyError::RequestBodyTimeout(body_timeout),
                    };
                    return Err(Failed::Body { parts: Box::new(parts), error });
                }
                Err(KeepError::Body(e)) => {
                    let error = ProxyError::RequestBody(e.to_string());
                    return Err(Failed::Body { parts: Box::new(parts), error });
                }
            },
            None => {
                body = Some(RequestBody::streaming(incoming));
                None
            }
        };
        let plan = Plan {
            max_retries: match (&replay, retry) {
                (Some(_), Some(r)) => r.attempts,
                _ => 0,
            },
            // A request that never went out comes back from the pool, so a failed connect is
            // retried for any method and body: as often as the route allows, and at least
            // DEFAULT_CONNECT_RETRIES times.
            connect_retries: rule.retry.as_ref().map_or(0, |r| r.attempts).max(DEFAULT_CONNECT_RETRIES),
            idempotent,
            codes: retry.map_or(&[][..], |r| &r.codes),
            conditions: &service.policy.conditions,
            base_backoff: retry.and_then(|r| r.backoff).unwrap_or(service.policy.base_backoff),
            max_backoff: service.policy.max_backoff,
            deadline: deadline.map(|(d, _)| d),
            budget: &service.budget,
        };
        let limits = TryLimits { per_try: rule.try_timeout, deadline };

        service.budget.deposit();
        let mut retries = 0;
        let mut avoid: Option<SocketAddr> = None;
        loop {
            let backend_key = rule.pick_backend();
            let Some(backend) = cx.snap.service(backend_key) else {
                let error = ProxyError::UnknownBackend(backend_key.to_string());
                return Err(Failed::Local { error, local: &service.local });
            };
            let admitted = match endpoint::admit(backend, avoid) {
                Ok(admitted) => admitted,
                Err(error) => return Err(Failed::Local { error, local: &backend.local }),
            };
            let version = match (upgrade, routed.port.protocol(backend)) {
                (true, _) => Version::Http1,
                (false, Some(Protocol::Http)) => Version::Http1,
                (false, Some(Protocol::Http2 | Protocol::Grpc)) => Version::Http2,
                (false, _) => cx.conn.downstream,
            };
            let attempt_body = match (&replay, body.take()) {
                (Some(kept), _) => RequestBody::replay(kept),
                (None, Some(streaming)) => streaming,
                (None, None) => {
                    unreachable!(
                        "only an unsent request, which brings its body back, is retried without replay"
                    )
                }
            };
            // Boxed: the request moves down through the endpoint stage into the pool's future.
            let mut out = Box::new(match &replay {
                Some(_) => rebuild(&parts, attempt_body),
                None => Request::from_parts(take_parts(&mut parts), attempt_body),
            });
            // A meshed endpoint gets HTTP/2 whatever the app speaks (many requests on one
            // connection), marked with the version its app gets; an upgrade keeps HTTP/1.1 on a
            // connection of its own.
            let wire = match admitted.endpoint.conns.identity() {
                Some(_) if !upgrade => Version::Http2,
                _ => version,
            };
            prepare(&mut out, wire, admitted.endpoint, routed.authority.clone(), upgrade, None);
            orig_proto::mark(out.headers_mut(), version, wire);

            let mut attempted = match admitted.send(cx, backend, wire, out, limits).await {
                Ok(attempted) => attempted,
                Err(error) => return Err(Failed::Local { error, local: &backend.local }),
            };
            if let (Some(req), None) = (attempted.unsent.take(), &replay) {
                let (back, streaming) = (*req).into_parts();
                parts = back;
                body = Some(streaming);
            }
            let resendable = replay.is_some() || body.is_some();
            match plan.after(attempted.outcome, retries, resendable, attempted.finished) {
                Next::Retry { reason, at } => {
                    service.resilience.retried(reason);
                    tokio::time::sleep_until(at).await;
                    retries += 1;
                    avoid = Some(attempted.endpoint.addr);
                    continue;
                }
                Next::BudgetSpent => service.resilience.budget_exhausted.inc(),
                Next::Answer => {}
            }
            let endpoint: &'s Arc<EndpointRt> = attempted.endpoint;
            return match attempted.result {
                Ok(answer) => Ok(Answered { answer, endpoint, metrics: &backend.metrics }),
                Err(error) => {
                    tracing::debug!(endpoint = %endpoint.addr, error = %error, "request failed");
                    Err(Failed::Local { error, local: &endpoint.metrics })
                }
            };
        }
    }
}
