//! One sidecar's push stream: a full snapshot of its configuration, then a new one after every
//! change. A change is pushed at once (the leading edge); changes within [`MIN_INTERVAL`] of the
//! last push are coalesced into one push of the newest state when the interval ends (the trailing
//! edge), so a burst of writes costs a sidecar at most one snapshot per interval and never a
//! queue of stale ones, while a single write waits for nothing. A slow sidecar holds up no one:
//! each has its own task and a newer snapshot simply replaces an unsent older one. Empty lines
//! in between are keepalives. Services a discovery source reports (Kubernetes) change without
//! an event: their changes wake the stream the same way, and are sent under the same version.
//!
//! A sidecar of protocol 2 or later also gets a tap line whenever the taps open on its service
//! change (after its first snapshot): the filters to record requests for, none to stop.
//! Older sidecars get none (they would take it for a malformed snapshot and reconnect).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::core::{Connection, ControlPlane};
use crate::ndjson::{self, LineSender};
use pilotfish_api::wire::{TapControl, TapLine};

/// The first protocol whose sidecars read tap lines.
const TAP_PROTOCOL: u32 = 2;

/// The least time between two snapshots to one sidecar. It bounds what a burst of writes costs
/// (every snapshot is a line to build, send, parse, apply and ACK) without delaying the first
/// change (`cargo bench --bench push`: with a 50 ms wait before every push, that wait was 50 of
/// the 166 ms (p50) before 1,000 sidecars had ACKed a write).
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// An empty line this often lets both ends notice a dead connection.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// A send that does not complete in this long means the sidecar is gone (or hopelessly slow).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Streams snapshots to one sidecar until it goes away or the control plane stops.
pub async fn stream(cp: Arc<ControlPlane>, connection: Connection, mut tx: LineSender) {
    let Connection { key, generation, resume, protocol } = connection;
    let mut heads = cp.store().subscribe();
    let mut discovered = cp.discovered().subscribe();
    let taps_followed = protocol >= TAP_PROTOCOL;
    let mut taps = cp.taps().subscribe();
    // What the sidecar was last told to tap (a new connection records nothing).
    let mut tapping = TapControl::default();
    // The taps' generation last looked at.
    let mut taps_seen = None;
    let stop = cp.stopping();
    // A reconnecting sidecar that already has the current version gets nothing until a change;
    // with a discovery source its version does not say which endpoints it holds, so it does.
    let found = discovered.borrow_and_update().generation;
    let mut last_sent = (resume != 0 && !cp.discovered().enabled()).then_some((resume, found));
    // When the last snapshot went out.
    let mut sent_at: Option<Instant> = None;
    'stream: loop {
        // Not before the discovery source's first complete view: the sidecar keeps what it has
        // and gets keepalives until then.
        if !cp.discovered().pending() {
            let head = *heads.borrow_and_update();
            match cp.refresh_to(head).await {
                Ok(_) => {
                    let found = discovered.borrow_and_update().generation;
                    let (version, line) = cp.snapshot_line(&*cp.state().read().await);
                    if last_sent != Some((version, found)) {
                        if !send(&mut tx, line).await {
                            break 'stream;
                        }
                        cp.proxies().sent(&key, version);
                        last_sent = Some((version, found));
                        sent_at = Some(Instant::now());
                    }
                }
                Err(e) => {
                    // Without a readable log this replica cannot serve the sidecar: end the
                    // stream so it moves to another replica.
                    tracing::error!(proxy = %key.id, service = %key.service, error = %e, "cannot read the event log; closing the push stream");
                    break 'stream;
                }
            }
        }
        // Once the sidecar has a configuration (it reads tap lines only then), and only when
        // a tap opened or closed since the last look.
        let taps_now = *taps.borrow_and_update();
        if taps_followed && last_sent.is_some() && taps_seen != Some(taps_now) {
            taps_seen = Some(taps_now);
            let now = cp.taps().control(&key.service, &key.namespace);
            if now != tapping {
                if !send(&mut tx, ndjson::line(&TapLine::new(now.filters.clone()))).await {
                    break 'stream;
                }
                tapping = now;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break 'stream,
            changed = heads.changed() => {
                if changed.is_err() {
                    break 'stream;
                }
            }
            // The registry lives as long as the control plane: this never ends.
            Ok(()) = discovered.changed() => {}
            // Nor do the taps.
            Ok(()) = taps.changed(), if taps_followed => {}
            _ = tokio::time::sleep(KEEPALIVE) => {
                if !send(&mut tx, ndjson::KEEPALIVE_LINE).await {
                    break 'stream;
                }
                continue 'stream;
            }
        }
        // Within the interval of the last push: wait for its end, and push the newest state then
        // (whatever else changed meanwhile comes along).
        if let Some(next) = sent_at.map(|at| at + MIN_INTERVAL).filter(|next| *next > Instant::now()) {
            tokio::time::sleep_until(next).await;
        }
    }
    cp.proxies().disconnected(&key, generation);
}

/// Sends `data` on the stream; `false` when the sidecar is gone or too slow to take it.
async fn send(tx: &mut LineSender, data: Bytes) -> bool {
    ndjson::send(tx, data, SEND_TIMEOUT).await
}
