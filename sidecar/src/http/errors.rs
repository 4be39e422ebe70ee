//! The one place where failures become HTTP responses: each local failure has a status, a
//! `pilotfish-error` reason users and dashboards rely on, and a message saying what to do.
//! gRPC callers get the equivalent `grpc-status` instead of a bare HTTP error.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::pool::UpstreamError;
use crate::resilience::limit::Limit;
use crate::resilience::ratelimit::limiter::Decision;

/// Whole seconds to wait, rounded up (`Retry-After` has no fractions).
fn retry_after_secs(d: &Decision) -> u64 {
    let wait = d.retry_after.unwrap_or_default();
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

pub const ERROR_HEADER: &str = "pilotfish-error";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the request has no Host header or :authority to route by")]
    MissingAuthority,
    #[error("the Host header {0:?} is not a valid host[:port]")]
    InvalidHost(String),
    #[error("CONNECT is not proxied: send requests for the service directly")]
    ConnectUnsupported,
    #[error("no service matches host {0:?}: check the name, or declare the Service")]
    NoRoute(String),
    #[error("service {0} has no endpoints")]
    NoEndpoints(String),
    #[error("every endpoint of service {0} is ejected by its circuit breaker")]
    CircuitOpen(String),
    #[error("service {service} is at its {} limit", .limit.as_str())]
    Overloaded { service: String, limit: Limit },
    #[error("rate limited: retry after {}s", retry_after_secs(.0))]
    RateLimited(Decision),
    /// Denied by authorization: why, as [`crate::authz::Denial`] says it.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("the route's backend {0} is not a known Service")]
    UnknownBackend(String),
    #[error("no response within the route timeout of {0:?}")]
    Timeout(std::time::Duration),
    #[error("the request body could not be read: {0}")]
    RequestBody(String),
    #[error("the request body did not arrive within {0:?}")]
    RequestBodyTimeout(std::time::Duration),
    #[error("could not connect to an endpoint: {0}")]
    UpstreamConnect(#[source] UpstreamError),
    #[error("the endpoint failed the request: {0}")]
    UpstreamReset(#[source] UpstreamError),
    /// A meshed endpoint proved another identity than the registry holds for it.
    #[error("the endpoint is not who the registry says (check its registration and certificate): {0}")]
    UpstreamIdentity(#[source] UpstreamError),
    /// The endpoint is reached only over mesh mTLS, and this sidecar has no identity yet.
    #[error("{0}; the sidecar gets one from the control plane or --tls-cert/--tls-key")]
    NoIdentity(#[source] UpstreamError),
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Overflow(limit) => Self::Overloaded { service: String::new(), limit },
            UpstreamError::Connect(_)
            | UpstreamError::Handshake { .. }
            | UpstreamError::ClosedBeforeSend { .. }
            | UpstreamError::QueuedBehind { .. } => Self::UpstreamConnect(e),
            UpstreamError::Mesh(ref dial) if dial.is_identity_mismatch() => Self::UpstreamIdentity(e),
            UpstreamError::Mesh(ref dial) if !dial.blames_endpoint() => Self::NoIdentity(e),
            UpstreamError::Mesh(_) => Self::UpstreamConnect(e),
            UpstreamError::Request { .. } => Self::UpstreamReset(e),
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingAuthority | Self::InvalidHost(_) => StatusCode::BAD_REQUEST,
            Self::ConnectUnsupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::NoEndpoints(_) | Self::CircuitOpen(_) | Self::Overloaded { .. } | Self::NoIdentity(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnknownBackend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::RequestBody(_) => StatusCode::BAD_REQUEST,
            Self::RequestBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamConnect(_) | Self::UpstreamReset(_) | Self::UpstreamIdentity(_) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// The `pilotfish-error` value.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingAuthority | Self::InvalidHost(_) | Self::ConnectUnsupported | Self::NoRoute(_) => {
                "no-route"
            }
            Self::NoEndpoints(_) => "no-endpoints",
            Self::CircuitOpen(_) => "circuit-open",
            Self::Overloaded { .. } => "overloaded",
            Self::RateLimited(_) => "rate-limited",
            Self::Forbidden(_) => "forbidden",
            Self::UnknownBackend(_) => "no-route",
            Self::Timeout(_) | Self::RequestBodyTimeout(_) => "timeout",
            Self::RequestBody(_) => "bad-request",
            Self::UpstreamConnect(_) => "upstream-connect",
            Self::UpstreamReset(_) => "upstream-reset",
            Self::UpstreamIdentity(_) => "upstream-identity",
            Self::NoIdentity(_) => "no-identity",
        }
    }

    /// The gRPC status a gRPC caller sees instead (UNIMPLEMENTED for no route, PERMISSION_DENIED
    /// for authorization, else UNAVAILABLE).
    fn grpc_status(&self) -> &'static str {
        match self {
            Self::MissingAuthority | Self::InvalidHost(_) | Self::ConnectUnsupported | Self::NoRoute(_) => {
                "12"
            }
            Self::RateLimited(_) | Self::Overloaded { .. } => "8",
            Self::Forbidden(_) => "7",
            Self::Timeout(_) | Self::RequestBodyTimeout(_) => "4",
            _ => "14",
        }
    }

    pub fn respond(&self, grpc: bool) -> Response<ProxyBody> {
        let message = self.to_string();
        let mut res = if grpc {
            let mut res = Response::new(ProxyBody::local(Bytes::new()));
            let h = res.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from_static(self.grpc_status()));
            if let Ok(v) = HeaderValue::from_str(&message) {
                h.insert("grpc-message", v);
            }
            res
        } else {
            let mut res = Response::new(ProxyBody::local(Bytes::from(format!("{message}\n"))));
            *res.status_mut() = self.status();
            res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            res
        };
        let h = res.headers_mut();
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.reason()));
        match self {
            Self::Overloaded { limit, .. } => {
                h.insert("pilotfish-limit", HeaderValue::from_static(limit.as_str()));
            }
            Self::RateLimited(decision) => {
                h.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after_secs(decision)));
                super::headers::add_rate_limit_headers(h, std::slice::from_ref(decision));
            }
            _ => {}
        }
        res
    }
}
