//! What the control plane knows of a namespace's annotations (`--kubernetes`: a namespace
//! reflector), for the injection webhook: annotations on a namespace apply to its pods unless a
//! pod says otherwise. Without Kubernetes, every namespace has none.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// A namespace's annotations by its name; empty for a namespace not (yet) known.
pub trait NamespaceAnnotations: Send + Sync {
    fn get(&self, namespace: &str) -> BTreeMap<String, String>;
}

/// The source in force, set once at start (none: every namespace has no annotations).
#[derive(Default)]
pub struct Namespaces(OnceLock<Arc<dyn NamespaceAnnotations>>);

impl Namespaces {
    pub fn set(&self, source: Arc<dyn NamespaceAnnotations>) {
        let _ = self.0.set(source);
    }
}

impl NamespaceAnnotations for Namespaces {
    fn get(&self, namespace: &str) -> BTreeMap<String, String> {
        self.0.get().map(|source| source.get(namespace)).unwrap_or_default()
    }
}
