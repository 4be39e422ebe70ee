//! The event log: every change to the mesh is an immutable [`Event`] appended with optimistic
//! concurrency and idempotency keys, behind one [`EventStore`] trait so the backend (embedded or
//! etcd) is chosen at run time.
//!
//! - `event_store`: the trait, the append request, the errors — what every backend is held to.
//! - `embedded`: the log in a local file (redb), for one replica.
//! - `etcd`: the log in a shared etcd cluster, for several replicas.
//! - `conformance` (tests): the suite both backends must pass; `testing`: a store for tests of
//!   what sits on it.

mod embedded;
mod etcd;
mod event_store;

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub(crate) mod testing;

pub use embedded::Embedded;
pub use etcd::Etcd;
pub use event_store::{AppendRequest, Event, EventStore, Hold, Result, StoreError, HOLD_TTL};
