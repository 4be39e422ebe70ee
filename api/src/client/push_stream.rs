//! A push stream as it is read: newline-delimited JSON, one [`PushLine`] per line, empty lines
//! as keepalives. Silence longer than the idle bound and a line past the size bound end it, so
//! a dead or broken connection is noticed and the caller reconnects.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::wire::protocol::{self, UnsupportedProtocol, UNVERSIONED_PROTOCOL};
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
    /// A line of a protocol this build does not read; NACK it (the stream goes on).
    #[error("push line {version}: {error}")]
    Unsupported { version: u64, error: UnsupportedProtocol },
}

/// The lines of one `GET /v1/push` answer; [`crate::client::Client::push`].
pub struct PushStream {
    body: Incoming,
    buf: BytesMut,
}

impl PushStream {
    /// Lines may be at most [`MAX_LINE`] bytes, and at most [`STREAM_IDLE`] apart (keepalives
    /// count).
    pub(crate) fn new(body: Incoming) -> Self {
        Self { body, buf: BytesMut::new() }
    }

    /// The next snapshot. After an error the stream is done: reconnect.
    pub async fn next(&mut self) -> Result<PushLine, StreamError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return read_line(&line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(StreamError::LineTooLong(MAX_LINE));
            }
            match tokio::time::timeout(STREAM_IDLE, self.body.frame()).await {
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
                Err(_) => return Err(StreamError::Idle(STREAM_IDLE)),
            }
        }
    }
}

/// One line, its protocol read first: a protocol too far from this build's may have changed
/// what the other fields look like, and must come back as [`StreamError::Unsupported`] (to be
/// NACKed) rather than as an unreadable line that only makes the sidecar reconnect.
pub(crate) fn read_line(line: &[u8]) -> Result<PushLine, StreamError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        protocol: Option<serde_json::Value>,
        version: Option<serde_json::Value>,
    }
    let envelope: Envelope = serde_json::from_slice(line).map_err(StreamError::Unreadable)?;
    let got = match envelope.protocol {
        None => Some(UNVERSIONED_PROTOCOL),
        // Past u32: certainly not a protocol this build speaks.
        Some(p) => p.as_u64().map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
    };
    if let Some(Err(error)) = got.map(protocol::check) {
        let version = envelope.version.and_then(|v| v.as_u64()).unwrap_or(0);
        return Err(StreamError::Unsupported { version, error });
    }
    serde_json::from_slice(line).map_err(StreamError::Unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PROTOCOL_VERSION;

    #[test]
    fn a_line_too_far_ahead_is_unsupported_with_its_version_even_when_its_shape_changed() {
        let far = PROTOCOL_VERSION + 2;
        for line in [
            format!("{{\"protocol\":{far},\"version\":7,\"config\":{{\"documents\":[]}}}}"),
            format!("{{\"protocol\":{far},\"version\":7}}"),
            "{\"protocol\":99999999999,\"version\":7,\"config\":\"a\"}".to_owned(),
        ] {
            match read_line(line.as_bytes()) {
                Err(StreamError::Unsupported { version: 7, error }) => {
                    assert!(error.got > PROTOCOL_VERSION + 1)
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_line_of_a_supported_protocol_must_still_have_todays_shape() {
        let line = format!("{{\"protocol\":{PROTOCOL_VERSION},\"version\":3,\"config\":\"a\"}}");
        assert_eq!(read_line(line.as_bytes()).unwrap().version, 3);
        for bad in
            ["{\"version\":3,\"config\":{}}", "{\"protocol\":\"one\",\"version\":3,\"config\":\"a\"}", "[]"]
        {
            assert!(matches!(read_line(bad.as_bytes()), Err(StreamError::Unreadable(_))), "{bad}");
        }
    }
}
