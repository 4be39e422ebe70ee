//! Listeners and protocol detection: where connections arrive and what they turn out to be.
//! - [`accept`]: accept loops with connection limits and a slot per connection;
//! - [`outbound`] / [`inbound`]: per-connection handling in each direction;
//! - [`terminate`]: inbound mesh mTLS terminated, and what the connection carries served;
//! - [`local`]: per-service local listeners (`localPort`);
//! - [`detect`]: HTTP/1, HTTP/2, TLS or opaque, from the first bytes;
//! - [`admin`]: `/live`, `/ready`, `/metrics`, `/config`, `/shutdown`;
//! - [`status`]: the kubelet's `/ready`, `/live` and the app's own probes, and nothing else.

pub mod accept;
pub mod admin;
pub mod detect;
pub mod inbound;
pub mod local;
pub mod outbound;
pub mod status;
pub mod terminate;
