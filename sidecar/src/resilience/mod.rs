//! Policy and resilience building blocks, each independent of HTTP connections and of the
//! request path that uses them (`http::outbound` and `tcp::forward` put them in order):
//! - [`breaker`]: the per-endpoint circuit breaker and the per-service ejection budget;
//! - [`balance`]: peak-EWMA load and power-of-two-choices;
//! - [`ratelimit`]: multi-window sliding-window rate limiting, optionally keyed, and a
//!   `RateLimitPolicy` bound to it;
//! - [`retry`]: outcome classification, retry conditions and backoff;
//! - [`limit`]: bounded counters for service limits;
//! - [`attempt`]: one attempt's claim on an endpoint's load and breaker.

pub mod attempt;
pub mod balance;
pub mod breaker;
pub mod limit;
pub mod ratelimit;
pub mod retry;
