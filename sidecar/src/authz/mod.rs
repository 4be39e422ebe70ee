//! Authorization of calls into this sidecar's service: the `AuthorizationPolicy` documents of a
//! snapshot compiled per service when the snapshot is built, and the decision on one call.
//!
//! The order is Istio's: any matching DENY policy denies; a service no ALLOW policy targets gets
//! the mesh default (`allow`, `deny`, or `authenticated`: any caller with a verified identity);
//! otherwise a matching ALLOW policy allows, and nothing else is allowed.
//!
//! - [`evaluate`]: [`Authorizer`], the policies by service, and the [`Decision`] on a call;
//! - [`matcher`]: whether a policy's rules match a [`Call`] (HTTP request or TCP connection);
//! - [`local`]: [`LocalAuthz`], what the inbound path asks about a call into this sidecar's own
//!   service, with denials counted; and [`Denial`], why, as the caller reads it.
//!
//! The inbound HTTP path (`http::inbound`) answers a denial with 403 `forbidden` (gRPC:
//! PERMISSION_DENIED); the inbound TCP path closes a denied connection before connecting to
//! the app.

pub mod evaluate;
pub mod local;
pub mod matcher;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub use evaluate::{Authorizer, Decision, DEFAULT_POLICY};
pub use local::{Denial, LocalAuthz};
pub use matcher::Call;
