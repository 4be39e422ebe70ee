//! Where requests go, at run time: per-service and per-endpoint state that outlives a request
//! and, where it can, a reload. The snapshot builder makes it; the request paths read it.
//! - [`service`]: a service — its endpoints, retry budget, limit counters, compiled routes;
//! - [`endpoint`]: an endpoint — its pool, metrics, breaker, load and health, and the admission
//!   and bookkeeping of one attempt on it;
//! - [`app`]: the local app, the inbound path's one endpoint, and its ports' mTLS modes;
//! - [`app_probe`]: the app's own probes, forwarded from the status port to its loopback;
//! - [`health`]: active health checks that take endpoints out of the balancer and put them back;
//! - [`mesh`]: dialling a meshed endpoint over mTLS, requiring the identity the registry holds.

pub mod app;
pub mod app_probe;
pub mod endpoint;
pub mod health;
pub mod mesh;
pub mod service;
