//! The mesh CA: a root and an issuer generated at first start (or supplied), kept in the CA's
//! directory, signing short-lived workload leaves whose only name is the SPIFFE ID the caller's
//! credential decides — never what the CSR asks for. No HTTP here; `http` serves it.
//!
//! # Layout
//! - `authority`: [`Ca`] — open or load, [`Ca::issue`], the trust bundle and root fingerprints.
//! - `mesh`: [`MeshCa`] — the CA at a point of the log: the roots root rotations added and
//!   retired, and the issuer they activated.
//! - `keystore`: where a rotation keeps the roots and issuers it makes (directory or etcd).
//! - `params`: the root's, issuer's and leaf's certificate parameters (lifetimes, backdating,
//!   constraints, key usages).
//! - `chain`: checking supplied or stored certificates and key before they sign anything.
//! - `generate`: a new root and issuer for a first start.
//! - `files`: the CA's directory, written whole and atomically, keys mode 0600.
//! - `shared`: the CA replicas share through etcd, made by the first, its keys sealed.
//! - `serving`: the control plane's own TLS certificate (DNS and IP names, server auth only).
//! - `seal`: sealing keys for etcd (AES-256-GCM under HKDF-SHA256 of `--ca-seal-key`).

mod authority;
mod chain;
mod error;
mod files;
mod generate;
mod keystore;
mod mesh;
mod params;
mod seal;
mod serving;
mod shared;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use authority::{Ca, Issued, Root};
pub use error::CaError;
pub use keystore::Keystore;
pub use mesh::{MeshCa, TrustedRoot, View};
pub use seal::{SealKey, MIN_SEAL_KEY};
pub use serving::Serving;
