//! The `HTTPRoute` kind, in the Gateway API shape (gateway.networking.k8s.io/v1) so users'
//! manifests carry over: rules of matches (path, method, headers, query parameters), filters,
//! weighted backends, timeouts and retries (GEP-1731), attached to a Service by `parentRefs`.
//!
//! - `spec`: the route, its rules, matches, backends, timeouts and retries.
//! - `filter`: what a rule does to a request or response (header changes, redirects, rewrites).
//! - `validate`: what serde cannot check, with the field path of the first problem.
//! - `syntax`: header names, methods and regular expressions, as the sidecar reads them.

mod filter;
mod spec;
mod syntax;
mod validate;

pub use filter::*;
pub use spec::*;
pub use syntax::{full_match_regex, http_method, valid_header_name};
