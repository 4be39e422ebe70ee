//! Managed mode's tap reports: while an operator taps this sidecar's service, the events
//! [`crate::telemetry::tap`] queued go to the control plane in batches, one about every
//! [`BATCH_EVERY`] while requests are sampled, nothing while none are. Sent with the sidecar's
//! own credential like its ACKs and telemetry reports, so the control plane hands them to the
//! taps of the service that credential is for. A batch that fails is dropped, not retried (it
//! is a live view: late events are worth little), and the next one goes to the next replica.

use std::sync::Arc;
use std::time::Duration;

use pilotfish_api::client::SharedRoots;
use pilotfish_api::wire::{AckQuery, TapReport};

use super::managed::Managed;
use crate::state::Shared;

/// How long events gather before they are sent: a live view without a call per request.
pub const BATCH_EVERY: Duration = Duration::from_millis(150);

/// Sends the tap's events until the sidecar shuts down; `roots` as [`Managed::clients`].
pub async fn run(shared: Arc<Shared>, managed: Managed, roots: SharedRoots) {
    let clients = managed.clients(&roots, &shared.client_cert);
    let query =
        AckQuery { service: Some(managed.service.clone()), namespace: Some(managed.namespace.clone()) };
    let mut server = 0;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.tap.wait() => {}
        }
        tokio::time::sleep(BATCH_EVERY).await;
        let (events, dropped) = shared.tap.take();
        if dropped > 0 {
            tracing::debug!(dropped, "tap events dropped: the queue was full");
        }
        if events.is_empty() {
            continue;
        }
        let report = TapReport::new(events);
        if let Err(e) = clients[server].report_tap(&managed.id, &query, &report).await {
            tracing::debug!(server = %clients[server].base(), error = %e, "tap events dropped");
            server = (server + 1) % clients.len();
        }
    }
}
