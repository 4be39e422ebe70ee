//! Mesh mTLS: the rustls configurations a sidecar serves and dials with, the check of a
//! peer's SPIFFE identity, and telling a sidecar's ClientHello from other bytes on the inbound
//! port.
//! - [`credentials`]: the identity (leaf chain and key) and the trust bundle (one or more roots);
//! - [`config`]: the server config and a client config per ALPN, built from those (TLS 1.3,
//!   the caller's crypto provider, no resumption);
//! - [`verify`]: the outbound chain check without a DNS-name step (mesh leaves carry a URI SAN);
//! - [`peer`]: the SPIFFE ID in a certificate's URI SAN;
//! - [`alpn`]: the mesh protocol names (`pilotfish.io/h2`, `pilotfish.io/tcp`);
//! - [`sniff`]: mesh TLS, other TLS, plaintext or not yet known, from the first bytes;
//! - [`handshake`]: [`connect_mesh`] and [`accept_mesh`], and why one failed;
//! - [`reason`]: the bounded failure reasons, for metrics.

pub mod alpn;
pub mod config;
pub mod credentials;
pub mod handshake;
pub mod peer;
pub mod reason;
pub mod sniff;
pub mod verify;

pub use alpn::MeshAlpn;
pub use config::{ConfigError, MeshConfigs};
pub use credentials::{Credentials, CredentialsError, TrustBundle};
pub use handshake::{accept_mesh, connect_mesh, Established, MeshError};
pub use peer::{spiffe_id, IdentityError};
pub use reason::FailureReason;
pub use sniff::{sniff, Sniff};

#[cfg(test)]
pub(crate) mod tests;
