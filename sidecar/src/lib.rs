//! Pilotfish's data plane: the L4/L7 sidecar proxy.
//!
//! # Layout
//! Each folder is one part of the sidecar:
//! - [`listener`]: listeners and protocol detection — accept loops with connection limits, the
//!   outbound, inbound, per-service (`localPort`) and admin listeners, and detection of HTTP/1,
//!   HTTP/2, TLS or opaque bytes from the first bytes of a connection;
//! - [`http`]: the L7 path — serving connections, the outbound request path as stages
//!   ([`http::outbound`]), the inbound path to the app, endpoint connection pools, and failures
//!   as responses;
//! - [`tcp`]: the L4 path — opaque forwarding, byte-exact with half-close and an idle timeout;
//! - [`resilience`]: policy and resilience building blocks — circuit breaker, balancer load,
//!   retries and backoff, rate limiting, service-limit counters;
//! - [`snapshot`]: the configuration in force — its types and lookups, and building one from
//!   validated `api` resources (route tables compiled, policies attached, state carried over);
//! - [`upstream`]: per-service and per-endpoint runtime state that outlives a request — endpoint
//!   guards (breaker, load, health), retry budgets, limit counters, active health checks;
//! - [`source`]: where configuration comes from — a file reloaded on change or SIGHUP, or the
//!   control plane's push stream (managed mode: ACK/NACK, registration);
//! - [`telemetry`]: what every decision leaves behind — metrics and the access log;
//! - [`tls`]: mesh mTLS — rustls configs from an identity and a trust bundle, the peer's SPIFFE
//!   identity, the ClientHello sniff that tells a sidecar from other bytes, and the handshakes.
//! - [`authz`]: `AuthorizationPolicy` compiled per service with each snapshot, and the decision
//!   on a call into this sidecar's service (enforced by the inbound HTTP and TCP paths).
//!
//! Beside them: [`state`] (what every listener shares: the swappable snapshot, metrics,
//! shutdown, readiness), [`transport`] (sockets), and `run` (start-up and drain).
//!
//! # The request path
//! A connection is accepted ([`listener::accept`]), detected ([`listener::detect`]) and handed
//! to the L4 path ([`tcp::forward`]) or to the L7 path ([`http::server`], one
//! [`http::proxy::Proxy`] per connection). An outbound HTTP request then goes through three
//! stages, read top to bottom in [`http::outbound::to_service`]:
//!
//! 1. **route** ([`http::outbound::route`]): service, rate limits, route match, filters,
//!    `maxRequests`;
//! 2. **attempts** ([`http::outbound::attempts`]): replay buffer, traffic split, retries with
//!    backoff, the retry budget and the route's deadline;
//! 3. **endpoint** ([`http::outbound::endpoint`]): the balancer, the breaker's admission, the
//!    per-try timeout over a pooled connection, and the outcome's bookkeeping.
//!
//! Each stage reads the request's [`http::context::RequestContext`] and returns a typed result
//! to the next; a local failure becomes a response in one place ([`http::errors`]).
//!
//! # Adding a request-path stage
//! Write it as a function in `http/outbound/` that takes the `RequestContext` and what the
//! stage before it produced, returns its own result type (or a `ProxyError` for a local
//! failure), and call it in order in `to_service`; give it unit tests in
//! `http/outbound/tests/`. Per-request work stays free of allocation and boxing; state that
//! outlives a request belongs in [`upstream`], built in [`snapshot::build`].

#![forbid(unsafe_code)]

pub mod authz;
pub mod http;
pub mod identity;
pub mod listener;
pub mod resilience;
mod run;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod upstream;

pub use run::{run, Error, Lifecycle, Options, Source};
pub use snapshot::Overrides;
/// Managed mode's settings, where the command line has always found them.
pub use source::managed;
