//! Pilotfish's data plane: the L4/L7 sidecar proxy.

#![forbid(unsafe_code)]

pub mod http;
pub mod listener;
pub mod resilience;
mod run;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod tcp;
pub mod telemetry;
pub mod transport;
pub mod upstream;

pub use run::{run, Error, Options, Source};
pub use snapshot::Overrides;
/// Managed mode's settings, where the command line has always found them.
pub use source::managed;
