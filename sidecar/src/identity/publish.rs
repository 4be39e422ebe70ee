//! Putting an identity in force: [`crate::state::Shared::identity`] for the data path and
//! [`crate::state::Shared::client_cert`] for the control plane's clients, and the metrics,
//! status and certificate report that describe it — always together, so `/identity`,
//! `/metrics` and the control plane see what the handshakes use.

use std::sync::Arc;

use super::material::Built;
use crate::state::Shared;

/// Publishes `built`; new connections use it from now on, open ones keep what they have.
pub fn install(shared: &Shared, built: Built) {
    shared.metrics.identity.installed(built.identity.not_after, &built.roots);
    shared.identity_status.installed(&built.roots);
    shared.client_cert.set(Some(built.identity.configs.certified().clone()));
    shared.identity.store(Some(Arc::new(built.identity)));
    let report = built.report;
    shared.certificate.send_if_modified(|current| {
        let changed = current.as_ref() != Some(&report);
        *current = Some(report);
        changed
    });
}
