//! The HTTP API (`/v1`, JSON) over the core: a router, one file per resource group, auth and
//! typed bodies as extractors, and the one mapping of failures to responses.
//!
//! - [`router`]: the router and the OpenAPI document, built from the same list of routes.
//! - [`doc`]: the document's frame (title, security scheme) and the rules the server checks
//!   beyond the types' shapes (name patterns, addresses, protocol range).
//! - [`extract`]: the caller (bearer token, proven before anything else is read), query, path,
//!   body and headers, each failing with a JSON error.
//! - [`error`]: failures → status and JSON body, and the reusable OpenAPI error responses that
//!   document them.
//! - [`resources`], [`history`], [`registry`], [`push`], [`tokens`], [`ca`], [`ops`],
//!   [`inject`] (the admission webhook), [`stats`] (telemetry), [`tap`] (live requests),
//!   [`rollouts`]: the handlers.
//! - [`dashboard`]: the dashboard page at `/` (embedded static files over the API).

mod ca;
mod dashboard;
pub mod doc;
pub mod error;
pub mod extract;
mod history;
mod inject;
mod ops;
mod push;
mod registry;
mod resources;
mod rollouts;
pub mod router;
mod stats;
mod tap;
mod tokens;

#[cfg(test)]
mod tests;

pub use error::ApiError;
pub use router::{openapi, router};
