//! This sidecar's mesh identity: the SPIFFE ID it proves, the rustls configurations built from
//! its certificate and the trust bundle, and when the certificate expires. Published whole in
//! [`crate::state::Shared::identity`]; a sidecar without one (static mode without certificate
//! files) speaks plaintext.

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
