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
//! - [`push`]: snapshot streams to sidecars, ACK/NACK, and the proxies' sync status.
//! - [`server`]: the `/v1` HTTP API — resources, history, rollback, the registry with leases.

#![forbid(unsafe_code)]

pub mod model;
pub mod push;
pub mod server;
pub mod store;
