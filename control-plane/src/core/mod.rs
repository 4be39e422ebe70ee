//! The control plane's core: its state ([`ControlPlane`]) and every operation on it, one file
//! per resource group. Operations take typed inputs and a [`Caller`] and return an [`Error`] in
//! the domain's words; no HTTP type appears here (the `http` module is one transport on top).

mod access;
pub mod background;
mod ca;
mod ca_counters;
mod caller;
mod discovered;
mod error;
mod identity;
mod leases;
mod log;
mod namespaces;
mod plane;
mod registry;
mod resources;
mod review;
mod rollouts;
mod rotation;
mod stats;
mod status;
mod sync;
mod tap;
mod tokens;

pub use access::Credentials;
pub use caller::{sha256_hex, Caller};
pub use discovered::{Discovered, DiscoveredService, Discovery};
pub use error::{Error, Result};
pub use log::{PAGE_BYTES, PAGE_EVENTS};
pub use namespaces::NamespaceAnnotations;
pub use plane::{ControlPlane, Settings, DEFAULT_CERT_TTL, DEFAULT_TRUST_DOMAIN};
pub use resources::{canonical_kind, plural, Applied, KINDS};
pub use review::{ReviewError, ReviewTokens, ServiceAccount, AUDIENCE};
pub use rollouts::Moved;
pub use rotation::DEFAULT_OVERLAP;
pub use sync::Connection;
pub use tap::TapSession;
