//! A request body on its way upstream: streamed from the client, or replayed from the bounded
//! buffer kept so that a request can be retried.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way upstream: streamed from the client (after any bytes already read
/// while trying to keep it for retries), or replayed from what was kept.
pub enum RequestBody {
    Streaming { prefix: Option<Bytes>, inner: Incoming },
    Replay { data: Option<Bytes>, trailers: Option<http::HeaderMap> },
}

impl RequestBody {
    pub fn streaming(inner: Incoming) -> Self {
        Self::Streaming { prefix: None, inner }
    }

    pub fn replay(kept: &Kept) -> Self {
        Self::Replay { data: Some(kept.data.clone()), trailers: kept.trailers.clone() }
    }
}

/// A whole request body kept for replay.
pub struct Kept {
    data: Bytes,
    trailers: Option<http::HeaderMap>,
}

/// What [`keep_for_replay`] ended with.
pub enum Keeping {
    /// The whole body fit within the limit.
    Kept(Kept),
    /// It did not: what was read so far, and the rest, to be streamed once.
    TooLarge(RequestBody),
}

#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error("{0}")]
    Body(#[from] hyper::Error),
    #[error("the request body did not arrive in time")]
    Timeout,
}

/// Reads a request body into memory while it stays within `limit` bytes (the retry replay
/// buffer); a larger body is handed back to be streamed, with the bytes already read in front.
/// A body declared larger than the limit is not read at all; reading stops at `deadline`.
pub async fn keep_for_replay(
    mut body: Incoming,
    limit: u64,
    deadline: tokio::time::Instant,
) -> Result<Keeping, KeepError> {
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit {
        return Ok(Keeping::TooLarge(RequestBody::streaming(body)));
    }
    let mut data = bytes::BytesMut::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await.map_err(|_| KeepError::Timeout)?;
        let Some(frame) = frame.transpose()? else {
            return Ok(Keeping::Kept(Kept { data: data.freeze(), trailers: None }));
        };
        match frame.into_data() {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() as u64 > limit {
                    return Ok(Keeping::TooLarge(RequestBody::Streaming {
                        prefix: Some(data.freeze()),
                        inner: body,
                    }));
                }
            }
            Err(frame) => {
                let trailers = frame.into_trailers().ok();
                return Ok(Keeping::Kept(Kept { data: data.freeze(), trailers }));
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Streaming { prefix, inner } => {
                if let Some(bytes) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Pin::new(inner).poll_frame(cx).map_err(Into::into)
            }
            Self::Replay { data, trailers } => {
                if let Some(bytes) = data.take().filter(|b| !b.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streaming { prefix, inner } => prefix.is_none() && inner.is_end_stream(),
            Self::Replay { data, trailers } => {
                data.as_ref().is_none_or(Bytes::is_empty) && trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streaming { prefix: None, inner } => inner.size_hint(),
            Self::Streaming { .. } => SizeHint::default(),
            Self::Replay { data, trailers: None } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Self::Replay { .. } => SizeHint::default(),
        }
    }
}
