//! What every decision leaves behind.
//! - [`metrics`]: the Prometheus families and the per-target handles resolved per snapshot;
//! - [`edges`]: per-edge golden metrics, collected for the control plane's telemetry;
//! - [`mesh`]: mesh mTLS refusals, identity mismatches and connections opened;
//! - [`identity`]: the mesh identity's families (certificate expiry, renewals, trusted roots);
//! - [`access_log`]: one JSON line per request or opaque connection, off the request path;
//! - [`tap`]: the requests sampled for the operators tapping this sidecar's service;
//! - [`trace`]: a span per hop, exported over OTLP/HTTP (`--otlp-endpoint`).

pub mod access_log;
pub mod edges;
pub mod identity;
pub mod mesh;
pub mod metrics;
pub mod tap;
pub mod trace;
