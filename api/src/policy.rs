//! Policies attached to a Service or an HTTPRoute by `targetRef` (the Gateway API
//! policy-attachment convention): `BackendPolicy` (load balancing, circuit breaking, limits,
//! retry budget and conditions, active health checks) and `RateLimitPolicy`.

use serde::{Deserialize, Serialize};

use crate::field::FieldError;
use crate::{bounds, Duration};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service`, or for a RateLimitPolicy also `HTTPRoute`.
    #[schema(pattern = "^(Service|HTTPRoute)$")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendPolicySpec {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    #[serde(default)]
    pub limits: ServiceLimits,
    #[serde(default)]
    pub retry_budget: RetryBudget,
    /// Our extensions to a route's `retry`: what else counts as retriable, and backoff bounds.
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency × outstanding requests.
    #[default]
    P2cEwma,
    RoundRobin,
    /// Power of two choices over outstanding requests.
    LeastRequests,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct CircuitBreaker {
    #[serde(default = "five")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub consecutive_failures: u32,
    #[serde(default = "thirty_seconds")]
    pub base_ejection_time: Duration,
    #[serde(default = "five_minutes")]
    pub max_ejection_time: Duration,
    #[serde(default = "fifty")]
    #[schema(maximum = 100)]
    pub max_ejection_percent: u32,
    /// What counts as a failure: `5xx` (any), `gateway-error` (502/503/504), `connect-failure`,
    /// `reset`, `timeout`.
    #[serde(default = "default_failure_on")]
    pub failure_on: Vec<FailureKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    #[serde(rename = "5xx")]
    ServerError,
    GatewayError,
    ConnectFailure,
    Reset,
    Timeout,
}

fn default_failure_on() -> Vec<FailureKind> {
    vec![FailureKind::ServerError, FailureKind::ConnectFailure, FailureKind::Reset, FailureKind::Timeout]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct ServiceLimits {
    #[serde(default = "many")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_connections: u32,
    #[serde(default = "many")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_pending_requests: u32,
    #[serde(default = "many")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_requests: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct RetryBudget {
    /// Retries allowed as a fraction of requests.
    #[serde(default = "twenty_percent")]
    #[schema(minimum = 0, maximum = 10)]
    pub ratio: f64,
    /// Retries always allowed per second, however few the requests.
    #[serde(default = "ten")]
    #[schema(maximum = 1_000_000)]
    pub min_per_second: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct RetryPolicy {
    /// Conditions besides the route's status codes: `5xx`, `gateway-error`, `connect-failure`,
    /// `reset`, `retriable-status-codes`.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// gRPC status names that are retried (`unavailable`, `resource-exhausted`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = grpc_code_names)]
    pub grpc_codes: Vec<String>,
    #[serde(default = "base_backoff")]
    pub base_backoff: Duration,
    #[serde(default = "max_backoff")]
    pub max_backoff: Duration,
    /// Request bodies up to this size are kept so an attempt can be replayed.
    #[serde(default = "sixty_four_kib")]
    #[schema(maximum = 67_108_864)]
    pub max_body_bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    #[serde(rename = "5xx")]
    ServerError,
    GatewayError,
    ConnectFailure,
    Reset,
    RetriableStatusCodes,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::RetriableStatusCodes]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default = "healthz")]
    #[schema(default = healthz, pattern = "^/")]
    pub path: String,
    #[serde(default = "five_seconds")]
    #[schema(default = five_seconds)]
    pub interval: Duration,
    #[serde(default = "one_second")]
    #[schema(default = one_second)]
    pub timeout: Duration,
    #[serde(default = "two")]
    #[schema(default = two, minimum = 1, maximum = 1_000_000)]
    pub healthy_threshold: u32,
    #[serde(default = "three")]
    #[schema(default = three, minimum = 1, maximum = 1_000_000)]
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicySpec {
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub per_hour: Option<u32>,
    /// Requests allowed at once on top of the steady rate of the shortest window (default: that
    /// window's whole quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub burst: Option<u32>,
    /// Separate budgets per key; omitted, one budget for all callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitKey {
    /// Budget per value of this request header (requests without it share one budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
    pub header: Option<String>,
    /// Budget per calling peer (its mTLS identity; its IP address until mTLS is on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peer: bool,
}

fn five() -> u32 {
    5
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn ten() -> u32 {
    10
}
fn fifty() -> u32 {
    50
}
fn many() -> u32 {
    1024
}
fn twenty_percent() -> f64 {
    0.2
}
fn sixty_four_kib() -> u32 {
    64 * 1024
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn base_backoff() -> Duration {
    Duration::from_millis(25)
}
fn max_backoff() -> Duration {
    Duration::from_millis(250)
}
fn healthz() -> String {
    "/healthz".to_owned()
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            consecutive_failures: five(),
            base_ejection_time: thirty_seconds(),
            max_ejection_time: five_minutes(),
            max_ejection_percent: fifty(),
            failure_on: default_failure_on(),
        }
    }
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self { max_connections: many(), max_pending_requests: many(), max_requests: many() }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self { ratio: twenty_percent(), min_per_second: ten() }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retry_on: default_retry_on(),
            grpc_codes: Vec::new(),
            base_backoff: base_backoff(),
            max_backoff: max_backoff(),
            max_body_bytes: sixty_four_kib(),
        }
    }
}

/// gRPC status names, as `retryOn`-style kebab-case, and their codes.
pub const GRPC_CODES: [(&str, u8); 16] = [
    ("cancelled", 1),
    ("unknown", 2),
    ("invalid-argument", 3),
    ("deadline-exceeded", 4),
    ("not-found", 5),
    ("already-exists", 6),
    ("permission-denied", 7),
    ("resource-exhausted", 8),
    ("failed-precondition", 9),
    ("aborted", 10),
    ("out-of-range", 11),
    ("unimplemented", 12),
    ("internal", 13),
    ("unavailable", 14),
    ("data-loss", 15),
    ("unauthenticated", 16),
];

impl BackendPolicySpec {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.target_ref.kind != "Service" {
            return Err(FieldError::new("spec.targetRef.kind", "a BackendPolicy attaches to a Service"));
        }
        let cb = &self.circuit_breaker;
        let failures = u64::from(cb.consecutive_failures);
        bounds::count("spec.circuitBreaker.consecutiveFailures", failures, 1, bounds::MAX_COUNT)?;
        bounds::count("spec.circuitBreaker.maxEjectionPercent", cb.max_ejection_percent.into(), 0, 100)?;
        let (min, max) = (bounds::MIN_DURATION, bounds::MAX_DURATION);
        bounds::duration("spec.circuitBreaker.baseEjectionTime", cb.base_ejection_time, min, max)?;
        bounds::duration("spec.circuitBreaker.maxEjectionTime", cb.max_ejection_time, min, max)?;
        if cb.max_ejection_time < cb.base_ejection_time {
            return Err(FieldError::new(
                "spec.circuitBreaker.maxEjectionTime",
                "must be at least baseEjectionTime",
            ));
        }
        for (field, v) in [
            ("spec.limits.maxConnections", self.limits.max_connections),
            ("spec.limits.maxPendingRequests", self.limits.max_pending_requests),
            ("spec.limits.maxRequests", self.limits.max_requests),
        ] {
            bounds::count(field, v.into(), 1, bounds::MAX_COUNT)?;
        }
        if !(0.0..=10.0).contains(&self.retry_budget.ratio) {
            return Err(FieldError::new("spec.retryBudget.ratio", "must be between 0 and 10 (0.2 = 20%)"));
        }
        let per_second = u64::from(self.retry_budget.min_per_second);
        bounds::count("spec.retryBudget.minPerSecond", per_second, 0, bounds::MAX_RETRIES_PER_SECOND)?;
        bounds::duration("spec.retry.baseBackoff", self.retry.base_backoff, min, max)?;
        bounds::duration("spec.retry.maxBackoff", self.retry.max_backoff, min, max)?;
        if self.retry.max_backoff < self.retry.base_backoff {
            return Err(FieldError::new("spec.retry.maxBackoff", "must be at least baseBackoff"));
        }
        let body = u64::from(self.retry.max_body_bytes);
        bounds::count("spec.retry.maxBodyBytes", body, 0, bounds::MAX_BODY_BYTES)?;
        if let Some(i) = self.retry.grpc_codes.iter().position(|c| grpc_code(c).is_none()) {
            return Err(FieldError::new(
                format!("spec.retry.grpcCodes[{i}]"),
                "not a gRPC status name (e.g. unavailable, resource-exhausted, deadline-exceeded)",
            ));
        }
        if let Some(hc) = &self.health_check {
            if !hc.path.starts_with('/') {
                return Err(FieldError::new("spec.healthCheck.path", "must start with '/'"));
            }
            bounds::duration("spec.healthCheck.interval", hc.interval, min, max)?;
            bounds::duration("spec.healthCheck.timeout", hc.timeout, min, max)?;
            let healthy = u64::from(hc.healthy_threshold);
            bounds::count("spec.healthCheck.healthyThreshold", healthy, 1, bounds::MAX_COUNT)?;
            let unhealthy = u64::from(hc.unhealthy_threshold);
            bounds::count("spec.healthCheck.unhealthyThreshold", unhealthy, 1, bounds::MAX_COUNT)?;
        }
        Ok(())
    }
}

fn grpc_code_names() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let names = GRPC_CODES.map(|(name, _)| name);
    let name = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names));
    ArrayBuilder::new()
        .items(name)
        .description(Some("gRPC status names that are retried (`unavailable`, `resource-exhausted`, ...)"))
        .build()
}

pub fn grpc_code(name: &str) -> Option<u8> {
    GRPC_CODES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

impl RateLimitPolicySpec {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if !matches!(self.target_ref.kind.as_str(), "Service" | "HTTPRoute") {
            return Err(FieldError::new(
                "spec.targetRef.kind",
                "a RateLimitPolicy attaches to a Service or an HTTPRoute",
            ));
        }
        let limits = [self.per_second, self.per_minute, self.per_hour];
        if limits.iter().all(Option::is_none) {
            return Err(FieldError::new("spec", "set at least one of perSecond, perMinute, perHour"));
        }
        for (field, v) in [
            ("spec.perSecond", self.per_second),
            ("spec.perMinute", self.per_minute),
            ("spec.perHour", self.per_hour),
            ("spec.burst", self.burst),
        ] {
            if let Some(v) = v {
                bounds::count(field, v.into(), 1, bounds::MAX_RATE)?;
            }
        }
        if let Some(key) = &self.key {
            if key.header.is_some() == key.peer {
                return Err(FieldError::new("spec.key", "set exactly one of header or peer"));
            }
            if key.header.as_deref().is_some_and(|h| !crate::route::valid_header_name(h)) {
                return Err(FieldError::new("spec.key.header", "not a valid header name"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse_stream, Resource};

    fn doc(kind: &str, spec: &str) -> String {
        format!("apiVersion: pilotfish.io/v1alpha1\nkind: {kind}\nmetadata: {{name: p}}\nspec:\n{spec}")
    }

    #[test]
    fn backend_policy_defaults_match_the_design() {
        let resources =
            parse_stream("p", &doc("BackendPolicy", "  targetRef: {kind: Service, name: users}\n")).unwrap();
        let Resource::BackendPolicy(p) = &resources[0] else { panic!() };
        let cb = &p.spec.circuit_breaker;
        assert_eq!(cb.consecutive_failures, 5);
        assert_eq!(cb.base_ejection_time, crate::Duration::from_secs(30));
        assert_eq!(cb.max_ejection_time, crate::Duration::from_secs(300));
        assert_eq!(cb.max_ejection_percent, 50);
        assert_eq!((p.spec.retry_budget.ratio, p.spec.retry_budget.min_per_second), (0.2, 10));
        assert_eq!(p.spec.retry.base_backoff, crate::Duration::from_millis(25));
        assert_eq!(p.spec.retry.max_backoff, crate::Duration::from_millis(250));
        assert_eq!(p.spec.retry.max_body_bytes, 64 * 1024);
        assert_eq!(p.spec.load_balancer, super::LoadBalancer::P2cEwma);
    }

    #[test]
    fn bad_policies_name_the_field() {
        let cases = [
            ("BackendPolicy", "  targetRef: {kind: HTTPRoute, name: x}\n", "spec.targetRef.kind"),
            (
                "BackendPolicy",
                "  targetRef: {kind: Service, name: x}\n  circuitBreaker: {maxEjectionPercent: 101}\n",
                "spec.circuitBreaker.maxEjectionPercent",
            ),
            (
                "BackendPolicy",
                "  targetRef: {kind: Service, name: x}\n  loadBalancer: random\n",
                "spec.loadBalancer",
            ),
            (
                "BackendPolicy",
                "  targetRef: {kind: Service, name: x}\n  retry: {grpcCodes: [unavialable]}\n",
                "spec.retry.grpcCodes[0]",
            ),
            ("RateLimitPolicy", "  targetRef: {kind: Service, name: x}\n", "spec"),
            ("RateLimitPolicy", "  targetRef: {kind: Service, name: x}\n  perMinute: 0\n", "spec.perMinute"),
            (
                "RateLimitPolicy",
                "  targetRef: {kind: Service, name: x}\n  perMinute: 5\n  key: {}\n",
                "spec.key",
            ),
        ];
        for (kind, spec, field) in cases {
            let err = parse_stream("p", &doc(kind, spec)).unwrap_err();
            assert!(err.field.starts_with(field), "{spec}: {err}");
        }
    }
}
