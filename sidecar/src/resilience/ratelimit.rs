//! Request rate limiting over several windows at once (say per second and per hour), optionally
//! per key, with the Generic Cell Rate Algorithm.
//!
//! GCRA keeps one timestamp per window instead of a counter per period: the theoretical arrival
//! time (TAT), when the window's quota will be whole again. Each request moves it one emission
//! interval (`period / limit`) later, and a request is refused when that would put the TAT more
//! than the window's capacity of intervals ahead of now. A fresh window can thus spend its whole
//! quota at once and then refills one request per interval, with no reset cliff at the edge of
//! a period.
//!
//! A request counts only if every window allows it, so a refused request consumes nothing and
//! hammering a limited key does not delay its recovery.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Keyed state is split into this many independently locked maps.
const SHARDS: usize = 16;

/// The least time between two sweeps of one full shard for keys back to full quota. A sweep
/// visits every key while holding the shard's lock, so a flood of new keys must not trigger one
/// per request.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// One window: at most `limit` requests per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub period: Duration,
    pub limit: u32,
}

/// The outcome of [`RateLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// For RateLimit-* headers (IETF draft): the limit and remaining quota of the most restrictive
    /// window (the one with the least remaining after this request), and the time until that
    /// window's quota is fully restored. The limit is the window's capacity: its burst when one
    /// is set.
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
    /// When refused: how long until a request would be allowed (for Retry-After; rounding up to
    /// whole seconds is the caller's job).
    pub retry_after: Option<Duration>,
}

/// A multi-window GCRA limiter, keyed or not.
///
/// State is one TAT per window, in nanoseconds since the limiter was created. Keyed state lives
/// in 16 maps, each behind its own lock, held only to read and update one key.
#[derive(Debug)]
pub struct RateLimiter {
    base: Instant,
    rules: Box<[Rule]>,
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
    /// The state of requests without a key.
    unkeyed: Mutex<Box<[u64]>>,
    /// Shared by new keys while their shard is full of keys still in use. Tracking them all
    /// would let a flood of distinct keys (one per client port, say) grow memory without bound;
    /// sharing instead means that under such a flood new keys are limited together.
    overflow: Mutex<Box<[u64]>>,
}

/// A window in the units GCRA works in.
#[derive(Debug)]
struct Rule {
    /// Nanoseconds each request moves the TAT.
    interval: u64,
    /// Requests the window admits at once when its quota is whole.
    capacity: u32,
    /// How far ahead of now the TAT may be after a request: `capacity * interval`.
    tolerance: u64,
}

#[derive(Debug, Default)]
struct Shard {
    keys: HashMap<String, Box<[u64]>>,
    max_keys: usize,
    /// No sweep before this time (nanoseconds since the limiter's base).
    next_reap: u64,
}

// === impl RateLimiter ===

impl RateLimiter {
    /// `windows` must be non-empty with limits of at least one, and `burst` at least one; the
    /// burst replaces the capacity of the shortest window. At most `max_keys` keys get state of
    /// their own.
    pub fn new(windows: Vec<Window>, burst: Option<u32>, max_keys: usize) -> Self {
        debug_assert!(!windows.is_empty() && windows.iter().all(|w| w.limit > 0));
        let shortest = (0..windows.len()).min_by_key(|&i| windows[i].period);
        let rules = windows
            .iter()
            .enumerate()
            .map(|(i, window)| {
                let capacity = match burst {
                    Some(burst) if Some(i) == shortest => burst,
                    _ => window.limit,
                };
                // Rounded up so that the limit is never exceeded.
                let interval = nanos(window.period).div_ceil(u64::from(window.limit)).max(1);
                Rule { interval, capacity, tolerance: interval.saturating_mul(u64::from(capacity)) }
            })
            .collect();
        let fresh = || vec![0; windows.len()].into_boxed_slice();
        Self {
            base: Instant::now(),
            rules,
            hasher: RandomState::new(),
            shards: std::array::from_fn(|i| {
                // Spread `max_keys` so that the shards add up to it exactly.
                let extra = usize::from(i < max_keys % SHARDS);
                Mutex::new(Shard { max_keys: max_keys / SHARDS + extra, ..Shard::default() })
            }),
            unkeyed: Mutex::new(fresh()),
            overflow: Mutex::new(fresh()),
        }
    }

    /// Decides whether a request for `key` (or the unkeyed state) may go now, and counts it in
    /// every window if it may.
    pub fn check(&self, key: Option<&str>, now: Instant) -> Decision {
        let now = nanos(now.saturating_duration_since(self.base));
        let Some(key) = key else {
            return self.apply(&mut lock(&self.unkeyed), now);
        };

        let shard = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        let mut shard = lock(&self.shards[shard]);
        if let Some(tats) = shard.keys.get_mut(key) {
            return self.apply(tats, now);
        }
        if shard.make_room(now) {
            let mut tats = vec![0; self.rules.len()].into_boxed_slice();
            let decision = self.apply(&mut tats, now);
            shard.keys.insert(key.to_owned(), tats);
            return decision;
        }
        drop(shard);
        self.apply(&mut lock(&self.overflow), now)
    }

    fn apply(&self, tats: &mut [u64], now: u64) -> Decision {
        let retry_after = self
            .rules
            .iter()
            .zip(tats.iter())
            .map(|(rule, &tat)| rule.wait(tat, now))
            .max()
            .filter(|&wait| wait > 0)
            .map(Duration::from_nanos);
        let allowed = retry_after.is_none();
        if allowed {
            for (rule, tat) in self.rules.iter().zip(tats.iter_mut()) {
                *tat = rule.next_tat(*tat, now);
            }
        }

        // Least remaining; among equals, the one that takes longest to restore.
        let (limit, remaining, reset) = self
            .rules
            .iter()
            .zip(tats.iter())
            .map(|(rule, &tat)| (rule.capacity, rule.remaining(tat, now), tat.saturating_sub(now)))
            .min_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .expect("a limiter has at least one window");
        Decision { allowed, limit, remaining, reset: Duration::from_nanos(reset), retry_after }
    }

    #[cfg(test)]
    fn key_count(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).keys.len()).sum()
    }
}

// === impl Rule ===

impl Rule {
    fn next_tat(&self, tat: u64, now: u64) -> u64 {
        tat.max(now).saturating_add(self.interval)
    }

    /// Nanoseconds until this window admits a request; zero when it admits one now.
    fn wait(&self, tat: u64, now: u64) -> u64 {
        self.next_tat(tat, now).saturating_sub(now.saturating_add(self.tolerance))
    }

    /// Whole requests the window would admit now, given its TAT.
    fn remaining(&self, tat: u64, now: u64) -> u32 {
        let slack = now.saturating_add(self.tolerance).saturating_sub(tat.max(now));
        u32::try_from(slack / self.interval).map_or(self.capacity, |n| n.min(self.capacity))
    }
}

// === impl Shard ===

impl Shard {
    /// Whether a new key fits, sweeping out keys back to full quota if the shard is full.
    fn make_room(&mut self, now: u64) -> bool {
        if self.keys.len() < self.max_keys {
            return true;
        }
        if now < self.next_reap {
            return false;
        }
        self.next_reap = now.saturating_add(nanos(REAP_INTERVAL));
        // A key whose every TAT has passed has its whole quota: forgetting it changes nothing.
        self.keys.retain(|_, tats| tats.iter().any(|&tat| tat > now));
        self.keys.len() < self.max_keys
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held, and the state is plain numbers, so a poisoned
    // lock still guards a consistent state.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn per(period_secs: u64, limit: u32) -> Window {
        Window { period: Duration::from_secs(period_secs), limit }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn allowed(limiter: &RateLimiter, key: Option<&str>, n: usize) -> usize {
        let now = Instant::now();
        (0..n).filter(|_| limiter.check(key, now).allowed).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_is_spent_at_once_then_refills() {
        let limiter = RateLimiter::new(vec![per(60, 100)], None, 10);
        assert_eq!(allowed(&limiter, None, 100), 100);

        let refused = limiter.check(None, Instant::now());
        assert_eq!(
            refused,
            Decision {
                allowed: false,
                limit: 100,
                remaining: 0,
                reset: Duration::from_secs(60),
                retry_after: Some(ms(600)),
            }
        );

        advance(ms(599)).await;
        assert!(!limiter.check(None, Instant::now()).allowed);
        advance(ms(1)).await;
        let decision = limiter.check(None, Instant::now());
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 0);
        assert_eq!(decision.retry_after, None);
        assert!(!limiter.check(None, Instant::now()).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn every_window_applies() {
        let limiter = RateLimiter::new(vec![per(1, 2), per(60, 3)], None, 10);
        assert_eq!(allowed(&limiter, None, 2), 2);
        let refused = limiter.check(None, Instant::now());
        assert!(!refused.allowed);
        assert_eq!((refused.limit, refused.retry_after), (2, Some(ms(500))));

        advance(Duration::from_secs(1)).await;
        assert!(limiter.check(None, Instant::now()).allowed);
        // The second window has room, the minute window does not: 3 were sent at 20 s apiece.
        let refused = limiter.check(None, Instant::now());
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 3);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(19)));

        advance(Duration::from_secs(1)).await;
        assert!(!limiter.check(None, Instant::now()).allowed);
        advance(Duration::from_secs(18)).await;
        assert!(limiter.check(None, Instant::now()).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_is_counted_nowhere() {
        // The minute window would run out first if refused requests counted in it.
        let limiter = RateLimiter::new(vec![per(1, 1), per(60, 5)], None, 10);
        for _ in 0..4 {
            assert_eq!(allowed(&limiter, None, 1_000), 1);
            advance(Duration::from_secs(1)).await;
        }
        assert_eq!(allowed(&limiter, None, 1_000), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hammering_does_not_delay_recovery() {
        let limiter = RateLimiter::new(vec![per(60, 100)], None, 10);
        assert_eq!(allowed(&limiter, None, 100), 100);
        for _ in 0..6 {
            assert_eq!(allowed(&limiter, None, 1_000), 0);
            advance(ms(100)).await;
        }
        assert!(limiter.check(None, Instant::now()).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_sets_the_shortest_windows_capacity() {
        let limiter = RateLimiter::new(vec![per(60, 100), per(1, 5)], Some(20), 10);
        let first = limiter.check(None, Instant::now());
        assert_eq!((first.limit, first.remaining), (20, 19));
        assert_eq!(allowed(&limiter, None, 100), 19);

        // It refills at the window's rate, one per 200 ms.
        advance(ms(200)).await;
        assert_eq!(allowed(&limiter, None, 100), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_and_reset_follow_the_quota() {
        let limiter = RateLimiter::new(vec![per(60, 100), per(3_600, 10_000)], None, 10);
        let first = limiter.check(None, Instant::now());
        assert_eq!((first.limit, first.remaining, first.reset), (100, 99, ms(600)));
        assert_eq!(allowed(&limiter, None, 9), 9);

        // Five requests' worth refilled, one spent.
        advance(Duration::from_secs(3)).await;
        let later = limiter.check(None, Instant::now());
        assert_eq!((later.limit, later.remaining, later.reset), (100, 94, ms(3_600)));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_independent() {
        let limiter = RateLimiter::new(vec![per(60, 3)], None, 100);
        assert_eq!(allowed(&limiter, Some("a"), 10), 3);
        assert_eq!(allowed(&limiter, Some("b"), 10), 3);
        assert_eq!(allowed(&limiter, None, 10), 3);
        assert_eq!(limiter.key_count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn key_floods_stay_bounded_and_expired_keys_are_reaped() {
        let limiter = RateLimiter::new(vec![per(60, 1)], None, 32);
        let flood = |round: usize| {
            let now = Instant::now();
            (0..1_000).filter(|i| limiter.check(Some(&format!("{round}-{i}")), now).allowed).count()
        };

        // 32 keys get their own state; the rest share the overflow state, which allows one.
        assert_eq!(flood(0), 33);
        assert_eq!(limiter.key_count(), 32);

        // Tracked keys still have requests on their clock, so they are kept and the overflow
        // state, still spent, refuses everything new.
        advance(Duration::from_secs(30)).await;
        assert_eq!(flood(1), 0);
        assert_eq!(limiter.key_count(), 32);

        // Once every window has refilled, the old keys are swept out to make room.
        advance(Duration::from_secs(31)).await;
        assert_eq!(flood(2), 33);
        assert_eq!(limiter.key_count(), 32);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_shard_is_swept_at_most_once_per_interval() {
        // One key per shard, each spent for half a second.
        let window = Window { period: ms(500), limit: 1 };
        let limiter = RateLimiter::new(vec![window], None, SHARDS);
        let flood = |round: usize| {
            let now = Instant::now();
            (0..1_000).filter(|i| limiter.check(Some(&format!("{round}-{i}")), now).allowed).count()
        };
        // Filling the shards already swept each of them once, freeing nothing.
        assert_eq!(flood(0), SHARDS + 1);

        // The keys are back to full quota but not swept yet: only the overflow state has room.
        advance(ms(600)).await;
        assert_eq!(flood(1), 1);
        assert_eq!(limiter.key_count(), SHARDS);

        advance(ms(400)).await;
        assert_eq!(flood(2), SHARDS);
        assert_eq!(limiter.key_count(), SHARDS);
    }
}
