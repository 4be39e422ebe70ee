//! What an operation of the control plane can fail with, in the domain's words: the caller sent
//! something wrong, may not do it, named nothing that exists, or the store failed. How a
//! transport shows these (an HTTP status, a JSON body) is the transport's business (`http::error`).

use super::tap::TooManyTaps;
use crate::ca::CaError;
use crate::push::TooManyProxies;
use crate::store::StoreError;
use pilotfish_api::wire::UnsupportedProtocol;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (a malformed value, a rule it breaks); the message says what.
    #[error("{0}")]
    BadRequest(String),
    /// A configuration document is invalid: which document, which field, why.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] pilotfish_api::ConfigError),
    #[error(
        "missing, wrong or expired bearer token: send `Authorization: Bearer TOKEN` with the admin token \
         (printed at the control plane's first start, kept in its data directory as `admin-token`) or one \
         the admin made with `pilotfish token create` (`--read-only` to read, `--service NAME` for a sidecar)"
    )]
    Unauthorized,
    #[error("this token may not do that: {0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with what is under way (e.g. a second root rotation).
    #[error("{0}")]
    Conflict(String),
    /// An `Idempotency-Key` sent again with a different request.
    #[error("this Idempotency-Key was first used for a different {0}: use a new key for a new request")]
    KeyReused(&'static str),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    TooManyProxies(#[from] TooManyProxies),
    #[error("{0}")]
    TooManyTaps(#[from] TooManyTaps),
    /// Something the control plane relies on cannot answer now (the Kubernetes API, reviewing a
    /// token): try again shortly.
    #[error("{0}")]
    Unavailable(String),
    /// The mesh CA cannot sign (a request's CSR problems are [`Error::BadRequest`]).
    #[error("{0}")]
    Ca(CaError),
}

/// A peer's protocol is outside the supported range: the request is wrong, and the message says
/// which versions would do.
impl From<UnsupportedProtocol> for Error {
    fn from(e: UnsupportedProtocol) -> Self {
        Self::BadRequest(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
