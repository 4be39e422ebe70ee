//! Newline-delimited JSON streams (`application/x-ndjson`), as the push stream and tap answer:
//! a response whose body a spawned task writes line by line, each write bounded in time so a
//! reader that went away or stopped reading ends the task instead of holding it.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use serde::Serialize;

/// The writing end of a stream.
pub type LineSender = Sender<Bytes, Infallible>;

/// A streaming response whose body `write` produces (spawned; the stream ends when it returns).
pub fn respond<F: Future<Output = ()> + Send + 'static>(write: impl FnOnce(LineSender) -> F) -> Response {
    let (tx, body) = Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(write(tx));
    let mut res = Response::new(Body::new(body));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    res
}

/// `message` as one line.
pub fn line<T: Serialize>(message: &T) -> Bytes {
    let mut line = serde_json::to_vec(message).expect("a wire message serializes");
    line.push(b'\n');
    line.into()
}

/// An empty line: a keepalive.
pub const KEEPALIVE_LINE: Bytes = Bytes::from_static(b"\n");

/// Sends `data`; `false` when the reader is gone or did not take it within `timeout`.
pub async fn send(tx: &mut LineSender, data: Bytes, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, tx.send_data(data)).await, Ok(Ok(())))
}
