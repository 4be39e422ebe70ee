//! What every listener and connection of one sidecar shares: the config snapshot in force, the
//! metrics, and the shutdown signal with the tracker that drain waits on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Snapshot;
use crate::metrics::Metrics;

pub struct Shared {
    /// Swapped whole on reload; a connection or request loads it once.
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the sidecar starts draining.
    pub shutdown: CancellationToken,
    /// Every connection task, so that drain can wait for them.
    pub tracker: TaskTracker,
    ready: AtomicBool,
}

impl Shared {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.config_version.set(snapshot.version as i64);
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            ready: AtomicBool::new(false),
        })
    }

    /// Ready once config is loaded and the listeners are bound, until drain starts.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutdown.is_cancelled()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}
