//! Managed mode's telemetry: every [`REPORT_EVERY`] the per-edge counts
//! ([`crate::telemetry::edges`]) are collected and posted to the control plane as one
//! [`StatsReport`], with the sidecar's own credential like its ACKs, so the control plane
//! knows the reporting service from the credential.
//!
//! This runs in its own task: the request path only ever adds to atomics. A report that fails
//! is dropped and counted (`pilotfish_stats_reports_dropped_total`), not retried — its counts
//! are lost, the next report's are not — and the next one goes to the next control-plane
//! replica. A report goes out even with no traffic: it tells the control plane the sidecar is
//! there (the `MESHED` column). Each report also says how many endpoints of each destination
//! the circuit breakers keep out now (destinations with none are left out).

use std::sync::Arc;
use std::time::Duration;

use pilotfish_api::client::SharedRoots;
use pilotfish_api::wire::stats::MAX_EDGES_PER_REPORT;
use pilotfish_api::wire::{AckQuery, BreakersOpen, StatsReport, DEFAULT_NAMESPACE};
use tokio::time::MissedTickBehavior;

use super::managed::Managed;
use crate::resilience::breaker::BreakerState;
use crate::snapshot::Snapshot;
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
        let mut report = StatsReport::new(identity, edges, dropped);
        report.breakers = breakers_open(&shared.snapshot.load());
        if let Err(e) = clients[server].report_stats(&managed.id, &query, &report).await {
            tracing::debug!(server = %clients[server].base(), error = %e, "telemetry report dropped");
            shared.metrics.stats_reports_dropped.inc();
            server = (server + 1) % clients.len();
        }
    }
}

/// The destinations some of whose endpoints the circuit breakers keep out (open or half-open)
/// now, and how many; at most [`MAX_EDGES_PER_REPORT`] of them.
fn breakers_open(snap: &Snapshot) -> Vec<BreakersOpen> {
    snap.built_services()
        .filter_map(|svc| {
            let open = svc
                .endpoints
                .iter()
                .filter(|e| e.guard.as_ref().is_some_and(|g| g.breaker.state() != BreakerState::Closed))
                .count() as u64;
            let (name, namespace) = svc.key.split_once('.').unwrap_or((&svc.key, DEFAULT_NAMESPACE));
            (open > 0).then(|| BreakersOpen {
                service: name.to_owned(),
                namespace: namespace.to_owned(),
                open,
            })
        })
        .take(MAX_EDGES_PER_REPORT)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Overrides;
    use crate::telemetry::metrics::Metrics;

    #[tokio::test(start_paused = true)]
    async fn a_report_counts_the_endpoints_the_breakers_keep_out() {
        let config = "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {name: users, namespace: shop}\nspec: {endpoints: [{address: 127.0.0.1:9001}, {address: 127.0.0.1:9002}]}\n---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {name: quiet}\nspec: {endpoints: [{address: 127.0.0.1:9003}]}\n";
        let snap =
            Snapshot::build("test.yaml", config, &Overrides::default(), None, &Metrics::new()).unwrap();
        let users = snap.service("users.shop").unwrap();
        snap.service("quiet.default").unwrap();
        assert!(breakers_open(&snap).is_empty(), "all closed");
        let breaker = &users.endpoints[1].guard.as_ref().unwrap().breaker;
        let now = tokio::time::Instant::now();
        for _ in 0..5 {
            breaker.on_failure(now);
        }
        let open = breakers_open(&snap);
        assert_eq!(open, [BreakersOpen { service: "users".into(), namespace: "shop".into(), open: 1 }]);
    }
}
