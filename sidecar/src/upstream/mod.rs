//! Where requests go, at run time: per-service and per-endpoint state that outlives a request
//! (and, where it can, a reload).
//! - [`health`]: active health checks that take endpoints out of the balancer and put them back.

pub mod health;
