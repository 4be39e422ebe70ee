//! What handlers take from a request, each failing with an [`ApiError`] (so with a JSON body):
//! the caller, proven from the bearer token before anything else is read (handlers take it
//! first, and axum runs extractors in argument order); the query and the JSON body as typed
//! values; and the `If-Match` and `Idempotency-Key` headers.

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::core::{Caller, ControlPlane, Credentials, Error};
use crate::tls::TlsPeer;

/// The state every handler shares.
pub type Shared = Arc<ControlPlane>;

/// The bearer token of `Authorization`, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// What the request proves its caller with: its bearer token, and its TLS connection's client
/// certificate (only served over TLS).
pub(super) fn credentials(parts: &Parts) -> Credentials<'_> {
    let peer = parts.extensions.get::<ConnectInfo<TlsPeer>>().and_then(|info| info.0.chain.as_deref());
    Credentials { bearer: bearer(&parts.headers), peer }
}

/// Any valid caller: the admin, a read-only or a join token.
impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, cp: &Shared) -> Result<Self, Self::Rejection> {
        Ok(cp.authenticate(credentials(parts)).await?)
    }
}

/// The admin (a read-only token is forbidden, a join token refused like none), as the actor
/// its events are written by.
pub struct Admin(pub String);

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, cp: &Shared) -> Result<Self, Self::Rejection> {
        Ok(Admin(cp.authenticate(credentials(parts)).await?.admin()?))
    }
}

/// A caller that may read the mesh's configuration, registry, log and proxies: the admin or a
/// read-only token (a join token is refused like none).
pub struct Reader;

impl FromRequestParts<Shared> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, cp: &Shared) -> Result<Self, Self::Rejection> {
        cp.authenticate(credentials(parts)).await?.reader()?;
        Ok(Reader)
    }
}

/// The query string as `T`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) = axum::extract::Query::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Rejected(e.body_text()))?;
        Ok(Self(value))
    }
}

/// The JSON body as `T`. A number with a zero fraction (`7.0`) is read as the integer it is, as
/// JSON Schema's `integer` allows it.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(mut value) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(|e| ApiError::rejection(e.status(), e.body_text()))?;
        integral_floats_as_integers(&mut value);
        serde_json::from_value(value).map(Self).map_err(|e| {
            ApiError::Rejected(format!("Failed to deserialize the JSON body into the target type: {e}"))
        })
    }
}

fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 2f64.powi(63))
            {
                // Exact: the fraction is zero and the magnitude fits an i64.
                *n = serde_json::Number::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// `If-Match`: the version the resource must be at.
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(header::IF_MATCH) {
            None => Ok(Self(None)),
            Some(v) => v
                .to_str()
                .ok()
                .map(|s| s.trim_matches('"'))
                .and_then(|s| s.parse().ok())
                .map(|version| Self(Some(version)))
                .ok_or_else(|| Error::BadRequest("If-Match must be a resource version number".into()).into()),
        }
    }
}

/// `Idempotency-Key`: a retry with the same key answers with the first result.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("idempotency-key").map(|v| v.to_str()) {
            None => Ok(Self(None)),
            Some(Ok(key)) if !key.is_empty() && key.len() <= 200 => Ok(Self(Some(key.to_owned()))),
            Some(_) => {
                Err(Error::BadRequest("Idempotency-Key must be 1-200 visible characters".into()).into())
            }
        }
    }
}

/// The body as UTF-8 text.
pub struct Text(pub String);

impl<S: Send + Sync> FromRequest<S> for Text {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let text = String::from_request(req, state)
            .await
            .map_err(|e| ApiError::rejection(e.status(), e.body_text()))?;
        Ok(Self(text))
    }
}

/// The path's parameters as `T`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) = axum::extract::Path::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Rejected(e.body_text()))?;
        Ok(Self(value))
    }
}

/// `value` of the integer parameter `name`, refused above `i64::MAX`: the document types these
/// as `int64`, what JSON clients can hold (a log never gets that long).
pub fn int64(name: &str, value: u64) -> Result<u64, ApiError> {
    if i64::try_from(value).is_err() {
        return Err(Error::BadRequest(format!("{name} must be at most {}", i64::MAX)).into());
    }
    Ok(value)
}
