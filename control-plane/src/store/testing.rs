//! For tests of what sits on the store: an embedded store that counts the events it hands out,
//! can be made unreachable or made to hang, and logs of any length to put in it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::watch;

use super::{AppendRequest, Embedded, Event, EventStore, Hold, Result, StoreError};
use crate::model::kind;

pub struct Instrumented {
    pub inner: Embedded,
    /// Events returned by `events_since` so far.
    pub read: AtomicUsize,
    /// While set, every call fails as an unreachable store's would.
    pub down: AtomicBool,
    /// While a test holds it for writing, `events_since` hangs (a slow store read).
    pub hang: tokio::sync::RwLock<()>,
}

impl Instrumented {
    fn reachable(&self) -> Result<()> {
        if self.down.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable {
                context: "test store".into(),
                cause: "connection refused".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl EventStore for Instrumented {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Event>> {
        self.reachable()?;
        self.inner.append_batch(requests).await
    }

    async fn events_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>> {
        self.reachable()?;
        let _unhung = self.hang.read().await;
        let events = self.inner.events_since(after_seq, limit).await?;
        self.read.fetch_add(events.len(), Ordering::Relaxed);
        Ok(events)
    }

    async fn head(&self) -> Result<u64> {
        self.reachable()?;
        self.inner.head().await
    }

    async fn aggregate_version(&self, aggregate: &str) -> Result<u64> {
        self.reachable()?;
        self.inner.aggregate_version(aggregate).await
    }

    async fn save_snapshot(&self, seq: u64, state: serde_json::Value) -> Result<()> {
        self.reachable()?;
        self.inner.save_snapshot(seq, state).await
    }

    async fn latest_snapshot(&self) -> Result<Option<(u64, serde_json::Value)>> {
        self.reachable()?;
        self.inner.latest_snapshot().await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.subscribe()
    }

    async fn hold(&self, name: &str) -> Result<Option<Hold>> {
        self.reachable()?;
        self.inner.hold(name).await
    }
}

/// A store holding `n` events: Service `r<i % 10>` applied with `spec.i = i`, every 7th deleted.
pub async fn log_of(n: u64) -> (tempfile::TempDir, Arc<Instrumented>) {
    let dir = tempfile::tempdir().unwrap();
    let inner = Embedded::open(dir.path()).await.unwrap();
    let store = Instrumented {
        inner,
        read: AtomicUsize::new(0),
        down: AtomicBool::new(false),
        hang: Default::default(),
    };
    let mut seq = 0;
    while seq < n {
        let batch: Vec<_> = (seq + 1..=(seq + 500).min(n))
            .map(|i| {
                let aggregate = format!("Service/default/r{}", i % 10);
                if i % 7 == 0 {
                    AppendRequest::new(aggregate, kind::RESOURCE_DELETED, json!(null), "test")
                } else {
                    let doc = json!({ "kind": "Service", "metadata": { "name": format!("r{}", i % 10) }, "spec": { "i": i } });
                    AppendRequest::new(aggregate, kind::RESOURCE_APPLIED, doc, "test")
                }
            })
            .collect();
        seq += batch.len() as u64;
        store.append_batch(batch).await.unwrap();
    }
    (dir, Arc::new(store))
}
