//! Services and endpoints a discovery source (Kubernetes, `--kubernetes`) reports: live state the
//! source owns, kept in memory and never written to the log. The source is the truth for them,
//! so nothing here is leased or expires: an endpoint goes when the source stops reporting it.
//!
//! Each change bumps a generation; push streams watch it and send the newest snapshot. The
//! configuration's version (the log's seq) stays as it is: a sidecar ACKs a snapshot with new
//! endpoints under the same version, as it ACKs a configuration. So a proxy is `current` when it
//! holds the log's configuration, and a root rotation's "acknowledged the bundle of seq N" keeps
//! its meaning; the endpoints themselves are as fresh as the source's watch.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use pilotfish_api::{Endpoint, ServicePort};
use tokio::sync::watch;

/// One service as the source reports it (its name and namespace are its key in [`Discovery`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredService {
    pub ports: Vec<ServicePort>,
    /// Virtual IPs the apps dial (a ClusterIP); none for a headless service.
    pub addresses: Vec<IpAddr>,
    /// The instances to send traffic to now (ready ones, or terminating ones still serving when
    /// none is ready).
    pub endpoints: Vec<Endpoint>,
}

/// Every discovered service, by (name, namespace), at one generation.
#[derive(Debug, Default, PartialEq)]
pub struct Discovery {
    pub generation: u64,
    pub services: BTreeMap<(String, String), DiscoveredService>,
}

/// What the source reported last, shared with every push stream.
pub struct Discovered {
    /// Whether a source feeds this (`--kubernetes`): then a reconnecting sidecar always gets a
    /// snapshot, since the version it resumes from does not say which endpoints it holds.
    enabled: std::sync::atomic::AtomicBool,
    tx: watch::Sender<Arc<Discovery>>,
}

impl Default for Discovered {
    fn default() -> Self {
        Self { enabled: Default::default(), tx: watch::Sender::new(Arc::default()) }
    }
}

impl Discovered {
    /// Marks a source as feeding this registry.
    pub fn enable(&self) {
        self.enabled.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces everything discovered; a new generation the first time (even a cluster with no
    /// services has been listed then) and when something changed.
    pub fn publish(&self, services: BTreeMap<(String, String), DiscoveredService>) {
        self.tx.send_if_modified(|current| {
            if current.generation > 0 && current.services == services {
                return false;
            }
            *current = Arc::new(Discovery { generation: current.generation + 1, services });
            true
        });
    }

    /// Whether a source feeds this and has not yet published its first complete view: until
    /// then a snapshot would tell sidecars that no discovered service exists.
    pub fn pending(&self) -> bool {
        self.enabled() && self.tx.borrow().generation == 0
    }

    pub fn current(&self) -> Arc<Discovery> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Discovery>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(port: u16) -> BTreeMap<(String, String), DiscoveredService> {
        let s = DiscoveredService {
            ports: Vec::new(),
            addresses: Vec::new(),
            endpoints: vec![Endpoint {
                address: format!("10.0.0.1:{port}").parse().unwrap(),
                identity: None,
                labels: BTreeMap::new(),
            }],
        };
        BTreeMap::from([(("web".into(), "shop".into()), s)])
    }

    #[test]
    fn only_a_change_makes_a_generation() {
        let discovered = Discovered::default();
        discovered.enable();
        assert!(discovered.pending(), "nothing listed yet");
        let mut rx = discovered.subscribe();
        discovered.publish(BTreeMap::new());
        assert!(!discovered.pending(), "a cluster with no services has been listed too");
        assert_eq!(rx.borrow_and_update().generation, 1);
        discovered.publish(service(80));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().generation, 2);
        discovered.publish(service(80));
        assert!(!rx.has_changed().unwrap(), "the same services again are no change");
        discovered.publish(service(81));
        assert_eq!(discovered.current().generation, 3);
    }
}
