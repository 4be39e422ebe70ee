//! This sidecar's mesh identity: the SPIFFE ID it proves, the rustls configurations built from
//! its certificate and the trust bundle, and when the certificate expires. Published whole in
//! [`crate::state::Shared::identity`]; a sidecar without one (static mode without certificate
//! files) speaks plaintext.
//!
//! Where the identity comes from:
//! - [`files`]: static mode's certificate, key and bundle files, reloaded on change;
//! - [`renew`]: managed mode's key, CSR and certificate from the control plane's CA, renewed on
//!   the schedule of [`schedule`]; [`control_plane`] is that CA over the API client;
//!   [`mesh_feed`] brings it the push stream's trust bundle and `renewBefore`, and tells the
//!   push client when a bundle is in force;
//!
//! and what every source shares:
//! - [`material`]: certificate material to an [`Identity`], and the checks a new certificate
//!   must pass first;
//! - [`publish`]: putting an identity in force, with its metrics and status;
//! - [`status`]: what `GET /identity` reports, and readiness while a managed sidecar waits for
//!   its first certificate.

pub mod control_plane;
pub mod files;
pub mod material;
pub mod mesh_feed;
pub mod publish;
pub mod renew;
pub mod schedule;
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
