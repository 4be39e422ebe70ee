//! This sidecar's mesh identity: the SPIFFE ID it proves, the rustls configurations built from
//! its certificate and the trust bundle, and when the certificate expires. Published whole in
//! [`crate::state::Shared::identity`]; a sidecar without one (static mode without certificate
//! files) speaks plaintext.
//!
//! Where the identity comes from:
//! - [`files`]: static mode's certificate, key and bundle files, reloaded on change;
//!
//! and what every source shares:
//! - [`material`]: certificate material to an [`Identity`], and the checks a new certificate
//!   must pass first;
//! - [`publish`]: putting an identity in force, with its metrics and status;
//! - [`status`]: what `GET /identity` reports, and readiness while a managed sidecar waits for
//!   its first certificate.

pub mod files;
pub mod material;
pub mod publish;
pub mod status;

use std::time::SystemTime;

use pilotfish_api::SpiffeId;

use crate::tls::MeshConfigs;

/// The identity in force: replaced whole on every renewal or bundle change.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: SpiffeId,
    pub configs: MeshConfigs,
    pub not_after: SystemTime,
}
