//! Sliding windows, smoothing and keys, on paused time.

use super::*;
use tokio::time::advance;

fn per(period_secs: u64, limit: u32) -> Window {
    Window { period: Duration::from_secs(period_secs), limit }
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn allowed(limiter: &RateLimiter, key: Option<&[u8]>, n: usize) -> usize {
    let now = Instant::now();
    (0..n).filter(|_| limiter.check(key, now).allowed).count()
}

/// The most admissions within any closed span of `span` (admission times sorted).
fn most_in_any_span(times: &[Instant], span: Duration) -> usize {
    let mut end = 0;
    (0..times.len())
        .map(|start| {
            while end < times.len() && times[end] - times[start] <= span {
                end += 1;
            }
            end - start
        })
        .max()
        .unwrap_or(0)
}

/// Requests at pseudo-random gaps of 1 to `max_gap_ms` for `run`; the admission times.
async fn overload(limiter: &RateLimiter, max_gap_ms: u64, run: Duration) -> Vec<Instant> {
    let mut rng = fastrand::Rng::with_seed(7);
    let (start, mut times) = (Instant::now(), Vec::new());
    while Instant::now() - start < run {
        if limiter.check(Some(b"k"), Instant::now()).allowed {
            times.push(Instant::now());
        }
        advance(ms(rng.u64(1..=max_gap_ms))).await;
    }
    times
}

#[tokio::test(start_paused = true)]
async fn a_full_window_is_spent_at_once_and_comes_back_a_window_later() {
    let limiter = RateLimiter::new(vec![per(60, 100)], None, 10);
    assert_eq!(allowed(&limiter, None, 100), 100);

    // The 100 count until their bucket (the first 4 s) leaves the ring, at 64 s.
    let refused = limiter.check(None, Instant::now());
    let back = secs(64);
    assert_eq!(
        refused,
        Decision { allowed: false, limit: 100, remaining: 0, reset: back, retry_after: Some(back) }
    );
    advance(secs(30)).await;
    assert_eq!(allowed(&limiter, None, 1_000), 0, "no refill within the window");
    advance(back - secs(30) - Duration::from_nanos(1)).await;
    let last = limiter.check(None, Instant::now());
    assert_eq!(last.retry_after, Some(Duration::from_nanos(1)), "Retry-After is exact");
    advance(Duration::from_nanos(1)).await;
    let decision = limiter.check(None, Instant::now());
    assert!(decision.allowed);
    assert_eq!((decision.remaining, decision.retry_after), (99, None));
    assert_eq!(allowed(&limiter, None, 1_000), 99);
}

#[tokio::test(start_paused = true)]
async fn two_minutes_of_overload_never_put_more_than_100_in_any_60_s() {
    let limiter = RateLimiter::new(vec![per(60, 100), per(3_600, 10_000)], None, 10);
    let times = overload(&limiter, 50, secs(140)).await;
    assert_eq!(most_in_any_span(&times, secs(60)), 100);
    // Refusing early by at most one bucket (4 s): each batch of 100 comes back 64 s later.
    assert_eq!(times.len(), 300);
}

#[tokio::test(start_paused = true)]
async fn every_window_caps_every_span_when_combined() {
    let (second, minute, hour) = (per(1, 5), per(60, 40), per(3_600, 150));
    let limiter = RateLimiter::new(vec![second, minute, hour], None, 10);
    let times = overload(&limiter, 300, Duration::from_secs(3 * 3_600)).await;
    assert!(most_in_any_span(&times, secs(1)) <= 5);
    assert_eq!(most_in_any_span(&times, secs(60)), 40);
    assert_eq!(most_in_any_span(&times, secs(3_600)), 150);
}

#[tokio::test(start_paused = true)]
async fn a_limit_of_one_comes_back_at_the_exact_edge_of_its_bucket() {
    // Buckets of 4 s: an admission at 4 s sharp is in the second, which leaves at 68 s.
    let limiter = RateLimiter::new(vec![per(60, 1)], None, 10);
    advance(secs(4)).await;
    assert!(limiter.check(None, Instant::now()).allowed);
    advance(secs(60)).await;
    let refused = limiter.check(None, Instant::now());
    assert_eq!((refused.allowed, refused.retry_after), (false, Some(secs(4))));
    advance(secs(4) - Duration::from_nanos(1)).await;
    assert!(!limiter.check(None, Instant::now()).allowed);
    advance(Duration::from_nanos(1)).await;
    assert!(limiter.check(None, Instant::now()).allowed);

    // One nanosecond before a bucket's edge is still in the bucket before: 64 s later.
    let limiter = RateLimiter::new(vec![per(1, 1)], None, 10);
    let width = Duration::from_nanos(1_000_000_000u64.div_ceil(SPAN));
    advance(width - Duration::from_nanos(1)).await;
    assert!(limiter.check(None, Instant::now()).allowed);
    let refused = limiter.check(None, Instant::now());
    assert_eq!(refused.retry_after, Some(width * 15 + Duration::from_nanos(1)));
    assert!(width * 15 + Duration::from_nanos(1) > secs(1), "a whole second, and a little more");
}

#[tokio::test(start_paused = true)]
async fn huge_limits_count_without_overflow() {
    let limiter = RateLimiter::new(vec![per(1, u32::MAX), per(3_600, u32::MAX)], Some(u32::MAX), 10);
    assert_eq!(allowed(&limiter, None, 10_000), 10_000);
    let decision = limiter.check(None, Instant::now());
    assert_eq!((decision.allowed, decision.limit, decision.remaining), (true, u32::MAX, u32::MAX - 10_001));
    advance(secs(2 * 3_600)).await;
    assert_eq!(limiter.check(None, Instant::now()).remaining, u32::MAX - 1);

    // A huge window beside a small one: the small one binds.
    let limiter = RateLimiter::new(vec![per(3_600, u32::MAX), per(1, 3)], None, 10);
    assert_eq!(allowed(&limiter, None, 10), 3);
    assert_eq!(limiter.check(None, Instant::now()).limit, 3);
}

#[tokio::test(start_paused = true)]
async fn the_binding_window_is_reported_and_retry_after_waits_for_all() {
    let limiter = RateLimiter::new(vec![per(1, 2), per(60, 3), per(3_600, 4)], None, 10);
    let second_back = Duration::from_nanos(16 * 1_000_000_000u64.div_ceil(SPAN));
    assert_eq!(allowed(&limiter, None, 2), 2);
    let refused = limiter.check(None, Instant::now());
    assert_eq!((refused.limit, refused.remaining, refused.retry_after), (2, 0, Some(second_back)));

    advance(second_back).await;
    assert!(limiter.check(None, Instant::now()).allowed);
    // The second has room again, the minute does not until its first bucket leaves at 64 s.
    let refused = limiter.check(None, Instant::now());
    assert_eq!((refused.limit, refused.retry_after), (3, Some(secs(64) - second_back)));
    assert_eq!(refused.reset, secs(64) - second_back);

    advance(secs(64) - second_back).await;
    assert!(limiter.check(None, Instant::now()).allowed);
    // Now the hour is spent until its first bucket (4 min) leaves, at 64 min.
    let refused = limiter.check(None, Instant::now());
    assert_eq!((refused.limit, refused.retry_after), (4, Some(secs(64 * 60 - 64))));
}

#[tokio::test(start_paused = true)]
async fn remaining_and_reset_follow_the_binding_window() {
    let limiter = RateLimiter::new(vec![per(60, 100), per(3_600, 10_000)], None, 10);
    let first = limiter.check(None, Instant::now());
    assert_eq!((first.limit, first.remaining, first.reset), (100, 99, secs(64)));
    assert_eq!(allowed(&limiter, None, 9), 9);

    // In the second bucket: the next quota back is the first bucket's, at 64 s.
    advance(secs(5)).await;
    let later = limiter.check(None, Instant::now());
    assert_eq!((later.limit, later.remaining, later.reset), (100, 89, secs(59)));
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_is_counted_nowhere() {
    // The minute window would run out first if refused requests counted in it.
    let limiter = RateLimiter::new(vec![per(1, 1), per(60, 5)], None, 10);
    for _ in 0..5 {
        assert_eq!(allowed(&limiter, None, 1_000), 1);
        advance(ms(1_100)).await;
    }
    assert_eq!(allowed(&limiter, None, 1_000), 0, "the minute's 5 are spent");
}

#[tokio::test(start_paused = true)]
async fn hammering_does_not_delay_recovery() {
    let limiter = RateLimiter::new(vec![per(60, 100)], None, 10);
    assert_eq!(allowed(&limiter, None, 100), 100);
    for _ in 0..640 {
        assert_eq!(allowed(&limiter, None, 10), 0);
        advance(ms(100)).await;
    }
    assert!(limiter.check(None, Instant::now()).allowed);
}

#[tokio::test(start_paused = true)]
async fn burst_smooths_and_the_window_still_caps() {
    let limiter = RateLimiter::new(vec![per(60, 100)], Some(5), 10);
    let first = limiter.check(None, Instant::now());
    assert_eq!((first.limit, first.remaining), (5, 4));
    assert_eq!(allowed(&limiter, None, 100), 4);
    let refused = limiter.check(None, Instant::now());
    assert_eq!((refused.limit, refused.retry_after), (5, Some(ms(600))));

    advance(ms(600)).await;
    assert_eq!(allowed(&limiter, None, 100), 1);

    // Under overload: 5 at once, then one per 600 ms, which alone would make 105 in the
    // first minute; the window still caps every span at 100.
    let limiter = RateLimiter::new(vec![per(60, 100)], Some(5), 10);
    let times = overload(&limiter, 100, secs(600)).await;
    assert_eq!(most_in_any_span(&times, secs(60)), 100);
    assert!(most_in_any_span(&times, secs(6)) <= 5 + 10);
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent() {
    let limiter = RateLimiter::new(vec![per(60, 3)], None, 100);
    assert_eq!(allowed(&limiter, Some(b"a"), 10), 3);
    assert_eq!(allowed(&limiter, Some(b"b"), 10), 3);
    assert_eq!(allowed(&limiter, None, 10), 3);
    assert_eq!(limiter.key_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn key_floods_stay_bounded_and_idle_keys_are_reaped() {
    let limiter = RateLimiter::new(vec![per(60, 1)], None, 32);
    let flood = |round: usize| {
        let now = Instant::now();
        (0..1_000).filter(|i| limiter.check(Some(format!("{round}-{i}").as_bytes()), now).allowed).count()
    };

    // 32 keys get their own state; the rest share the overflow state, which allows one.
    assert_eq!(flood(0), 33);
    assert_eq!(limiter.key_count(), 32);

    // Tracked keys still have requests counted, so they are kept and the overflow state,
    // still spent, refuses everything new.
    advance(secs(30)).await;
    assert_eq!(flood(1), 0);
    assert_eq!(limiter.key_count(), 32);

    // Once nothing is counted any more, the old keys are swept out to make room.
    advance(secs(34)).await;
    assert_eq!(flood(2), 33);
    assert_eq!(limiter.key_count(), 32);
}

#[tokio::test(start_paused = true)]
async fn a_key_that_shared_the_overflow_keeps_its_count_when_it_gets_its_own() {
    // One key per shard, filled at 0 s (keys landing in a full shard spend overflow quota).
    let limiter = RateLimiter::new(vec![per(60, 1_000)], None, SHARDS);
    let mut filled = 0;
    while limiter.key_count() < SHARDS {
        limiter.check(Some(format!("fill-{filled}").as_bytes()), Instant::now());
        filled += 1;
    }

    // At 10 s "k" finds no room and takes what the overflow state has left.
    advance(secs(10)).await;
    let in_overflow = allowed(&limiter, Some(b"k"), 2_000);
    assert_eq!(in_overflow, 1_000 - (filled - SHARDS));

    // At 64 s the fill keys are idle and swept: "k" gets state of its own, which still
    // counts its admissions at 10 s. Starting afresh would allow 1,000 more within 60 s.
    advance(secs(54)).await;
    let own = allowed(&limiter, Some(b"k"), 2_000);
    assert_eq!(in_overflow + own, 1_000);
    assert!(limiter.key_count() <= SHARDS);
}

#[tokio::test(start_paused = true)]
async fn a_full_shard_is_swept_at_most_once_per_interval() {
    // One key per shard, each counted for about half a second.
    let window = Window { period: ms(500), limit: 1 };
    let limiter = RateLimiter::new(vec![window], None, SHARDS);
    let flood = |round: usize| {
        let now = Instant::now();
        (0..1_000).filter(|i| limiter.check(Some(format!("{round}-{i}").as_bytes()), now).allowed).count()
    };
    // Filling the shards already swept each of them once, freeing nothing.
    assert_eq!(flood(0), SHARDS + 1);

    // The keys are idle but not swept yet: only the overflow state has room.
    advance(ms(600)).await;
    assert_eq!(flood(1), 1);
    assert_eq!(limiter.key_count(), SHARDS);

    // A second after the first sweep (and with the overflow state idle again) they are.
    advance(ms(600)).await;
    assert_eq!(flood(2), SHARDS + 1);
    assert_eq!(limiter.key_count(), SHARDS);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_200_000_long_keys_keeps_a_bounded_number_of_fixed_size_keys() {
    // 8 KiB keys as an attacker would send them in a header; only digests are kept, and no
    // more than the bound (the end-to-end test measures the sidecar's RSS under a flood).
    let limiter = RateLimiter::new(vec![per(60, 100), per(3_600, 10_000)], None, 100_000);
    let mut key = vec![b'x'; 8 * 1024];
    for i in 0..200_000u32 {
        key[..4].copy_from_slice(&i.to_le_bytes());
        limiter.check(Some(&key), Instant::now());
    }
    assert_eq!(limiter.key_count(), 100_000);
}
