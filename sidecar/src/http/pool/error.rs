//! Why a request got no answer from an endpoint's pool: a service limit, a failed connect or
//! mesh dial, or a failure on the connection; and the request back when it never went out.

use std::net::SocketAddr;

use http::Request;

use super::super::request_body::RequestBody;
use crate::resilience::limit::Limit;
use crate::upstream::mesh::DialError;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A service limit refused a new connection or a place in the queue for one.
    #[error("the service is at its {} limit", .0.as_str())]
    Overflow(Limit),
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake { addr: SocketAddr, source: hyper::Error },
    #[error("the connection to {addr} closed before the request was sent")]
    ClosedBeforeSend { addr: SocketAddr },
    /// The connection attempt this request waited for failed (the endpoint's failure was
    /// counted once, for the request it was delivered to).
    #[error("no connection to {addr}: {reason}")]
    QueuedBehind { addr: SocketAddr, reason: String },
    /// Connecting to a meshed endpoint over mTLS failed, or this sidecar has no identity yet.
    #[error("{0}")]
    Mesh(DialError),
    #[error("request to {addr} failed: {source}")]
    Request { addr: SocketAddr, source: hyper::Error },
}

impl UpstreamError {
    /// Whether the endpoint never saw the request: no connection could be had for it.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect(_)
                | Self::Mesh(_)
                | Self::Handshake { .. }
                | Self::ClosedBeforeSend { .. }
                | Self::QueuedBehind { .. }
        )
    }

    /// Whether a meshed endpoint proved another identity than the registry holds for it.
    pub fn is_identity_mismatch(&self) -> bool {
        matches!(self, Self::Mesh(e) if e.is_identity_mismatch())
    }

    /// Whether the failure is this request's own evidence against the endpoint (for its circuit
    /// breaker and load), not one shared with the requests queued behind it.
    pub fn blames_endpoint(&self) -> bool {
        match self {
            Self::QueuedBehind { .. } | Self::Overflow(_) => false,
            Self::Mesh(e) => e.blames_endpoint(),
            _ => true,
        }
    }
}

/// A failed send: why, and the request when it never went out.
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Box<Request<RequestBody>>>,
}

impl SendError {
    pub(super) fn unsent(error: UpstreamError, req: Request<RequestBody>) -> Self {
        Self { error, unsent: Some(Box::new(req)) }
    }
}
