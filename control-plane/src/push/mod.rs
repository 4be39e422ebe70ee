//! Push: every sidecar holds one long-lived streaming response (`GET /v1/push`, newline-delimited
//! JSON) on which it receives its configuration, and ACKs or NACKs each version.
//!
//! - [`proxies`]: what is known of each sidecar (its sync status), and the cap per service.
//! - [`snapshot`]: the configuration a sidecar is pushed, and the cache of it per version.
//! - [`stream`]: one sidecar's stream: coalesced snapshots and keepalives.

pub mod proxies;
pub mod snapshot;
pub mod stream;

pub use proxies::{Proxies, ProxyKey, TooManyProxies, DEFAULT_MAX_PER_SERVICE, DEFAULT_RETENTION};
pub use snapshot::SnapshotCache;
