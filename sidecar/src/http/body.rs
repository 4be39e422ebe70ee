//! The response body the sidecar sends downstream: either an endpoint's streamed body, or a
//! small body the sidecar wrote itself (request bodies are `request_body`'s). Streaming an
//! endpoint's body also finishes the request's bookkeeping: the HTTP/1.1 connection goes back to
//! the pool once the body has been read to the end, a gRPC call whose status comes in the
//! trailers is counted on its telemetry edge when they arrive (its latency to the end of the
//! stream), and the access log line is written with the bytes sent when the body is done or
//! dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::pool::Reusable;
use super::request_body::BoxError;
use crate::resilience::limit::OwnedClaim;
use crate::telemetry::access_log::{self, HttpRecord};
use crate::telemetry::edges::{grpc_ok, EdgeStats};

pin_project_lite::pin_project! {
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        Upstream { #[pin] inner: Incoming, done: Completion },
        Local { #[pin] inner: Full<Bytes> },
    }
}

/// What to do once an upstream body has been sent on.
pub struct Completion {
    pub conn: Option<Reusable>,
    pub log: Option<Box<(HttpRecord, Instant)>>,
    bytes: u64,
    /// The request's place under its service's `maxRequests`, held until the response ends.
    claim: Option<OwnedClaim>,
    /// A gRPC call whose status is still to come, in the trailers.
    call: Option<GrpcCall>,
}

/// A gRPC call to count on `edge` once its trailers say how it ended (a stream that ends or is
/// dropped without them counts as failed), with its latency from `started`.
pub struct GrpcCall {
    pub edge: Arc<EdgeStats>,
    pub started: Instant,
}

impl GrpcCall {
    fn ended(self, success: bool) {
        self.edge.record_outcome(success, self.started.elapsed());
    }
}

impl Completion {
    pub fn new(
        conn: Option<Reusable>,
        log: Option<Box<(HttpRecord, Instant)>>,
        call: Option<GrpcCall>,
    ) -> Self {
        Self { conn, log, bytes: 0, claim: None, call }
    }

    pub fn hold(&mut self, claim: OwnedClaim) {
        self.claim = Some(claim);
    }

    /// The trailers arrived: a pending gRPC call ends with their status.
    fn trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(call) = self.call.take() {
            call.ended(grpc_ok(trailers));
        }
    }

    fn finished(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
        self.claim = None;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.ended(false);
        }
        if let Some(entry) = self.log.take() {
            let (mut record, started) = *entry;
            record.response_bytes = self.bytes;
            record.duration_ms = access_log::millis(started.elapsed());
            access_log::http(&record);
        }
    }
}

impl ProxyBody {
    pub fn local(bytes: Bytes) -> Self {
        Self::Local { inner: Full::new(bytes) }
    }

    pub fn upstream(inner: Incoming, mut done: Completion) -> Self {
        // An empty body (204, HEAD, Content-Length: 0) is never polled: it is complete already.
        if inner.is_end_stream() {
            done.finished();
        }
        Self::Upstream { inner, done }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Upstream { mut inner, done } => {
                let frame = ready!(inner.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            done.bytes += data.len() as u64;
                        } else if let Some(trailers) = f.trailers_ref() {
                            done.trailers(trailers);
                        }
                        if inner.is_end_stream() {
                            done.finished();
                        }
                    }
                    None => done.finished(),
                    Some(Err(_)) => {}
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            ProxyBodyProj::Local { inner } => inner.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream { inner, .. } => inner.is_end_stream(),
            Self::Local { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream { inner, .. } => inner.size_hint(),
            Self::Local { inner } => inner.size_hint(),
        }
    }
}
