//! A `RateLimitPolicy` as the request path applies it: its limiter (windows and budgets), how
//! requests are keyed, and the counter of refusals. Built with the snapshot, carried across
//! reloads while its spec is unchanged.

use std::net::IpAddr;
use std::time::Duration;

use http::header::HeaderValue;
use http::{HeaderName, Request};
use pilotfish_api::policy::RateLimitPolicySpec;
use pilotfish_api::SpiffeId;
use prometheus::IntCounter;
use tokio::time::Instant;

use super::limiter::{Decision, RateLimiter, Window};

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

    /// Whether the policy keys by the caller (`{peer: true}`).
    pub fn by_peer(spec: &RateLimitPolicySpec) -> bool {
        spec.key.as_ref().is_some_and(|k| k.peer)
    }

    /// Counts `req` against the budget of its key: the decision when admitted, the refusal
    /// (counted) when not. `{peer: true}` keys by the caller's mesh identity (`peer`) when its
    /// connection has one, else by its address `client`.
    pub fn check<B>(
        &self,
        client: IpAddr,
        peer: Option<&SpiffeId>,
        req: &Request<B>,
    ) -> Result<Decision, Decision> {
        let (identity, address);
        let key = match &self.key {
            LimitKey::Global => None,
            LimitKey::Header(name) => req.headers().get(name).map(HeaderValue::as_bytes),
            // An identity is never 16 bytes long (it starts with `spiffe://`), so it cannot share
            // a budget with an address.
            LimitKey::Peer => match peer {
                Some(id) => {
                    identity = id.to_string();
                    Some(identity.as_bytes())
                }
                None => {
                    // An IPv4 peer and the same address mapped into IPv6 are one peer.
                    address = match client {
                        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                        IpAddr::V6(ip) => ip.octets(),
                    };
                    Some(&address[..])
                }
            },
        };
        let decision = self.limiter.check(key, Instant::now());
        if decision.allowed {
            return Ok(decision);
        }
        self.refused.inc();
        Err(decision)
    }
}
