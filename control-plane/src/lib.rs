//! The Pilotfish control plane: the source of truth for the mesh (service registry, routes and
//! policies) and what pushes it to the sidecars. See `shared/DESIGN.md`, "The control plane".
//!
//! # Layout
//!
//! - [`store`]: the event log every change is appended to (optimistic concurrency, idempotency
//!   keys, snapshots, head watch), behind the `EventStore` trait; `store::Embedded` is the
//!   redb-backed default.
//! - [`model`]: the read model (CQRS projection) folded from the log: resources and registered
//!   endpoints; diff and rollback between points of the log.
//! - [`history`]: the configuration at earlier points of the log (diff, rollback), from
//!   checkpoints, at a bounded cost per request.
//! - [`push`]: snapshot streams to sidecars, ACK/NACK, and the proxies' sync status.
//! - [`auth`]: who is calling (admin or a service's join token) and what it may act for.
//! - [`listener`]: `serve`, the one way to run the API, on a listener that notices peers that
//!   vanish without a reset.
//! - [`server`]: the `/v1` HTTP API — resources, history, rollback, the registry with leases.
//! - [`error`]: the one mapping of the API's failures to HTTP responses.

#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod history;
pub mod listener;
pub mod model;
pub mod push;
pub mod server;
pub mod store;
