//! The control plane's own health: readiness (the event store answers) and its metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::error::{Error, Result};
use super::plane::ControlPlane;
use crate::store::StoreError;

/// Readiness answers within this even when the store does not.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

impl ControlPlane {
    /// Ready while the event store answers; otherwise the reason, so a load balancer sends
    /// clients to a replica that can serve them.
    pub async fn ready(&self) -> Result<()> {
        if self.discovered().pending() {
            return Err(Error::Unavailable("waiting for the first lists of the Kubernetes cluster".into()));
        }
        match tokio::time::timeout(READY_TIMEOUT, self.refresh()).await {
            Ok(result) => result.map(|_| ()).map_err(Error::from),
            Err(_) => Err(Error::Store(StoreError::Unavailable {
                context: "not ready".into(),
                cause: format!("the event store did not answer within {READY_TIMEOUT:?}").into(),
            })),
        }
    }

    /// The metrics in the Prometheus text format.
    pub async fn metrics(&self) -> String {
        let (seq, resources, endpoints, rotation) = {
            let state = self.state.read().await;
            let rotation = state.ca.rotation.as_ref().map(|r| r.phase);
            (state.seq, state.resources.len(), state.endpoints.len(), rotation)
        };
        let proxies = self.proxies.list(seq);
        let connected = proxies.iter().filter(|p| p.connected).count();
        let current = proxies.iter().filter(|p| p.connected && p.current).count();
        let pushes = self.proxies.pushes.load(Ordering::Relaxed);
        let mut text = String::new();
        for (name, kind, help, value) in [
            ("pilotfish_cp_event_log_seq", "gauge", "Last sequence number in the event log", seq),
            ("pilotfish_cp_resources", "gauge", "Resources in force", resources as u64),
            ("pilotfish_cp_endpoints", "gauge", "Registered endpoints with a live lease", endpoints as u64),
            ("pilotfish_cp_connected_proxies", "gauge", "Sidecars holding a push stream", connected as u64),
            (
                "pilotfish_cp_current_proxies",
                "gauge",
                "Connected sidecars that acked the current version",
                current as u64,
            ),
            ("pilotfish_cp_pushes_total", "counter", "Snapshots pushed to sidecars", pushes),
        ] {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        text.push_str(&self.ca_metrics(rotation));
        text
    }
}
