//! A tap stream as it is read (`GET /v1/tap`): newline-delimited JSON, one [`TapMessage`] per
//! line, empty lines as keepalives (about every second). Silence longer than [`TAP_IDLE`]
//! means the control plane or the connection is gone.

use std::time::Duration;

use hyper::body::Incoming;

use super::push_stream::{Lines, StreamError};
use crate::wire::TapMessage;

/// Without even a keepalive line for this long, the stream is presumed dead.
pub const TAP_IDLE: Duration = Duration::from_secs(10);
/// One line; an event is a few KiB at most.
const MAX_TAP_LINE: usize = 256 * 1024;

/// The lines of one `GET /v1/tap` answer; [`crate::client::Client::tap`].
pub struct TapStream {
    lines: Lines,
}

impl TapStream {
    pub(crate) fn new(body: Incoming) -> Self {
        Self { lines: Lines::new(body, TAP_IDLE, MAX_TAP_LINE) }
    }

    /// The next message. A JSON object of a kind this build does not know (from a newer
    /// control plane) is skipped; after an error the stream is done.
    pub async fn next(&mut self) -> Result<TapMessage, StreamError> {
        loop {
            let line = self.lines.next().await?;
            match serde_json::from_slice::<TapMessage>(&line) {
                Ok(message) => return Ok(message),
                Err(e) => match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&line) {
                    Ok(_) => continue,
                    Err(_) => return Err(StreamError::Unreadable(e)),
                },
            }
        }
    }
}
