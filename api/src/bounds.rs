//! The ranges every number in a resource is validated against, so that a configuration the API
//! accepts is one the sidecar can run: no value may overflow a runtime limit (tokio's semaphore,
//! tower's retry budget, `Instant` arithmetic) or make the sidecar allocate without bound.
//!
//! The ranges are generous — far beyond any sensible setting — but finite, and the README's
//! configuration tables list them.

use crate::field::FieldError;
use crate::Duration;

/// Counts of concurrent things (connections, streams, requests) and thresholds.
pub const MAX_COUNT: u64 = 1_000_000;
/// Requests per window of a rate limit, and its burst.
pub const MAX_RATE: u64 = 1_000_000_000;
/// Retries always allowed per second (tower's budget refuses 2^31 and more).
pub const MAX_RETRIES_PER_SECOND: u64 = 1_000_000;
/// A request body kept for replay.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes of one HTTP request head.
pub const MAX_HEADER_BYTES: u64 = 1024 * 1024;
/// Headers in one HTTP/1 request (hyper sizes its parse buffer by it, per request).
pub const MAX_HEADERS: u64 = 10_000;
/// The longest timeout, interval, backoff or ejection.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The longest idle timeout of an opaque TCP connection.
pub const MAX_IDLE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest non-zero duration (the API's precision).
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// Entries of one list of an `AuthorizationPolicy` (`rules`, `from`, `to`, `paths`, `methods`,
/// `ports`): a call's evaluation walks them.
pub const MAX_POLICY_ENTRIES: u64 = 1024;

/// `value` must lie in `min..=max`.
pub fn count(field: &str, value: u64, min: u64, max: u64) -> Result<(), FieldError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("must be {min}-{max}, not {value}")))
    }
}

/// `value` must lie in `min..=max`.
pub fn duration(field: &str, value: Duration, min: Duration, max: Duration) -> Result<(), FieldError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("must be between {min} and {max}, not {value}")))
    }
}

/// A list of an `AuthorizationPolicy` holds at most [`MAX_POLICY_ENTRIES`].
pub fn entries(field: &str, len: usize) -> Result<(), FieldError> {
    if len as u64 <= MAX_POLICY_ENTRIES {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("at most {MAX_POLICY_ENTRIES} entries, not {len}")))
    }
}

/// A port something connects to: 1-65535.
pub fn port(field: &str, value: u16) -> Result<(), FieldError> {
    count(field, u64::from(value), 1, 65535)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_the_range_and_the_value() {
        assert_eq!(count("f", 5, 1, 10), Ok(()));
        let e = count("spec.x", 0, 1, 10).unwrap_err();
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("spec.x", "must be 1-10, not 0"));
        let e = duration("spec.t", Duration::from_secs(90_000), MIN_DURATION, MAX_DURATION).unwrap_err();
        assert_eq!(e.reason, "must be between 1ms and 24h, not 25h");
        assert!(port("p", 0).is_err() && port("p", 65535).is_ok());
    }

    fn doc(kind: &str, spec: &str) -> String {
        let api = if kind == "HTTPRoute" { crate::route::GATEWAY_V1 } else { "pilotfish.io/v1alpha1" };
        format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec:\n{spec}")
    }

    /// Values past what the runtime accepts, each refused with its field path; the first two
    /// used to pass validation and then panic the sidecar.
    #[test]
    fn numbers_past_the_runtime_limits_are_refused_with_their_field() {
        let policy = "  targetRef: {kind: Service, name: x}\n";
        let route = "  parentRefs: [{name: x}]\n";
        let cases = [
            ("BackendPolicy", format!("{policy}  retryBudget: {{minPerSecond: 2147483648}}\n"), "spec.retryBudget.minPerSecond"),
            ("Sidecar", "  limits: {maxConnections: 2305843009213693952}\n".into(), "spec.limits.maxConnections"),
            ("Sidecar", "  limits: {maxConnections: 1000001}\n".into(), "spec.limits.maxConnections"),
            ("Sidecar", "  limits: {maxHeaders: 18446744073709551615}\n".into(), "spec.limits.maxHeaders"),
            ("Sidecar", "  limits: {maxHeaderBytes: 4294967296}\n".into(), "spec.limits.maxHeaderBytes"),
            ("Sidecar", "  limits: {maxConcurrentStreams: 0}\n".into(), "spec.limits.maxConcurrentStreams"),
            ("Sidecar", "  limits: {maxConnections: -1}\n".into(), "spec.limits.maxConnections"),
            ("Sidecar", "  timeouts: {connect: 25h}\n".into(), "spec.timeouts.connect"),
            ("Sidecar", "  timeouts: {idle: 99999h99999h}\n".into(), "spec.timeouts.idle"),
            ("Sidecar", "  timeouts: {drain: 99999999h}\n".into(), "spec.timeouts.drain"),
            ("BackendPolicy", format!("{policy}  circuitBreaker: {{maxEjectionTime: 99999h}}\n"), "spec.circuitBreaker.maxEjectionTime"),
            ("BackendPolicy", format!("{policy}  circuitBreaker: {{consecutiveFailures: 4294967295}}\n"), "spec.circuitBreaker.consecutiveFailures"),
            ("BackendPolicy", format!("{policy}  limits: {{maxPendingRequests: 4294967295}}\n"), "spec.limits.maxPendingRequests"),
            ("BackendPolicy", format!("{policy}  retry: {{maxBackoff: 48h}}\n"), "spec.retry.maxBackoff"),
            ("BackendPolicy", format!("{policy}  retry: {{maxBodyBytes: 4294967295}}\n"), "spec.retry.maxBodyBytes"),
            ("BackendPolicy", format!("{policy}  retryBudget: {{ratio: .nan}}\n"), "spec.retryBudget.ratio"),
            ("BackendPolicy", format!("{policy}  healthCheck: {{interval: 0s}}\n"), "spec.healthCheck.interval"),
            ("BackendPolicy", format!("{policy}  healthCheck: {{unhealthyThreshold: 4294967295}}\n"), "spec.healthCheck.unhealthyThreshold"),
            ("RateLimitPolicy", format!("{policy}  perHour: 4294967295\n"), "spec.perHour"),
            ("HTTPRoute", "  parentRefs: [{name: x, port: 0}]\n".into(), "spec.parentRefs[0].port"),
            ("HTTPRoute", format!("{route}  rules: [{{backendRefs: [{{name: x, port: 0}}]}}]\n"), "spec.rules[0].backendRefs[0].port"),
            ("HTTPRoute", format!("{route}  rules: [{{timeouts: {{request: 99999h}}}}]\n"), "spec.rules[0].timeouts.request"),
            ("HTTPRoute", format!("{route}  rules: [{{retry: {{backoff: 25h}}}}]\n"), "spec.rules[0].retry.backoff"),
            (
                "HTTPRoute",
                format!("{route}  rules: [{{filters: [{{type: RequestRedirect, requestRedirect: {{port: 0}}}}]}}]\n"),
                "spec.rules[0].filters[0].requestRedirect.port",
            ),
            (
                "HTTPRoute",
                format!("{route}  rules: [{{matches: [{{path: {{type: RegularExpression, value: '(?x)/a#'}}}}]}}]\n"),
                "spec.rules[0].matches[0].path.value",
            ),
        ];
        for (kind, spec, field) in cases {
            let err = crate::parse_stream("f", &doc(kind, &spec)).unwrap_err();
            assert_eq!(err.field, field, "{spec}: {err}");
        }
        let many =
            (0..4296).map(|i| format!("{{name: b{i}, weight: 1000000}}")).collect::<Vec<_>>().join(", ");
        let err = crate::parse_stream(
            "f",
            &doc("HTTPRoute", &format!("{route}  rules: [{{backendRefs: [{many}]}}]\n")),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.rules[0].backendRefs", "{err}");
    }

    #[test]
    fn the_edges_of_each_range_are_accepted() {
        let policy = "  targetRef: {kind: Service, name: x}\n";
        let cases = [
            ("BackendPolicy", format!("{policy}  retryBudget: {{minPerSecond: 1000000, ratio: 10}}\n  limits: {{maxConnections: 1000000}}\n  circuitBreaker: {{baseEjectionTime: 24h, maxEjectionTime: 24h, maxEjectionPercent: 100}}\n")),
            ("Sidecar", "  limits: {maxConnections: 1000000, maxHeaders: 10000, maxHeaderBytes: 1048576}\n  timeouts: {idle: 720h, drain: 0s, connect: 1ms}\n".into()),
            ("RateLimitPolicy", format!("{policy}  perSecond: 1000000000\n  burst: 1\n")),
        ];
        for (kind, spec) in cases {
            crate::parse_stream("f", &doc(kind, &spec)).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
    }
}
