//! The driver: a background loop of every control-plane replica that, a few times a second,
//! takes the store's lock `rollout/namespace/name` of each rollout under way (or keeps it) and
//! makes that rollout's next move. One replica drives a given rollout at a time; when it dies
//! its locks lapse (etcd: within [`HOLD_TTL`](crate::store::HOLD_TTL)) and another replica
//! takes them and goes on from the log. A lock is let go once its rollout has ended (or is
//! gone), and dropped when it is lost, to be taken again if still free.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::{ControlPlane, Moved};
use crate::store::Hold;

/// How often every rollout is looked at: well under the shortest interval (5 s), so a step
/// ends within a fraction of a second of being due.
const TICK: Duration = Duration::from_millis(250);

/// Runs until `stop`.
pub async fn run(cp: Arc<ControlPlane>, stop: CancellationToken) {
    let mut held: HashMap<String, Hold> = HashMap::new();
    let heads = cp.store().subscribe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The log's head as the store's watch knows it: no store read when nothing moved.
        let head = *heads.borrow();
        if let Err(e) = cp.refresh_to(head).await {
            tracing::warn!(error = %e, "rollouts wait: cannot read the event log");
            continue;
        }
        let keys = cp.rollouts_to_drive().await;
        held.retain(|key, hold| {
            let keep = keys.contains(key) && !hold.is_lost();
            if !keep {
                tracing::info!(rollout = %key, lost = hold.is_lost(), "no longer driving the rollout");
            }
            keep
        });
        for key in keys {
            if !held.contains_key(&key) {
                match cp.store().hold(&format!("rollout/{key}")).await {
                    Ok(Some(hold)) => {
                        tracing::info!(rollout = %key, "driving the rollout");
                        held.insert(key.clone(), hold);
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(rollout = %key, error = %e, "cannot take the rollout's lock");
                        continue;
                    }
                }
            }
            match cp.drive_rollout(&key).await {
                Ok(Moved::Wrote | Moved::Waiting) => {}
                Ok(Moved::Lost) => {
                    tracing::debug!(rollout = %key, "another writer took the transition first")
                }
                Err(e) => tracing::warn!(rollout = %key, error = %e, "cannot move the rollout on"),
            }
        }
    }
}
