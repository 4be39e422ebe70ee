//! The etcd backend: the event log in a shared etcd cluster, so several control-plane replicas
//! append to one log and learn of each other's writes through an etcd watch.
//!
//! Keys, all under the prefix given to [`Etcd::connect`] (a `/` is added if it lacks one):
//!
//! | key                         | value                                            |
//! |-----------------------------|--------------------------------------------------|
//! | `head`                      | the last committed seq, decimal                  |
//! | `events/<seq, 20 digits>`   | the event as JSON (zero-padded so keys sort by seq) |
//! | `versions/<aggregate>`      | the aggregate's current version, decimal         |
//! | `keys/<idempotency key>`    | the seq of the first event written with it       |
//! | `snapshot`                  | `{"seq": N, "state": ...}`, only the latest      |
//! | `ca`                        | the mesh CA replicas share: certificates, sealed keys (`ca::shared`) |
//! | `locks/<name>`              | a lock's holder, attached to its lease (`hold`)  |
//!
//! An append reads the head, the versions and the idempotency keys it touches in one read-only
//! transaction (one consistent revision), decides the outcome in memory exactly as the embedded
//! backend does, then writes everything in ONE transaction guarded by the mod revisions it read:
//! the head, every aggregate it bumps, and the absence of every idempotency key it claims. If
//! another replica committed in between, the guard fails, nothing is written, and the append
//! starts over from a fresh read — where a moved aggregate becomes a [`StoreError::Conflict`]
//! against the caller's expected version, and a claimed key becomes a replay of the first event.
//!
//! etcd limits one transaction to `--max-txn-ops` operations (128 by default); a batch of N
//! events needs up to 3·N + 1, so large batches need that limit raised on the etcd server.
//!
//! - `client`: the connection, shared by every clone of [`Etcd`], and its requests.
//! - `keys`: the key names above, under the prefix.
//! - `append`: an append's read-decide-commit rounds.
//! - `log`: the [`super::EventStore`] operations on etcd (reads, snapshots; appends via `append`).
//! - `watch`: the head watch, which tells this replica of every replica's commits.
//! - `request`: one request's timeout, and etcd's errors as [`super::StoreError`]s.
//! - `codec`: the values as stored (numbers, events, snapshots).
//! - `hold`: locks ([`super::EventStore::hold`]): a key created only if absent, attached to a
//!   lease of [`super::HOLD_TTL`] that the holder keeps alive, so a dead holder's lock lapses.
//! - `shared_ca`: the one key beside the log, the CA replicas share, created by the first.

mod append;
mod client;
mod codec;
mod hold;
mod keys;
mod log;
mod request;
mod shared_ca;
mod watch;

#[cfg(test)]
mod server;
#[cfg(test)]
mod tests;

pub use client::Etcd;
