//! The control plane's background work while it serves: following the log (other writers, e.g.
//! another replica), expiring lapsed leases, forgetting long-gone proxies and moving a root
//! rotation on.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::plane::ControlPlane;

/// How often leases and disconnected proxies are looked over.
const TICK: Duration = Duration::from_millis(500);

/// Runs until `stop`.
pub async fn run(cp: Arc<ControlPlane>, stop: CancellationToken) {
    let mut heads = cp.store().subscribe();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = heads.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Err(e) = cp.refresh().await {
                    tracing::error!(error = %e, "cannot follow the event log");
                }
            }
            _ = tick.tick() => {
                cp.expire_leases().await;
                cp.proxies().forget_disconnected();
                cp.follow_ca().await;
                cp.drive_rotation().await;
            }
        }
    }
}
