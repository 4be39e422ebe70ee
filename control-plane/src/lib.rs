//! The Pilotfish control plane: the source of truth for the mesh (service registry, routes and
//! policies) and what pushes it to the sidecars. See `shared/DESIGN.md`, "The control plane".
//!
//! # Layout
//!
//! - [`store`]: the event log every change is appended to (optimistic concurrency, idempotency
//!   keys, snapshots, head watch), behind the `EventStore` trait; `store::Embedded` is the
//!   redb-backed default.

#![forbid(unsafe_code)]

pub mod store;
