//! One sidecar's push stream: a full snapshot of its configuration, then a new one after every
//! change. Bursts of writes are coalesced (a sidecar is sent the newest state once the log has
//! been quiet for a moment, never a queue of stale ones), and a slow sidecar holds up no one:
//! each has its own task and a newer snapshot simply replaces an unsent older one. Empty lines
//! in between are keepalives.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::Sender;

use crate::core::{Connection, ControlPlane};

/// How long the log must be quiet before a change is pushed (coalescing bursts).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// An empty line this often lets both ends notice a dead connection.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// A send that does not complete in this long means the sidecar is gone (or hopelessly slow).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Streams snapshots to one sidecar until it goes away or the control plane stops.
pub async fn stream(cp: Arc<ControlPlane>, connection: Connection, mut tx: Sender<Bytes, Infallible>) {
    let Connection { key, generation, resume } = connection;
    let mut heads = cp.store().subscribe();
    let stop = cp.stopping();
    // A reconnecting sidecar that already has the current version gets nothing until a change.
    let mut last_sent = (resume != 0).then_some(resume);
    'stream: loop {
        let head = *heads.borrow_and_update();
        match cp.refresh_to(head).await {
            Ok(_) => {
                let (version, line) = cp.snapshot_line(&*cp.state().read().await);
                if last_sent != Some(version) {
                    match tokio::time::timeout(SEND_TIMEOUT, tx.send_data(line)).await {
                        Ok(Ok(())) => {}
                        _ => break 'stream,
                    }
                    cp.proxies().sent(&key, version).await;
                    last_sent = Some(version);
                }
            }
            Err(e) => {
                // Without a readable log this replica cannot serve the sidecar: end the stream so
                // it moves to another replica.
                tracing::error!(proxy = %key.id, service = %key.service, error = %e, "cannot read the event log; closing the push stream");
                break 'stream;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break 'stream,
            changed = heads.changed() => {
                if changed.is_err() {
                    break 'stream;
                }
                tokio::time::sleep(DEBOUNCE).await;
            }
            _ = tokio::time::sleep(KEEPALIVE) => {
                match tokio::time::timeout(SEND_TIMEOUT, tx.send_data(Bytes::from_static(b"\n"))).await {
                    Ok(Ok(())) => {}
                    _ => break 'stream,
                }
            }
        }
    }
    cp.proxies().disconnected(&key, generation).await;
}
