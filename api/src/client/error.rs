//! What a call to the control plane can end in besides its answer: each failure a caller acts
//! on differently is its own variant (a 404 is [`ClientError::NotFound`], not a string to
//! match), each carrying the server's [`ErrorBody`].

use std::time::Duration;

use http::StatusCode;

use crate::wire::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection, or it broke before an answer came.
    #[error("cannot reach the control plane at {base}")]
    Unreachable {
        base: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("the control plane at {base} did not answer within {timeout:?}")]
    TimedOut { base: String, timeout: Duration },
    /// 401: no token, or not one the control plane knows (or an admin operation with a join
    /// token).
    #[error("{}: {}", StatusCode::UNAUTHORIZED, .0.error)]
    Unauthorized(ErrorBody),
    /// 403: the token may not act for that service.
    #[error("{}: {}", StatusCode::FORBIDDEN, .0.error)]
    Forbidden(ErrorBody),
    /// 404: no such resource, endpoint or proxy (an endpoint whose lease lapsed, too).
    #[error("{}: {}", StatusCode::NOT_FOUND, .0.error)]
    NotFound(ErrorBody),
    /// 409: the resource's version is not the one `If-Match` expected.
    #[error("{}: {}", StatusCode::CONFLICT, .0.error)]
    Conflict(ErrorBody),
    /// 503: the control plane cannot reach its event store; the same call works once it is back.
    #[error("{}: {}", StatusCode::SERVICE_UNAVAILABLE, .body.error)]
    Unavailable { body: ErrorBody, retry_after: Option<Duration> },
    /// Any other error answer (400 for bad input, with the field at fault when it is a
    /// configuration; 429, 500, ...).
    #[error("{status}: {}", .body.error)]
    Refused { status: StatusCode, body: ErrorBody },
    /// A success whose body is not the answer this client expects.
    #[error("unexpected answer from {url}: {source}")]
    Unexpected {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// The answer's body broke off.
    #[error("reading the answer from {url}: {source}")]
    Body {
        url: String,
        #[source]
        source: hyper::Error,
    },
    /// The base URL (or a name in the path) does not make a request.
    #[error("invalid request {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: http::Error,
    },
}

impl ClientError {
    /// The error answer for `status` with `body` (JSON `{"error": ...}`, or any text).
    pub(crate) fn answer(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Self {
        let body = serde_json::from_slice::<ErrorBody>(body).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(body);
            ErrorBody::new(text.trim())
        });
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthorized(body),
            StatusCode::FORBIDDEN => Self::Forbidden(body),
            StatusCode::NOT_FOUND => Self::NotFound(body),
            StatusCode::CONFLICT => Self::Conflict(body),
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable { body, retry_after },
            status => Self::Refused { status, body },
        }
    }

    /// The server's error body, when the server answered.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            Self::Unauthorized(body)
            | Self::Forbidden(body)
            | Self::NotFound(body)
            | Self::Conflict(body) => Some(body),
            Self::Unavailable { body, .. } | Self::Refused { body, .. } => Some(body),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_a_caller_acts_on_is_its_own_variant_with_the_servers_message() {
        let body = br#"{"error": "endpoint x not found", "hint": "from a newer server"}"#;
        let e = ClientError::answer(StatusCode::NOT_FOUND, body, None);
        assert!(matches!(&e, ClientError::NotFound(b) if b.error == "endpoint x not found"), "{e:?}");
        assert_eq!(e.to_string(), "404 Not Found: endpoint x not found");
        let e = ClientError::answer(
            StatusCode::SERVICE_UNAVAILABLE,
            b"{\"error\":\"store\"}",
            Some(Duration::from_secs(2)),
        );
        assert!(matches!(e, ClientError::Unavailable { retry_after: Some(_), .. }));
        let e = ClientError::answer(StatusCode::PAYLOAD_TOO_LARGE, b"length limit exceeded\n", None);
        assert_eq!(e.to_string(), "413 Payload Too Large: length limit exceeded");
        let invalid = br#"{"error": "invalid", "document": 2, "field": "spec.x", "reason": "no"}"#;
        let e = ClientError::answer(StatusCode::BAD_REQUEST, invalid, None);
        assert_eq!(e.body().and_then(|b| b.field.as_deref()), Some("spec.x"));
    }
}
