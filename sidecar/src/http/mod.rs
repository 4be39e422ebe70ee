//! The L7 path: serving HTTP/1.1 and HTTP/2 connections and proxying their requests.
//! - [`server`]: one downstream connection, with the limits that bound bad clients;
//! - [`proxy`]: the `tower::Service` per connection that sends each request on its way;
//! - [`context`]: what a request carries through the stages, and local failures;
//! - [`outbound`]: the outbound path as stages — route → attempts → endpoint;
//! - [`inbound`]: the inbound path, to the local app;
//! - [`next_hop`], [`respond`]: the request as the next hop gets it, the response on its way
//!   back;
//! - [`pool`]: pooled connections to one endpoint (plain, or mesh mTLS);
//! - [`orig_proto`]: the app's HTTP version, carried across the mesh's HTTP/2;
//! - [`body`], [`request_body`]: response and request bodies;
//! - [`errors`]: failures as HTTP (and gRPC) responses; [`headers`], [`correlation`]: header
//!   rules.

pub mod body;
pub mod context;
pub mod correlation;
pub mod errors;
pub mod headers;
pub mod inbound;
pub mod next_hop;
pub mod orig_proto;
pub mod outbound;
pub mod pool;
pub mod proxy;
pub mod request_body;
pub mod respond;
pub mod server;
