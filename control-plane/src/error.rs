//! The one place where the API's failures become HTTP responses: a status, a JSON body
//! `{"error": ...}` (validation errors also name the document, field and reason), and, while the
//! event store cannot be reached, 503 with `Retry-After`: the same request works once it is back.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::store::StoreError;

/// What a client is told to wait before retrying while the store is unreachable.
pub const RETRY_AFTER_SECONDS: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] pilotfish_api::ConfigError),
    #[error("missing or wrong bearer token: send `Authorization: Bearer <admin token>`")]
    Unauthorized,
    #[error("this token may not do that: {0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("this path does not take that method (the Allow header lists the ones it does)")]
    MethodNotAllowed,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    TooManyProxies(#[from] crate::push::TooManyProxies),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyProxies(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
            Self::Store(StoreError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut body = json!({ "error": self.to_string() });
        if let Self::Invalid(e) = &self {
            body["document"] = json!(e.document);
            body["field"] = json!(e.field);
            body["reason"] = json!(e.reason);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_503_with_retry_after_and_other_store_errors_are_not() {
        let unavailable = ApiError::Store(StoreError::Unavailable {
            context: "etcd: reading the head".into(),
            cause: "connection refused".into(),
        })
        .into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "2");
        let broken = ApiError::Store(StoreError::Corrupt { seq: 3, reason: "bad".into() }).into_response();
        assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(broken.headers().get(header::RETRY_AFTER).is_none());
    }
}
