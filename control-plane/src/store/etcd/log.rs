//! The [`EventStore`] operations on etcd: reads of the log, the head and versions, snapshots
//! (compare-and-swap, so an older one never replaces a newer), and appends (in `append`).

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use tokio::sync::watch;

use super::client::{Etcd, MAX_ATTEMPTS};
use super::codec::{decode_event, decode_snapshot, malformed, parse_number, StoredSnapshot};
use super::request::within_result;
use super::watch::read_head;
use crate::store::{AppendRequest, Event, EventStore, Hold, Result, StoreError};

#[async_trait]
impl EventStore for Etcd {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Event>> {
        self.append_rounds(requests).await
    }

    async fn events_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>> {
        let Some(from) = after_seq.checked_add(1) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let options = GetOptions::new().with_range(keys.events_end()).with_limit(limit);
        let kvs = self.get(keys.event(from), Some(options), "reading events").await?;
        kvs.iter()
            .map(|kv| {
                let seq = kv
                    .key()
                    .rsplit(|&b| b == b'/')
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| malformed(&String::from_utf8_lossy(kv.key()), "not an event key"))?;
                decode_event(seq, kv.value())
            })
            .collect()
    }

    async fn head(&self) -> Result<u64> {
        let (head, _) = within_result(read_head(&self.kv(), self.keys())).await?;
        self.advance(head);
        Ok(head)
    }

    async fn aggregate_version(&self, aggregate: &str) -> Result<u64> {
        let key = self.keys().version(aggregate);
        let kvs = self.get(key.clone(), None, "reading an aggregate version").await?;
        kvs.first().map_or(Ok(0), |kv| parse_number(&key, kv))
    }

    async fn save_snapshot(&self, seq: u64, state: serde_json::Value) -> Result<()> {
        let head = self.head().await?;
        if seq > head {
            return Err(StoreError::SnapshotAhead { seq, head });
        }
        let key = self.keys().snapshot();
        let value =
            serde_json::to_vec(&StoredSnapshot { seq, state }).expect("a JSON value always serializes");
        // Compare-and-swap on the snapshot key, so a late writer of an older snapshot never
        // replaces a newer one written by another replica.
        for _ in 0..MAX_ATTEMPTS {
            let current = self.get(key.clone(), None, "reading the snapshot").await?;
            let revision = match current.first() {
                Some(kv) if decode_snapshot(kv)?.0 >= seq => return Ok(()),
                Some(kv) => kv.mod_revision(),
                None => 0,
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            if self.txn(txn, "saving a snapshot", 1).await?.succeeded() {
                return Ok(());
            }
        }
        Err(StoreError::Database {
            context: format!("saving a snapshot to etcd at {}", self.endpoints()),
            cause: "other replicas kept replacing the snapshot; try again".into(),
        })
    }

    async fn latest_snapshot(&self) -> Result<Option<(u64, serde_json::Value)>> {
        let kvs = self.get(self.keys().snapshot(), None, "reading the snapshot").await?;
        kvs.first().map(decode_snapshot).transpose()
    }

    fn shared(&self) -> bool {
        true
    }

    async fn hold(&self, name: &str) -> Result<Option<Hold>> {
        self.take_lock(name).await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.heads()
    }
}
