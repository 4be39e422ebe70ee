//! A push stream as it is read: newline-delimited JSON, one [`PushMessage`] per line (a
//! configuration snapshot, or a tap line), empty lines as keepalives. Silence longer than the idle bound and a line past the size bound end it, so
//! a dead or broken connection is noticed and the caller reconnects.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::wire::protocol::{self, UnsupportedProtocol, UNVERSIONED_PROTOCOL};
use crate::wire::{PushLine, TapControl, TapLine};

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

/// One line of the push stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushMessage {
    /// A configuration snapshot.
    Config(PushLine),
    /// What to tap from now on (protocol 2; no filters: stop).
    Tap(TapControl),
}

/// The lines of one `GET /v1/push` answer; [`crate::client::Client::push`].
pub struct PushStream {
    lines: Lines,
}

impl PushStream {
    /// Lines may be at most [`MAX_LINE`] bytes, and at most [`STREAM_IDLE`] apart (keepalives
    /// count).
    pub(crate) fn new(body: Incoming) -> Self {
        Self { lines: Lines::new(body, STREAM_IDLE, MAX_LINE) }
    }

    /// The next snapshot or tap line. After an error the stream is done: reconnect.
    pub async fn next(&mut self) -> Result<PushMessage, StreamError> {
        read_line(&self.lines.next().await?)
    }
}

/// The non-empty lines of a newline-delimited body, each within a size bound and an idle bound
/// (an empty line, a keepalive, resets the idle bound too).
pub(crate) struct Lines {
    body: Incoming,
    buf: BytesMut,
    idle: Duration,
    max_line: usize,
}

impl Lines {
    pub(crate) fn new(body: Incoming, idle: Duration, max_line: usize) -> Self {
        Self { body, buf: BytesMut::new(), idle, max_line }
    }

    /// The next line that is not blank (with its newline).
    pub(crate) async fn next(&mut self) -> Result<BytesMut, StreamError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(line);
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

/// One line, its protocol read first: a protocol too far from this build's may have changed
/// what the other fields look like, and must come back as [`StreamError::Unsupported`] (to be
/// NACKed) rather than as an unreadable line that only makes the sidecar reconnect.
///
/// A line with a `tap` member is a tap line; any other is a snapshot.
pub(crate) fn read_line(line: &[u8]) -> Result<PushMessage, StreamError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        protocol: Option<serde_json::Value>,
        version: Option<serde_json::Value>,
        tap: Option<serde::de::IgnoredAny>,
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
    if envelope.tap.is_some() {
        let tap: TapLine = serde_json::from_slice(line).map_err(StreamError::Unreadable)?;
        return Ok(PushMessage::Tap(tap.tap));
    }
    serde_json::from_slice(line).map(PushMessage::Config).map_err(StreamError::Unreadable)
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
        assert!(matches!(read_line(line.as_bytes()).unwrap(), PushMessage::Config(l) if l.version == 3));
        for bad in
            ["{\"version\":3,\"config\":{}}", "{\"protocol\":\"one\",\"version\":3,\"config\":\"a\"}", "[]"]
        {
            assert!(matches!(read_line(bad.as_bytes()), Err(StreamError::Unreadable(_))), "{bad}");
        }
    }

    #[test]
    fn a_tap_line_is_told_from_a_snapshot_by_its_tap_member() {
        let line = br#"{"protocol":2,"tap":{"filters":[{"path":"/api","method":"GET"}],"sample":0.5}}"#;
        let Ok(PushMessage::Tap(tap)) = read_line(line) else { panic!("a tap line") };
        assert_eq!(tap.filters.len(), 1);
        assert!(tap.filters[0].matches("GET", "/api/x"));
        let stop = read_line(br#"{"protocol":2,"tap":{"filters":[]}}"#).unwrap();
        assert_eq!(stop, PushMessage::Tap(TapControl::default()), "no filters: stop");
        assert!(matches!(read_line(br#"{"protocol":2,"tap":7}"#), Err(StreamError::Unreadable(_))));
    }
}
