//! The L4 path: opaque TCP, byte for byte.
//! - [`forward`]: where an opaque connection goes (a service's endpoints, the app, or the
//!   original destination) and how it gets there;
//! - [`header`]: the transport header that opens a `pilotfish.io/tcp` mesh connection;
//! - [`splice`]: copying both ways with half-close, an idle timeout and byte counters.

pub mod forward;
pub mod header;
pub mod splice;
