//! Request rate limiting over several windows at once (say per minute and per hour), optionally
//! per key: a key is never admitted more than a window's limit within any span of that window's
//! length.
//!
//! Each window is a sliding window counted in buckets. Its length is cut into `SPAN` (15) buckets
//! and a ring of `SLOTS` (16) counters holds the admissions of the current bucket and of the 15
//! before it; a request is admitted while the ring's total is below the limit. The ring reaches
//! back over the whole window plus the part of its oldest bucket that has already left the
//! window, so its total can only overstate the admissions of the last window, never understate
//! them: every span of the window's length that ends at an admission lies inside the buckets
//! counted for it, hence holds at most `limit` admissions. The error is on the refusing side: an
//! admission keeps counting until its bucket leaves the ring, between one window and one window
//! plus one bucket (1/15 of the window) after it was made. An exact sliding log would keep
//! `limit` timestamps per key (80 KB for 10,000 per hour); a ring is 80 bytes whatever the limit.
//!
//! `burst`, when set, adds smoothing on top (GCRA): at most `burst` requests back to back, then
//! one per `period / limit` of the shortest window. The windows still cap every span.
//!
//! A request counts only if every window (and the smoothing) allows it, so a refused request
//! consumes nothing and hammering a limited key does not delay its recovery.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hashbrown::HashTable;
use tokio::time::Instant;

/// Keyed state is split into this many independently locked tables.
const SHARDS: usize = 16;

/// Buckets per window length.
const SPAN: u64 = 15;

/// Counters per window: the window's buckets and the one partly out of it.
const SLOTS: usize = SPAN as usize + 1;

// `Ring::filled` has a bit per slot.
const _: () = assert!(SLOTS == u16::BITS as usize);

/// The least time between two sweeps of one full shard for idle keys. A sweep visits every key
/// while holding the shard's lock, so a flood of new keys must not trigger one per request.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// Words in `Overflow::users`: a bit for each value of a digest's low 16 bits.
const USER_WORDS: usize = (1 << 16) / 64;

/// One window: at most `limit` requests in any span of `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub period: Duration,
    pub limit: u32,
}

/// The outcome of [`RateLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// For RateLimit-* headers (IETF draft), of the binding constraint (a window, or the burst):
    /// the one with the least remaining after this request, among equals the one that takes
    /// longest to give quota back. `limit` is its limit (the burst for the smoothing),
    /// `remaining` how many more requests it admits now, and `reset` the time until it admits
    /// one more than now; when `remaining` is zero, that is when the next request is admitted.
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
    /// When refused: how long until a request would be admitted (for Retry-After; rounding up to
    /// whole seconds is the caller's job).
    pub retry_after: Option<Duration>,
}

/// A multi-window sliding-window limiter, keyed or not.
///
/// Keys are 64-bit SipHash digests under this limiter's random key, so state per key is fixed
/// in size whatever the key's length, and clients cannot aim for collisions (two of 100,000
/// keys share a digest with probability about 3 × 10⁻¹⁰; they would then share one budget).
/// A key costs 32 bytes in its table plus 80 bytes per window on the heap. Keyed state lives in
/// 16 tables, each behind its own lock, held only to find and update one key.
#[derive(Debug)]
pub struct RateLimiter {
    base: Instant,
    windows: Box<[Rule]>,
    smoothing: Option<Smoothing>,
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
    /// The state of requests without a key.
    unkeyed: Mutex<Budget>,
    /// Shared by new keys while their shard is full of keys still in use. Tracking them all
    /// would let a flood of distinct keys grow memory without bound; sharing instead means that
    /// under such a flood new keys are limited together. Locked only while holding the lock of
    /// the shard of the key at hand, so that a key's admissions here are visible before it can
    /// get state of its own.
    overflow: Mutex<Overflow>,
    /// A copy of `Overflow::busy_until`, so that new keys need not lock the overflow state
    /// when it counts nothing.
    overflow_busy_until: AtomicU64,
}

/// The overflow state and which keys used it.
#[derive(Debug)]
struct Overflow {
    budget: Budget,
    /// Until when (nanoseconds since the limiter's base) this state still counts a request.
    busy_until: u64,
    /// A bit per digest (its low 16 bits) of each key admitted here since the state was last
    /// idle, allocated on first use (8 KiB). A key given state of its own whose bit is set starts
    /// from this state's counts, which include whatever it was admitted here; a key that shares
    /// a bit with another one starts from them too, which refuses early, never late.
    users: Vec<u64>,
}

/// A window in the units the ring works in.
#[derive(Debug)]
struct Rule {
    /// Nanoseconds per bucket: the period over `SPAN`, rounded up so that `SPAN` buckets cover
    /// the whole period.
    width: u64,
    limit: u32,
}

/// GCRA for `burst`: one timestamp, the theoretical arrival time (TAT) when the burst is whole
/// again; each request moves it one interval later and may not move it more than `tolerance`
/// ahead of now.
#[derive(Debug)]
struct Smoothing {
    interval: u64,
    capacity: u32,
    tolerance: u64,
}

/// One key's state.
#[derive(Debug, Clone)]
struct Budget {
    /// The smoothing's TAT (unused without a burst).
    tat: u64,
    rings: Box<[Ring]>,
}

/// Admissions per bucket over one window; slot `n % SLOTS` holds bucket `n`.
#[derive(Debug, Clone)]
struct Ring {
    /// The newest bucket the ring holds; it holds the `SPAN` before it too.
    newest: u64,
    counts: [u32; SLOTS],
    /// The sum of `counts`: never more than the limit.
    total: u32,
    /// A bit per slot whose count is not zero.
    filled: u16,
}

#[derive(Debug, Default)]
struct Shard {
    keys: HashTable<(u64, Budget)>,
    max_keys: usize,
    /// No sweep before this time (nanoseconds since the limiter's base).
    next_reap: u64,
}

// === impl RateLimiter ===

impl RateLimiter {
    /// `windows` must be non-empty with limits of at least one, and `burst` at least one; the
    /// burst refills at the rate of the shortest window. At most `max_keys` keys get state of
    /// their own.
    pub fn new(windows: Vec<Window>, burst: Option<u32>, max_keys: usize) -> Self {
        debug_assert!(!windows.is_empty() && windows.iter().all(|w| w.limit > 0));
        let shortest = windows.iter().min_by_key(|w| w.period);
        let smoothing = burst.zip(shortest).map(|(capacity, window)| {
            // Rounded up so that the smoothing never admits faster than the window's rate.
            let interval = nanos(window.period).div_ceil(u64::from(window.limit)).max(1);
            Smoothing { interval, capacity, tolerance: interval.saturating_mul(u64::from(capacity)) }
        });
        let windows: Box<[Rule]> = windows
            .iter()
            .map(|w| Rule { width: nanos(w.period).div_ceil(SPAN).max(1), limit: w.limit })
            .collect();
        let empty = Budget { tat: 0, rings: vec![Ring::EMPTY; windows.len()].into_boxed_slice() };
        Self {
            base: Instant::now(),
            windows,
            smoothing,
            hasher: RandomState::new(),
            shards: std::array::from_fn(|i| {
                // Spread `max_keys` so that the shards add up to it exactly.
                let extra = usize::from(i < max_keys % SHARDS);
                Mutex::new(Shard { max_keys: max_keys / SHARDS + extra, ..Shard::default() })
            }),
            unkeyed: Mutex::new(empty.clone()),
            overflow: Mutex::new(Overflow { budget: empty, busy_until: 0, users: Vec::new() }),
            overflow_busy_until: AtomicU64::new(0),
        }
    }

    /// Decides whether a request for `key` (or the unkeyed state) may go now, and counts it in
    /// every window if it may.
    pub fn check(&self, key: Option<&[u8]>, now: Instant) -> Decision {
        let now = nanos(now.saturating_duration_since(self.base));
        let Some(key) = key else {
            return self.apply(&mut lock(&self.unkeyed), now);
        };

        let digest = self.hasher.hash_one(key);
        // Bits the table itself does not use (it takes the low bits and the top seven), so that
        // the keys of one shard still spread over its table.
        let mut shard = lock(&self.shards[(digest >> 32) as usize % SHARDS]);
        if let Some((_, budget)) = shard.keys.find_mut(digest, |(k, _)| *k == digest) {
            return self.apply(budget, now);
        }
        if shard.make_room(|budget| self.idle(budget, now), now) {
            let mut budget = self.new_budget(digest, now);
            let decision = self.apply(&mut budget, now);
            shard.keys.insert_unique(digest, (digest, budget), |(k, _)| *k);
            return decision;
        }
        // Still holding the shard's lock: the key cannot get state of its own before this
        // admission is on record.
        let mut overflow = lock(&self.overflow);
        if now >= overflow.busy_until {
            overflow.users.clear();
        }
        let decision = self.apply(&mut overflow.budget, now);
        if decision.allowed {
            let (word, bit) = user_bit(digest);
            overflow.users.resize(USER_WORDS, 0);
            overflow.users[word] |= bit;
            overflow.busy_until = self.busy_until(&overflow.budget);
            self.overflow_busy_until.store(overflow.busy_until, Ordering::Release);
        }
        decision
    }

    fn new_budget(&self, digest: u64, now: u64) -> Budget {
        if now < self.overflow_busy_until.load(Ordering::Acquire) {
            let overflow = lock(&self.overflow);
            let (word, bit) = user_bit(digest);
            if now < overflow.busy_until && overflow.users.get(word).is_some_and(|w| w & bit != 0) {
                return overflow.budget.clone();
            }
        }
        Budget { tat: 0, rings: vec![Ring::EMPTY; self.windows.len()].into_boxed_slice() }
    }

    fn apply(&self, budget: &mut Budget, now: u64) -> Decision {
        let mut allowed = true;
        for (rule, ring) in self.windows.iter().zip(budget.rings.iter_mut()) {
            ring.advance(now / rule.width);
            allowed &= ring.total < rule.limit;
        }
        if let Some(smoothing) = &self.smoothing {
            allowed &= smoothing.wait(budget.tat, now) == 0;
        }
        if allowed {
            for ring in budget.rings.iter_mut() {
                ring.admit();
            }
            if let Some(smoothing) = &self.smoothing {
                budget.tat = smoothing.next_tat(budget.tat, now);
            }
        }

        // The binding constraint: the least remaining, among equals the one that takes longest to
        // give quota back (computed for those only: it walks the ring).
        let windows = || self.windows.iter().zip(budget.rings.iter());
        let smoothing =
            || self.smoothing.iter().map(|smoothing| (smoothing, smoothing.remaining(budget.tat, now)));
        let least = windows()
            .map(|(rule, ring)| rule.remaining(ring))
            .chain(smoothing().map(|(_, remaining)| remaining))
            .min()
            .expect("a limiter has at least one window");
        let (limit, reset) = windows()
            .filter(|(rule, ring)| rule.remaining(ring) == least)
            .map(|(rule, ring)| (rule.limit, rule.reset(ring, now)))
            .chain(
                smoothing()
                    .filter(|&(_, remaining)| remaining == least)
                    .map(|(s, _)| (s.capacity, s.reset(budget.tat, now))),
            )
            .max_by_key(|&(_, reset)| reset)
            .expect("the least is someone's");
        // Refused means some constraint has nothing left, and the binding one is the last of
        // those to give a request back: then every constraint admits.
        let reset = Duration::from_nanos(reset);
        Decision { allowed, limit, remaining: least, reset, retry_after: (!allowed).then_some(reset) }
    }

    /// Whether forgetting this state changes nothing: nothing counted any more anywhere.
    fn idle(&self, budget: &mut Budget, now: u64) -> bool {
        budget.tat <= now
            && self.windows.iter().zip(budget.rings.iter_mut()).all(|(rule, ring)| {
                ring.advance(now / rule.width);
                ring.total == 0
            })
    }

    /// When the last request this state counts stops counting anywhere.
    fn busy_until(&self, budget: &Budget) -> u64 {
        let rings = self.windows.iter().zip(budget.rings.iter());
        rings.map(|(rule, ring)| ring.departure(ring.newest, rule.width)).fold(budget.tat, u64::max)
    }

    #[cfg(test)]
    fn key_count(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).keys.len()).sum()
    }
}

// === impl Rule ===

impl Rule {
    fn remaining(&self, ring: &Ring) -> u32 {
        self.limit.saturating_sub(ring.total)
    }

    /// Nanoseconds until one request more than now is admitted: when the oldest bucket with
    /// admissions leaves (the count never exceeds the limit, so that brings it below the limit).
    fn reset(&self, ring: &Ring, now: u64) -> u64 {
        ring.oldest().map_or(0, |bucket| ring.departure(bucket, self.width).saturating_sub(now))
    }
}

// === impl Ring ===

impl Ring {
    const EMPTY: Self = Self { newest: 0, counts: [0; SLOTS], total: 0, filled: 0 };

    /// Moves on to `bucket`, forgetting the buckets that left the ring. A bucket older than the
    /// newest (a request that read the clock before one that locked first) counts as the newest:
    /// it then counts for longer, never shorter.
    fn advance(&mut self, bucket: u64) {
        if bucket <= self.newest {
            return;
        }
        if bucket - self.newest >= SLOTS as u64 {
            *self = Self { newest: bucket, ..Self::EMPTY };
        } else {
            for b in self.newest + 1..=bucket {
                self.total -= std::mem::take(&mut self.counts[slot(b)]);
                self.filled &= !(1 << slot(b));
            }
        }
        self.newest = bucket;
    }

    /// Counts one more; only ever below a `u32` limit, so no count overflows.
    fn admit(&mut self) {
        let slot = slot(self.newest);
        self.counts[slot] += 1;
        self.total += 1;
        self.filled |= 1 << slot;
    }

    /// The oldest bucket with admissions counted, if any.
    fn oldest(&self) -> Option<u64> {
        // Rotated so that bit 0 is the oldest bucket's slot (bucket `newest - SPAN`, whose slot
        // is the one after the newest's); buckets before the first one are empty.
        let rotated = self.filled.rotate_right(slot(self.newest + 1) as u32);
        (rotated != 0).then(|| self.newest + u64::from(rotated.trailing_zeros()) - SPAN)
    }

    /// When `bucket` stops counting: once the newest bucket is `SPAN` later.
    fn departure(&self, bucket: u64, width: u64) -> u64 {
        bucket.saturating_add(SLOTS as u64).saturating_mul(width)
    }
}

/// The word and bit of `Overflow::users` for a digest.
fn user_bit(digest: u64) -> (usize, u64) {
    let index = (digest & 0xffff) as usize;
    (index / 64, 1 << (index % 64))
}

fn slot(bucket: u64) -> usize {
    (bucket % SLOTS as u64) as usize
}

// === impl Smoothing ===

impl Smoothing {
    fn next_tat(&self, tat: u64, now: u64) -> u64 {
        tat.max(now).saturating_add(self.interval)
    }

    /// Nanoseconds until a request fits; zero when one fits now.
    fn wait(&self, tat: u64, now: u64) -> u64 {
        self.next_tat(tat, now).saturating_sub(now.saturating_add(self.tolerance))
    }

    fn slack(&self, tat: u64, now: u64) -> u64 {
        now.saturating_add(self.tolerance).saturating_sub(tat.max(now))
    }

    fn remaining(&self, tat: u64, now: u64) -> u32 {
        let whole = self.slack(tat, now) / self.interval;
        u32::try_from(whole).map_or(self.capacity, |n| n.min(self.capacity))
    }

    /// Nanoseconds until one request more than now fits: when the slack reaches the next whole
    /// interval.
    fn reset(&self, tat: u64, now: u64) -> u64 {
        if tat <= now {
            return 0;
        }
        let slack = self.slack(tat, now);
        (slack / self.interval + 1).saturating_mul(self.interval) - slack
    }
}

// === impl Shard ===

impl Shard {
    /// Whether a new key fits, sweeping out idle keys if the shard is full.
    fn make_room(&mut self, mut idle: impl FnMut(&mut Budget) -> bool, now: u64) -> bool {
        if self.keys.len() < self.max_keys {
            return true;
        }
        if now < self.next_reap {
            return false;
        }
        self.next_reap = now.saturating_add(nanos(REAP_INTERVAL));
        self.keys.retain(|(_, budget)| !idle(budget));
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
mod tests;
