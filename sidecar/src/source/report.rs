//! Managed mode's telemetry: every [`REPORT_EVERY`] the per-edge counts
//! ([`crate::telemetry::edges`]) are collected and posted to the control plane as one
//! [`StatsReport`], with the sidecar's own credential like its ACKs, so the control plane
//! knows the reporting service from the credential.
//!
//! This runs in its own task: the request path only ever adds to atomics. A report that fails
//! is dropped and counted (`pilotfish_stats_reports_dropped_total`), not retried — its counts
//! are lost, the next report's are not — and the next one goes to the next control-plane
//! replica. A report goes out even with no traffic: it tells the control plane the sidecar is
//! there (the `MESHED` column).

use std::sync::Arc;
use std::time::Duration;

use pilotfish_api::client::SharedRoots;
use pilotfish_api::wire::{AckQuery, StatsReport};
use tokio::time::MissedTickBehavior;

use super::managed::Managed;
use crate::state::Shared;

/// How often a sidecar reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Reports every [`REPORT_EVERY`] until the sidecar shuts down; `roots` as
/// [`Managed::clients`].
pub async fn run(shared: Arc<Shared>, managed: Managed, roots: SharedRoots) {
    let clients = managed.clients(&roots, &shared.client_cert);
    let query =
        AckQuery { service: Some(managed.service.clone()), namespace: Some(managed.namespace.clone()) };
    let mut server = 0;
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (edges, dropped) = shared.metrics.edges.collect();
        let identity = shared.identity.load().as_ref().map(|i| i.id.to_string());
        let report = StatsReport::new(identity, edges, dropped);
        if let Err(e) = clients[server].report_stats(&managed.id, &query, &report).await {
            tracing::debug!(server = %clients[server].base(), error = %e, "telemetry report dropped");
            shared.metrics.stats_reports_dropped.inc();
            server = (server + 1) % clients.len();
        }
    }
}
