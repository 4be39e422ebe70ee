//! Reading the SPIFFE identity a certificate carries: the api crate's reader, shared with the
//! control plane (which reads a sidecar's client certificate).

pub use pilotfish_api::certificate::{spiffe_id, IdentityError};
