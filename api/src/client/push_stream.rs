//! A push stream as it is read: newline-delimited JSON, one [`PushLine`] per line, empty lines
//! as keepalives. Silence longer than the idle bound and a line past the size bound end it, so
//! a dead or broken connection is noticed and the caller reconnects.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::wire::PushLine;

/// Without even a keepalive line for this long, the stream is presumed dead (the control plane
/// sends one every 10 s).
pub const STREAM_IDLE: Duration = Duration::from_secs(30);
/// One snapshot line; a larger one is a broken stream, not a configuration.
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// Why a push stream cannot go on; the caller reconnects.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("no line, not even a keepalive, for {0:?}")]
    Idle(Duration),
    #[error("the control plane ended the stream")]
    Ended,
    #[error("the stream broke: {0}")]
    Broken(#[source] hyper::Error),
    #[error("a line exceeds {0} bytes")]
    LineTooLong(usize),
    #[error("unreadable line: {0}")]
    Unreadable(#[source] serde_json::Error),
}

/// The lines of one `GET /v1/push` answer; [`crate::client::Client::push`].
pub struct PushStream {
    body: Incoming,
    buf: BytesMut,
    idle: Duration,
    max_line: usize,
}

impl PushStream {
    /// Lines may be at most [`MAX_LINE`] bytes, and at most [`STREAM_IDLE`] apart (keepalives
    /// count).
    pub(crate) fn new(body: Incoming) -> Self {
        Self { body, buf: BytesMut::new(), idle: STREAM_IDLE, max_line: MAX_LINE }
    }

    /// The next snapshot. After an error the stream is done: reconnect.
    pub async fn next(&mut self) -> Result<PushLine, StreamError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line).map_err(StreamError::Unreadable);
            }
            if self.buf.len() > self.max_line {
                return Err(StreamError::LineTooLong(self.max_line));
            }
            match tokio::time::timeout(self.idle, self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Ok(Some(Err(e))) => return Err(StreamError::Broken(e)),
                Ok(None) => return Err(StreamError::Ended),
                Err(_) => return Err(StreamError::Idle(self.idle)),
            }
        }
    }
}
