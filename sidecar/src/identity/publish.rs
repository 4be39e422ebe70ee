//! Putting an identity in force: [`crate::state::Shared::identity`] for the data path and
//! [`crate::state::Shared::client_cert`] for the control plane's clients, and the metrics,
//! status and [`Reported`] that describe it — always together, so `/identity`, `/metrics` and
//! the control plane see what the handshakes use.

use std::sync::Arc;

use pilotfish_api::wire::CertificateReport;

use super::material::Built;
use crate::state::Shared;

/// What the control plane is told of the identity in force, with every ACK and NACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub certificate: CertificateReport,
    /// SHA-256 fingerprints (lowercase hex) of the roots handshakes trust now: a root rotation
    /// waits until every sidecar names the new one here.
    pub trusted_roots: Vec<String>,
}

/// Publishes `built`; new connections use it from now on, open ones keep what they have.
pub fn install(shared: &Shared, built: Built) {
    shared.metrics.identity.installed(built.identity.not_after, &built.roots);
    shared.identity_status.installed(&built.roots);
    shared.client_cert.set(Some(built.identity.configs.certified().clone()));
    shared.identity.store(Some(Arc::new(built.identity)));
    let report = Reported { certificate: built.report, trusted_roots: built.roots };
    shared.reported.send_if_modified(|current| {
        let changed = current.as_ref() != Some(&report);
        *current = Some(report);
        changed
    });
}
