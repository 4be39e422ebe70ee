//! The one place where failures become HTTP responses: the core's errors, the extractors'
//! rejections and routing's 404/405, each a status and a JSON [`ErrorBody`] (an invalid document
//! also names the document, field and reason); while the event store cannot be reached, 503
//! with `Retry-After`: the same request works once it is back. The reusable OpenAPI responses
//! that document these live here too.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::ToResponse;

use crate::core::Error;
use crate::store::StoreError;
use pilotfish_api::wire::ErrorBody;

/// What a client is told to wait before retrying while the store is unreachable.
pub const RETRY_AFTER_SECONDS: u64 = 2;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] Error),
    /// A query, path or body that could not be read as the operation's type.
    #[error("{0}")]
    Rejected(String),
    /// A body over the size the API reads (axum's default limit).
    #[error("{0}: send a smaller body (a long document stream can be applied in parts)")]
    TooLarge(String),
    #[error("no such API path (see /v1/openapi.json)")]
    NoRoute,
    #[error("this path does not take that method (the Allow header lists the ones it does)")]
    MethodNotAllowed,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Core(e.into())
    }
}

impl ApiError {
    /// An extractor's rejection, by the status axum gives it: 413 for a body over the limit,
    /// 400 for anything else that could not be read.
    pub fn rejection(status: StatusCode, text: String) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge(text)
        } else {
            Self::Rejected(text)
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Rejected(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Core(e) => match e {
                Error::BadRequest(_) | Error::Invalid(_) => StatusCode::BAD_REQUEST,
                Error::Unauthorized => StatusCode::UNAUTHORIZED,
                Error::Forbidden(_) => StatusCode::FORBIDDEN,
                Error::NotFound(_) => StatusCode::NOT_FOUND,
                Error::TooManyProxies(_) | Error::TooManyTaps(_) => StatusCode::TOO_MANY_REQUESTS,
                Error::KeyReused(_) | Error::Conflict(_) => StatusCode::CONFLICT,
                Error::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
                Error::Store(StoreError::Unavailable { .. }) | Error::Unavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                Error::Store(_) | Error::Ca(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            Self::Core(Error::Invalid(e)) => ErrorBody::invalid(self.to_string(), e),
            _ => ErrorBody::new(self.to_string()),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// The request is malformed or breaks a rule; the body says which and why.
#[derive(ToResponse)]
pub struct BadRequest(pub ErrorBody);

/// Missing, wrong or expired bearer token, or a join token where only the admin or a reader
/// may act; the body says how to get a token.
#[derive(ToResponse)]
pub struct Unauthorized(pub ErrorBody);

/// The token may not do this: a join token of another service, or a read-only token asked to
/// write.
#[derive(ToResponse)]
pub struct Forbidden(pub ErrorBody);

/// Nothing of that name.
#[derive(ToResponse)]
pub struct NotFound(pub ErrorBody);

/// The resource is not at the expected version (`If-Match`): read it again and retry; or the
/// `Idempotency-Key` was first used for a different request.
#[derive(ToResponse)]
pub struct Conflict(pub ErrorBody);

/// The body is larger than the API reads (2 MiB): send less at a time.
#[derive(ToResponse)]
pub struct PayloadTooLarge(pub ErrorBody);

/// The service already has as many connected sidecars as it may, or as many taps are open as
/// may be.
#[derive(ToResponse)]
pub struct TooManyRequests(pub ErrorBody);

/// The control plane cannot do it (the mesh CA's issuer expired, the store is corrupt); the
/// body says what the operator must do.
#[derive(ToResponse)]
pub struct Internal(pub ErrorBody);

/// The event store is unreachable: retry after `Retry-After` seconds.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))]
pub struct Unavailable(pub ErrorBody);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_503_with_retry_after_and_other_store_errors_are_not() {
        let unavailable = ApiError::from(StoreError::Unavailable {
            context: "etcd: reading the head".into(),
            cause: "connection refused".into(),
        })
        .into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "2");
        let broken = ApiError::from(StoreError::Corrupt { seq: 3, reason: "bad".into() }).into_response();
        assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(broken.headers().get(header::RETRY_AFTER).is_none());
    }
}
