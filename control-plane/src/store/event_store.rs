//! The event log's contract: every change to the mesh is an immutable [`Event`] appended with
//! optimistic concurrency and idempotency keys, behind one [`EventStore`] trait that each
//! backend implements, and the [`StoreError`]s they fail with.

use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One committed change: stored as the API shows it, so the log and `GET /v1/events` are one
/// shape.
pub use pilotfish_api::wire::Event;

/// A change to append; see [`EventStore::append`] for the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendRequest {
    pub aggregate: String,
    /// The aggregate's current version as the writer last read it (0: it has no events yet);
    /// `None` appends whatever the version is.
    pub expected_version: Option<u64>,
    pub kind: String,
    pub data: serde_json::Value,
    pub actor: String,
    pub idempotency_key: Option<String>,
}

impl AppendRequest {
    /// An unconditional append with no idempotency key.
    pub fn new(
        aggregate: impl Into<String>,
        kind: impl Into<String>,
        data: serde_json::Value,
        actor: impl Into<String>,
    ) -> Self {
        Self {
            aggregate: aggregate.into(),
            expected_version: None,
            kind: kind.into(),
            data,
            actor: actor.into(),
            idempotency_key: None,
        }
    }

    pub fn expect_version(self, version: u64) -> Self {
        Self { expected_version: Some(version), ..self }
    }

    pub fn idempotency_key(self, key: impl Into<String>) -> Self {
        Self { idempotency_key: Some(key.into()), ..self }
    }

    /// The event this request becomes once a backend has placed it at `seq` / `version`.
    pub(super) fn into_event(self, seq: u64, version: u64) -> Event {
        Event {
            seq,
            id: uuid::Uuid::new_v4().to_string(),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind: self.kind,
            aggregate: self.aggregate,
            version,
            data: self.data,
            actor: self.actor,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "aggregate `{aggregate}` is at version {actual}, not the expected {expected}: \
         read it again and retry against version {actual}"
    )]
    Conflict { aggregate: String, expected: u64, actual: u64 },

    #[error("cannot snapshot at seq {seq}: the log ends at seq {head}")]
    SnapshotAhead { seq: u64, head: u64 },

    // The cause is part of the message rather than `source()`, so a one-line `to_string()` (an
    // HTTP error body, a log line) says everything without repeating itself in error chains.
    #[error("data directory {}: {cause}; check that it exists and is writable", path.display())]
    Io { path: PathBuf, cause: std::io::Error },

    #[error("{context}: {cause}")]
    Database { context: String, cause: Box<dyn std::error::Error + Send + Sync> },

    #[error("event store is corrupt at seq {seq}: {reason}; restore the data directory from a backup")]
    Corrupt { seq: u64, reason: String },

    /// The backend cannot be reached (or cannot decide) right now; the same request can work
    /// later, so the API answers 503 with `Retry-After` rather than 500.
    #[error("{context}: {cause}; the event store is unreachable for now, retry shortly")]
    Unavailable { context: String, cause: Box<dyn std::error::Error + Send + Sync> },
}

/// The event log. Every method is safe to call concurrently; writes are serialized by the backend.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends one event, returning it as committed; it is durable when this returns.
    ///
    /// - If `idempotency_key` was used before, returns the first event written with it and writes
    ///   nothing, whatever the rest of the request says (so a client's retry is harmless).
    /// - Otherwise, if `expected_version` is `Some(v)` and the aggregate is not at `v`, fails with
    ///   [`StoreError::Conflict`] and writes nothing.
    async fn append(&self, request: AppendRequest) -> Result<Event> {
        let mut events = self.append_batch(vec![request]).await?;
        Ok(events.pop().expect("a batch of one commits one event"))
    }

    /// Appends all of `requests`, in order, or none of them: one conflict fails the whole batch.
    /// Each request follows the rules of [`EventStore::append`], its expected version checked
    /// against the aggregate as the earlier requests of the batch left it. Returns one event per
    /// request.
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Event>>;

    /// Up to `limit` events with `seq > after_seq`, in ascending order.
    async fn events_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>>;

    /// The last committed seq, 0 when the log is empty.
    async fn head(&self) -> Result<u64>;

    /// The version of the aggregate's last event, 0 when it has none.
    async fn aggregate_version(&self, aggregate: &str) -> Result<u64>;

    /// Stores the read model's whole state as of `seq`, replacing older snapshots.
    async fn save_snapshot(&self, seq: u64, state: serde_json::Value) -> Result<()>;

    /// The snapshot with the highest seq, if any.
    async fn latest_snapshot(&self) -> Result<Option<(u64, serde_json::Value)>>;

    /// The head, updated after each commit — including commits by other replicas sharing the
    /// backend. A `watch` rather than a `broadcast`: readers want the newest head, not every
    /// step, so bursts coalesce and a slow reader never lags behind or errors.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Whether other control-plane replicas write to the same log (etcd), so live state kept
    /// in one replica's memory — leases — may be renewed elsewhere.
    fn shared(&self) -> bool {
        false
    }

    /// Takes the lock `name` if no one (this process or another replica sharing the backend)
    /// holds it: `None` when someone does. The lock is held until the [`Hold`] is dropped, or
    /// until it is lost — a replica that cannot renew it within a few seconds (etcd: a lease of
    /// [`HOLD_TTL`]) loses it, and another may take it. Work done under a lock must still be
    /// fenced by the log (expected versions): a holder learns of a loss only after the fact.
    async fn hold(&self, name: &str) -> Result<Option<Hold>>;
}

/// How long a lock outlives a replica that stopped renewing it (died, or lost the backend).
pub const HOLD_TTL: std::time::Duration = std::time::Duration::from_secs(3);

/// A lock taken with [`EventStore::hold`]; dropping it releases the lock.
pub struct Hold {
    lost: CancellationToken,
    _release: Box<dyn Send + Sync>,
}

impl Hold {
    /// A held lock: `lost` is cancelled when it lapses; `release` is dropped to let it go.
    pub(super) fn new(lost: CancellationToken, release: impl Send + Sync + 'static) -> Self {
        Self { lost, _release: Box::new(release) }
    }

    /// Whether the lock lapsed (it could not be renewed in time): someone else may hold it now.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Completes when the lock lapses.
    pub fn lost(&self) -> WaitForCancellationFuture<'_> {
        self.lost.cancelled()
    }
}
