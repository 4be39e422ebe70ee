//! A `RateLimitPolicy` as the request path applies it: its limiter (windows and budgets), how
//! requests are keyed, and the counter of refusals. Built with the snapshot, carried across
//! reloads while its spec is unchanged.

use std::time::Duration;

use http::HeaderName;
use pilotfish_api::policy::RateLimitPolicySpec;
use prometheus::IntCounter;

use super::limiter::{RateLimiter, Window};

/// A rate limit and how its budgets are keyed.
pub struct RateLimit {
    pub spec: RateLimitPolicySpec,
    pub limiter: RateLimiter,
    pub key: LimitKey,
    pub refused: IntCounter,
}

pub enum LimitKey {
    Global,
    Header(HeaderName),
    Peer,
}

impl RateLimit {
    pub fn new(p: &RateLimitPolicySpec, refused: IntCounter) -> Self {
        let windows = [(p.per_second, 1), (p.per_minute, 60), (p.per_hour, 3600)]
            .into_iter()
            .filter_map(|(limit, secs)| Some(Window { period: Duration::from_secs(secs), limit: limit? }))
            .collect();
        let key = match &p.key {
            Some(k) if k.peer => LimitKey::Peer,
            Some(k) => match k.header.as_deref().and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()) {
                Some(h) => LimitKey::Header(h),
                None => LimitKey::Global,
            },
            None => LimitKey::Global,
        };
        Self { spec: p.clone(), limiter: RateLimiter::new(windows, p.burst, 100_000), key, refused }
    }
}
