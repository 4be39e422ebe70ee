//! The namespaces, as a reflector keeps them: their annotations for the injection webhook
//! ([`crate::core::NamespaceAnnotations`]), their labels for the trust-bundle ConfigMaps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::core::NamespaceAnnotations;

/// The label that turns injection on for a namespace's pods.
pub const INJECT: &str = "pilotfish.io/inject";

/// The namespaces the reflector holds.
pub struct Namespaces(pub Store<Namespace>);

impl NamespaceAnnotations for Namespaces {
    fn get(&self, namespace: &str) -> BTreeMap<String, String> {
        self.0
            .get(&ObjectRef::new(namespace))
            .and_then(|ns| ns.metadata.annotations.clone())
            .unwrap_or_default()
    }
}

impl Namespaces {
    /// The namespaces labelled `pilotfish.io/inject=enabled`.
    pub fn injected(&self) -> Vec<String> {
        self.0
            .state()
            .iter()
            .filter(|ns| {
                ns.metadata.labels.as_ref().and_then(|l| l.get(INJECT)).is_some_and(|v| v == "enabled")
            })
            .filter_map(|ns| ns.metadata.name.clone())
            .collect()
    }
}
