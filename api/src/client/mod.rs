//! The typed client of the control plane's API (feature `client`): the CLI, the managed sidecar
//! and the tests all call the control plane through it, with the `wire` types both ends share.
//!
//! - `transport`: [`Client`] — base URL, bearer token ([`Bearer`]: given, or read from a file at
//!   each call), hyper-util's pooled client, timeouts.
//! - `trust`: [`Trust`] — what an `https://` control plane is verified against (a CA file, or
//!   the root fingerprint a join token pins, perhaps widened by [`SharedRoots`]).
//! - `connect`: [`Connector`], plain TCP or TLS (HTTP/2 when the server picks `h2`: then every
//!   call, a push stream and its ACKs too, shares one connection).
//! - `operations`: one method per API operation (a new API call goes here).
//! - `push_stream`: [`PushStream`], the push stream's typed lines ([`PushMessage`]).
//! - `tap_stream`: [`TapStream`], the lines of `GET /v1/tap`.
//! - `error`: [`ClientError`], a variant per failure a caller acts on.

mod connect;
mod error;
mod operations;
mod push_stream;
mod tap_stream;
mod transport;
mod trust;

#[cfg(test)]
mod tests;

pub use connect::{Connector, Stream};
pub use error::ClientError;
pub use operations::Preconditions;
pub use push_stream::{PushMessage, PushStream, StreamError, MAX_LINE, STREAM_IDLE};
pub use tap_stream::{TapStream, TAP_IDLE};
pub use transport::{Bearer, Client, ClientBuilder};
pub use trust::{SharedClientCert, SharedRoots, Trust, TrustError};
