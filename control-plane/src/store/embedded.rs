//! The embedded backend: the event log in one redb file in the data directory — crash-safe, no
//! server to run, one control-plane process at a time (redb locks the file), so its locks
//! ([`EventStore::hold`]) are this process's alone.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AppendRequest, Event, EventStore, Hold, Result, StoreError};

/// seq → the event as JSON.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// aggregate → its current version.
const VERSIONS: TableDefinition<&str, u64> = TableDefinition::new("aggregate_versions");
/// idempotency key → seq of the first event written with it.
const IDEMPOTENCY_KEYS: TableDefinition<&str, u64> = TableDefinition::new("idempotency_keys");
/// seq → the read model's state as JSON; only the latest is kept.
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");

const FILE_NAME: &str = "events.redb";

/// The redb-backed [`EventStore`]. redb is blocking, so every transaction runs on tokio's
/// blocking pool and async callers never stall the runtime.
pub struct Embedded {
    inner: Arc<Inner>,
    /// The locks held ([`EventStore::hold`]): one process owns the file, so they live here.
    held: Arc<Mutex<HashSet<String>>>,
}

/// Releases a lock of [`Embedded::held`] when dropped.
struct Release {
    held: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
    }
}

struct Inner {
    db: Database,
    head: watch::Sender<u64>,
}

impl Embedded {
    /// Opens the log in `data_dir` (created if missing), recovering from any earlier crash.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        let data_dir = data_dir.to_owned();
        let inner = run_blocking(move || {
            std::fs::create_dir_all(&data_dir)
                .map_err(|cause| StoreError::Io { path: data_dir.clone(), cause })?;
            let path = data_dir.join(FILE_NAME);
            let db =
                Database::create(&path).context(format!("opening the event store {}", path.display()))?;
            // Create every table up front so read transactions never meet a missing one.
            let txn = begin_write(&db)?;
            txn.open_table(EVENTS).context("creating tables")?;
            txn.open_table(VERSIONS).context("creating tables")?;
            txn.open_table(IDEMPOTENCY_KEYS).context("creating tables")?;
            txn.open_table(SNAPSHOTS).context("creating tables")?;
            txn.commit().context("creating tables")?;
            let head = read_head(&db)?;
            Ok(Inner { db, head: watch::Sender::new(head) })
        })
        .await?;
        Ok(Self { inner: Arc::new(inner), held: Arc::default() })
    }

    async fn with_inner<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || f(&inner)).await
    }
}

#[async_trait]
impl EventStore for Embedded {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Event>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.with_inner(move |inner| {
            let events = append_in_one_transaction(&inner.db, requests)?;
            // Notify here rather than in the async caller, so a caller that stops waiting cannot
            // leave a commit unannounced. Commits finish in any order; the head only moves forward.
            let last = events.iter().map(|e| e.seq).max().unwrap_or(0);
            inner.head.send_if_modified(|head| {
                let moved = last > *head;
                *head = (*head).max(last);
                moved
            });
            Ok(events)
        })
        .await
    }

    async fn events_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>> {
        self.with_inner(move |inner| {
            let txn = inner.db.begin_read().context("reading events")?;
            let log = txn.open_table(EVENTS).context("reading events")?;
            log.range((Bound::Excluded(after_seq), Bound::Unbounded))
                .context("reading events")?
                .take(limit)
                .map(|entry| {
                    let (seq, json) = entry.context("reading events")?;
                    decode_event(seq.value(), json.value())
                })
                .collect()
        })
        .await
    }

    async fn head(&self) -> Result<u64> {
        // Exact for this process: the only writer (redb locks the file) updates it after each commit.
        Ok(*self.inner.head.borrow())
    }

    async fn hold(&self, name: &str) -> Result<Option<Hold>> {
        // Never lost: nothing else can write this log while the process runs.
        let taken = self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned());
        Ok(taken.then(|| {
            Hold::new(CancellationToken::new(), Release { held: self.held.clone(), name: name.to_owned() })
        }))
    }

    async fn aggregate_version(&self, aggregate: &str) -> Result<u64> {
        let aggregate = aggregate.to_owned();
        self.with_inner(move |inner| {
            let txn = inner.db.begin_read().context("reading an aggregate version")?;
            let versions = txn.open_table(VERSIONS).context("reading an aggregate version")?;
            let version = versions.get(aggregate.as_str()).context("reading an aggregate version")?;
            Ok(version.map_or(0, |v| v.value()))
        })
        .await
    }

    async fn save_snapshot(&self, seq: u64, state: serde_json::Value) -> Result<()> {
        self.with_inner(move |inner| {
            let head = *inner.head.borrow();
            if seq > head {
                return Err(StoreError::SnapshotAhead { seq, head });
            }
            let json = serde_json::to_vec(&state).expect("a JSON value always serializes");
            let txn = begin_write(&inner.db)?;
            {
                let mut snapshots = txn.open_table(SNAPSHOTS).context("saving a snapshot")?;
                snapshots.insert(seq, json.as_slice()).context("saving a snapshot")?;
                snapshots.retain_in(..seq, |_, _| false).context("dropping old snapshots")?;
            }
            txn.commit().context("saving a snapshot")
        })
        .await
    }

    async fn latest_snapshot(&self) -> Result<Option<(u64, serde_json::Value)>> {
        self.with_inner(|inner| {
            let txn = inner.db.begin_read().context("reading the snapshot")?;
            let snapshots = txn.open_table(SNAPSHOTS).context("reading the snapshot")?;
            let Some((seq, json)) = snapshots.last().context("reading the snapshot")? else {
                return Ok(None);
            };
            let state = serde_json::from_slice(json.value()).map_err(|e| StoreError::Corrupt {
                seq: seq.value(),
                reason: format!("snapshot is not JSON: {e}"),
            })?;
            Ok(Some((seq.value(), state)))
        })
        .await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }
}

/// The whole batch in one write transaction: redb admits one writer at a time, so the version and
/// idempotency checks and the writes they guard cannot interleave with another append.
fn append_in_one_transaction(db: &Database, requests: Vec<AppendRequest>) -> Result<Vec<Event>> {
    let txn = begin_write(db)?;
    let mut events = Vec::with_capacity(requests.len());
    {
        let mut log = txn.open_table(EVENTS).context("appending")?;
        let mut versions = txn.open_table(VERSIONS).context("appending")?;
        let mut keys = txn.open_table(IDEMPOTENCY_KEYS).context("appending")?;
        let mut seq = log.last().context("appending")?.map_or(0, |(seq, _)| seq.value());
        for request in requests {
            if let Some(key) = &request.idempotency_key {
                if let Some(first) = keys.get(key.as_str()).context("appending")?.map(|s| s.value()) {
                    let json = log.get(first).context("appending")?.ok_or_else(|| StoreError::Corrupt {
                        seq: first,
                        reason: format!("idempotency key `{key}` points at a missing event"),
                    })?;
                    events.push(decode_event(first, json.value())?);
                    continue;
                }
            }
            let actual =
                versions.get(request.aggregate.as_str()).context("appending")?.map_or(0, |v| v.value());
            if let Some(expected) = request.expected_version.filter(|&v| v != actual) {
                // Returning drops `txn` uncommitted, which aborts it: nothing of the batch is written.
                return Err(StoreError::Conflict { aggregate: request.aggregate, expected, actual });
            }
            seq += 1;
            if let Some(key) = &request.idempotency_key {
                keys.insert(key.as_str(), seq).context("appending")?;
            }
            versions.insert(request.aggregate.as_str(), actual + 1).context("appending")?;
            let event = request.into_event(seq, actual + 1);
            let json = serde_json::to_vec(&event).expect("an event always serializes");
            log.insert(seq, json.as_slice()).context("appending")?;
            events.push(event);
        }
    }
    txn.commit().context("committing an append")?;
    Ok(events)
}

fn begin_write(db: &Database) -> Result<WriteTransaction> {
    let mut txn = db.begin_write().context("starting a write")?;
    // redb's default, made explicit because it is this backend's promise: commit() returns only
    // once the data is on disk, so an acknowledged write survives SIGKILL or power loss.
    txn.set_durability(Durability::Immediate);
    Ok(txn)
}

fn read_head(db: &Database) -> Result<u64> {
    let txn = db.begin_read().context("reading the head")?;
    let log = txn.open_table(EVENTS).context("reading the head")?;
    let head = log.last().context("reading the head")?.map_or(0, |(seq, _)| seq.value());
    Ok(head)
}

fn decode_event(seq: u64, json: &[u8]) -> Result<Event> {
    serde_json::from_slice(json)
        .map_err(|e| StoreError::Corrupt { seq, reason: format!("event is not valid JSON: {e}") })
}

async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        // A panic in a store transaction is a bug: let it surface as the panic it was.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Database {
            context: "store worker (is the runtime shutting down?)".into(),
            cause: e.into(),
        }),
    }
}

/// Attaches what the store was doing to a redb error.
trait Context<T> {
    fn context(self, doing: impl Into<String>) -> Result<T>;
}

impl<T, E: Into<redb::Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, doing: impl Into<String>) -> Result<T> {
        self.map_err(|e| StoreError::Database { context: doing.into(), cause: Box::new(e.into()) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tempfile::TempDir;

    use super::*;

    async fn fresh() -> (Arc<dyn EventStore>, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).await.unwrap();
        (Arc::new(store), dir)
    }

    crate::store::conformance::conformance_tests!(fresh);

    #[tokio::test]
    async fn everything_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).await.unwrap();
        let keyed =
            AppendRequest::new("svc/users", "ServiceApplied", json!({"n": 0}), "alice").idempotency_key("k");
        let first = store.append(keyed.clone()).await.unwrap();
        for n in 1..5 {
            store
                .append(AppendRequest::new("svc/users", "ServiceApplied", json!({"n": n}), "alice"))
                .await
                .unwrap();
        }
        store.save_snapshot(3, json!({"at": 3})).await.unwrap();
        let before = store.events_since(0, 100).await.unwrap();
        drop(store);

        let store = Embedded::open(dir.path()).await.unwrap();
        assert_eq!(store.events_since(0, 100).await.unwrap(), before);
        assert_eq!(store.head().await.unwrap(), 5);
        assert_eq!(*store.subscribe().borrow(), 5);
        assert_eq!(store.aggregate_version("svc/users").await.unwrap(), 5);
        assert_eq!(store.latest_snapshot().await.unwrap(), Some((3, json!({"at": 3}))));
        assert_eq!(store.append(keyed).await.unwrap(), first, "idempotency keys persist");
        let next =
            store.append(AppendRequest::new("svc/web", "ServiceApplied", json!({}), "bob")).await.unwrap();
        assert_eq!((next.seq, next.version), (6, 1));
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Embedded::open(dir.path()).await.unwrap();
        let Err(err) = Embedded::open(dir.path()).await else { panic!("opened the data dir twice") };
        assert!(matches!(err, StoreError::Database { .. }), "{err}");
        assert!(err.to_string().contains(FILE_NAME), "the error names the file: {err}");
    }

    #[tokio::test]
    async fn an_unusable_data_dir_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let Err(err) = Embedded::open(&file).await else { panic!("opened a file as a data dir") };
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
