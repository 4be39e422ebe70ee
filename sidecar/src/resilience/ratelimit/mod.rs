//! Rate limiting.
//! - [`limiter`]: multi-window sliding-window limits, optionally keyed, with optional smoothing;
//! - [`policy`]: a `RateLimitPolicy` as requests meet it (its limiter, key and refusal counter).

pub mod limiter;
pub mod policy;
