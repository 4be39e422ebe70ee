//! The leases of registered instances: when each lapses without a heartbeat, and whose it is
//! to expire. Live state kept in memory, not in the log (heartbeats would flood it).

use std::collections::HashMap;

use tokio::sync::{Mutex, MutexGuard};
use tokio::time::{Duration, Instant};

/// A registered instance's lease: when it lapses, and the version of the registration it
/// belongs to (an expiry only removes that registration, never a newer one).
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub deadline: Instant,
    pub ttl: Duration,
    pub version: u64,
    /// Granted or renewed by this replica. With a shared log another replica may hold the
    /// instance's heartbeats, so a lease this replica only loaded is not its to expire.
    pub owned: bool,
}

/// Every lease this replica knows, by instance id. Writers that pair a store append with a
/// lease change hold the lock across both, so the two never disagree.
#[derive(Debug, Default)]
pub struct Leases(Mutex<HashMap<String, Lease>>);

impl Leases {
    pub async fn lock(&self) -> MutexGuard<'_, HashMap<String, Lease>> {
        self.0.lock().await
    }

    /// The owned leases lapsed at `now`: (instance id, registration version).
    pub async fn lapsed(&self, now: Instant) -> Vec<(String, u64)> {
        self.lock()
            .await
            .iter()
            .filter(|(_, l)| l.owned && l.deadline <= now)
            .map(|(id, l)| (id.clone(), l.version))
            .collect()
    }

    /// Drops a lapsed lease once its expiry is recorded, unless it was renewed meanwhile.
    pub async fn forget_lapsed(&self, id: &str, version: u64, now: Instant) {
        let mut leases = self.lock().await;
        if leases.get(id).is_some_and(|l| l.version == version && l.deadline <= now) {
            leases.remove(id);
        }
    }
}
