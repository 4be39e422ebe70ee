//! What happened to an attempt, whether that is worth another attempt, and how long to wait.
//!
//! Retries are bounded three ways: the route's `attempts`, a per-service budget (tower's
//! `TpsBudget`: retries stay under `ratio` of requests plus `minPerSecond`, so a failing backend
//! sees at most ~1.2× the load instead of `attempts`× — retries never amplify an outage), and the
//! route's overall request timeout.

use std::time::Duration;

use pilotfish_api::policy::{FailureKind, RetryOn};

/// The outcome of one attempt, as far as retries and circuit breaking care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response: its status, and its `grpc-status` when the response carries one in its
    /// headers (a trailers-only gRPC response: how servers report failures before any message).
    Response {
        status: u16,
        grpc: Option<u8>,
    },
    ConnectFailure,
    Reset,
    Timeout,
    /// An opaque TCP connection was established (the endpoint took it).
    Connected,
}

/// Why an attempt is retried: the `reason` label of `pilotfish_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Status,
    Grpc,
    ConnectFailure,
    Reset,
    Timeout,
}

impl Reason {
    pub const ALL: [Reason; 5] = [Self::Status, Self::Grpc, Self::ConnectFailure, Self::Reset, Self::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Grpc => "grpc-status",
            Self::ConnectFailure => "connect-failure",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
        }
    }
}

/// Which outcomes are retried: the route's status codes plus the service's `retryOn` and gRPC
/// codes.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub retry_on: Vec<RetryOn>,
    pub grpc_codes: Vec<u8>,
}

impl Conditions {
    pub fn reason(&self, outcome: Outcome, route_codes: &[u16]) -> Option<Reason> {
        let on = |c: RetryOn| self.retry_on.contains(&c);
        match outcome {
            Outcome::Response { grpc: Some(code), .. } if self.grpc_codes.contains(&code) => {
                Some(Reason::Grpc)
            }
            Outcome::Response { status, .. } => {
                let listed = on(RetryOn::RetriableStatusCodes) && route_codes.contains(&status);
                let server_error = on(RetryOn::ServerError) && (500..600).contains(&status);
                let gateway = on(RetryOn::GatewayError) && matches!(status, 502..=504);
                (listed || server_error || gateway).then_some(Reason::Status)
            }
            Outcome::ConnectFailure => on(RetryOn::ConnectFailure).then_some(Reason::ConnectFailure),
            Outcome::Reset => on(RetryOn::Reset).then_some(Reason::Reset),
            // A per-try timeout is retried when the route has one; the route timeout is not.
            Outcome::Timeout => Some(Reason::Timeout),
            Outcome::Connected => None,
        }
    }
}

/// What an outcome means to the endpoint's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The endpoint answered: a probe closes the breaker, the failure count resets.
    Success,
    /// One of the configured failures.
    Failure,
    /// Neither (a kind of error the policy does not count): nothing changes.
    Neutral,
}

/// The breaker's verdict on an outcome. gRPC UNAVAILABLE (14) counts as a 503.
pub fn verdict(outcome: Outcome, failure_on: &[FailureKind]) -> Verdict {
    let on = |k: FailureKind| failure_on.contains(&k);
    let failed = match outcome {
        Outcome::Response { status, grpc } => {
            let status = if grpc == Some(14) { 503 } else { status };
            let failed = (on(FailureKind::ServerError) && (500..600).contains(&status))
                || (on(FailureKind::GatewayError) && matches!(status, 502..=504));
            return if failed { Verdict::Failure } else { Verdict::Success };
        }
        Outcome::Connected => return Verdict::Success,
        Outcome::ConnectFailure => on(FailureKind::ConnectFailure),
        Outcome::Reset => on(FailureKind::Reset),
        Outcome::Timeout => on(FailureKind::Timeout),
    };
    if failed {
        Verdict::Failure
    } else {
        Verdict::Neutral
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, base × 2^retry))`, where
/// `retry` is 0 before the first retry.
pub fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX)).min(max);
    let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(if nanos == 0 { 0 } else { fastrand::u64(0..nanos) })
}

/// Idempotent methods (RFC 9110 §9.2.2) may be retried; others only with an `Idempotency-Key`.
pub fn is_idempotent(method: &http::Method, headers: &http::HeaderMap) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key("idempotency-key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_combine_route_codes_and_policy() {
        let c = Conditions {
            retry_on: vec![RetryOn::ConnectFailure, RetryOn::RetriableStatusCodes],
            grpc_codes: vec![14],
        };
        let resp = |status, grpc| Outcome::Response { status, grpc };
        assert_eq!(c.reason(resp(503, None), &[503]), Some(Reason::Status));
        assert_eq!(c.reason(resp(500, None), &[503]), None);
        assert_eq!(c.reason(resp(200, Some(14)), &[]), Some(Reason::Grpc));
        assert_eq!(c.reason(resp(200, Some(5)), &[]), None);
        assert_eq!(c.reason(Outcome::ConnectFailure, &[]), Some(Reason::ConnectFailure));
        assert_eq!(c.reason(Outcome::Reset, &[]), None);
        let gw = Conditions { retry_on: vec![RetryOn::GatewayError], grpc_codes: vec![] };
        assert_eq!(gw.reason(resp(504, None), &[]), Some(Reason::Status));
        assert_eq!(gw.reason(resp(500, None), &[]), None);
    }

    #[test]
    fn verdicts_for_the_breaker() {
        let only_gateway = [FailureKind::GatewayError];
        let resp = |status, grpc| Outcome::Response { status, grpc };
        assert_eq!(verdict(resp(503, None), &only_gateway), Verdict::Failure);
        assert_eq!(verdict(resp(500, None), &only_gateway), Verdict::Success);
        assert_eq!(verdict(resp(200, Some(14)), &only_gateway), Verdict::Failure, "gRPC UNAVAILABLE");
        assert_eq!(verdict(Outcome::ConnectFailure, &only_gateway), Verdict::Neutral);
        assert_eq!(verdict(Outcome::Timeout, &[FailureKind::Timeout]), Verdict::Failure);
    }

    #[test]
    fn backoff_is_jittered_under_an_exponential_ceiling() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        for retry in 0..8 {
            let ceiling = (base * 2u32.pow(retry)).min(max);
            for _ in 0..100 {
                assert!(backoff(retry, base, max) < ceiling);
            }
        }
        assert!(backoff(100, base, max) < max);
    }

    #[test]
    fn idempotency() {
        let h = http::HeaderMap::new();
        assert!(is_idempotent(&http::Method::GET, &h));
        assert!(is_idempotent(&http::Method::PUT, &h));
        assert!(!is_idempotent(&http::Method::POST, &h));
        let mut keyed = http::HeaderMap::new();
        keyed.insert("idempotency-key", "abc".parse().unwrap());
        assert!(is_idempotent(&http::Method::POST, &keyed));
    }
}
