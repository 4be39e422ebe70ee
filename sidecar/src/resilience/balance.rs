//! Endpoint load as a peak-sensitive moving average of response times ([`PeakEwma`]), and the
//! power-of-two-choices pick ([`p2c`]) that balances on it.
//!
//! This is the balancer of linkerd2-proxy and Finagle (tower's `load::PeakEwma` and
//! `balance::p2c`), reduced to lock-free per-endpoint state that a readiness-gated endpoint list
//! can use without wrapping each endpoint in a tower `Service`. Why not tower's balancer itself:
//! it owns its endpoints as `Service`s and is shared through a `Buffer` (a channel hop and a task
//! per request), while a retry here must re-pick per attempt, skip the endpoint that just failed,
//! and consult the circuit breaker and health state — all cheap reads on this list.

use std::cmp::Ordering as CostOrdering;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Extra random draws `p2c` makes when the first pair has a rejected endpoint, before it scans.
const EXTRA_DRAWS: usize = 4;

/// One endpoint's load: a round-trip-time estimate and the requests in flight.
///
/// A sample above the estimate replaces it at once, so a slowing endpoint loses traffic
/// immediately; a lower sample pulls the estimate down with weight `1 - exp(-elapsed / decay)`,
/// where `elapsed` is the time since the previous sample, so recovery is gradual and independent
/// of the request rate.
///
/// [`PeakEwma::cost`] reads the estimate decayed toward zero for the time since the last sample,
/// as tower does. An endpoint that stopped getting traffic after a slow response thus drifts back
/// into favour and gets a request that measures it again, rather than keeping a stale peak for
/// ever. The decay is not stored, so the next sample still blends with the last measured value.
///
/// The estimate and its timestamp are separate atomics. Concurrent updates may lose a sample or
/// pair one's estimate with the other's timestamp; either only nudges a heuristic that the next
/// sample corrects, which is cheaper than a lock on every response.
#[derive(Debug)]
pub struct PeakEwma {
    base: Instant,
    decay_ns: f64,
    /// The `f64` bits of the estimate, in nanoseconds.
    rtt_ns: AtomicU64,
    /// When the estimate was last updated, in nanoseconds since `base`.
    updated_ns: AtomicU64,
    in_flight: AtomicUsize,
}

impl PeakEwma {
    /// `default_rtt` is the estimate until the first sample; `decay` is the time constant.
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self {
            base: Instant::now(),
            // A zero decay would make the weight 0/0 for samples at the same instant.
            decay_ns: decay.as_nanos().max(1) as f64,
            rtt_ns: AtomicU64::new((default_rtt.as_nanos() as f64).to_bits()),
            updated_ns: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Counts a request sent to the endpoint.
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request as finished and, if it produced a response, samples its `rtt`.
    ///
    /// Requests that never got a response (cancelled, connection refused) say nothing about the
    /// endpoint's latency, hence the `Option`.
    pub fn finish(&self, rtt: Option<Duration>, now: Instant) {
        let before = self.in_flight.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "PeakEwma::finish without start");
        if let Some(rtt) = rtt {
            self.observe(rtt.as_nanos() as f64, now);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The decayed estimate in nanoseconds times `in_flight + 1`: lower is better.
    pub fn cost(&self, now: Instant) -> f64 {
        let (estimate, weight) = self.estimate(now);
        estimate * weight * (self.in_flight() + 1) as f64
    }

    fn observe(&self, sample: f64, now: Instant) {
        let (estimate, weight) = self.estimate(now);
        let next = if sample > estimate { sample } else { estimate * weight + sample * (1.0 - weight) };
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
        self.updated_ns.store(self.nanos(now), Ordering::Relaxed);
    }

    /// The stored estimate and the weight it keeps against a sample taken `now`.
    fn estimate(&self, now: Instant) -> (f64, f64) {
        let estimate = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let elapsed = self.nanos(now).saturating_sub(self.updated_ns.load(Ordering::Relaxed));
        (estimate, (-(elapsed as f64) / self.decay_ns).exp())
    }

    fn nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.base).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }
}

/// Power of two choices: picks two distinct random indices among those `candidate(i)` accepts and
/// returns the one with the lower `cost(i)`, or the only acceptable one. `None` when nothing is
/// acceptable.
///
/// When every index is acceptable this is two random draws and two cost reads. When the first
/// pair holds a rejected index it makes a few more draws, then falls back to one scan that
/// samples two acceptable indices uniformly, so a mostly-rejected list is still fair and nothing
/// is allocated. `candidate` may be called more than once for the same index.
pub fn p2c(len: usize, candidate: impl Fn(usize) -> bool, cost: impl Fn(usize) -> f64) -> Option<usize> {
    let cheaper = |a: usize, b: usize| match cost(a).partial_cmp(&cost(b)) {
        Some(CostOrdering::Less) => a,
        Some(CostOrdering::Greater) => b,
        // Equal costs are common (every endpoint before its first response); a fixed choice
        // would send them all to one endpoint.
        _ if fastrand::bool() => a,
        _ => b,
    };

    if len < 2 {
        return (len == 1 && candidate(0)).then_some(0);
    }

    let a = fastrand::usize(..len);
    // Draw from the other `len - 1` indices so the pair is distinct without retrying.
    let b = match fastrand::usize(..len - 1) {
        b if b >= a => b + 1,
        b => b,
    };
    let mut found = match (candidate(a), candidate(b)) {
        (true, true) => return Some(cheaper(a, b)),
        (true, false) => Some(a),
        (false, true) => Some(b),
        (false, false) => None,
    };

    for _ in 0..EXTRA_DRAWS {
        let i = fastrand::usize(..len);
        if found == Some(i) || !candidate(i) {
            continue;
        }
        match found {
            Some(a) => return Some(cheaper(a, i)),
            None => found = Some(i),
        }
    }

    // Reservoir sampling of two: after `seen` acceptable indices, each is held with probability
    // 2/seen.
    let (mut first, mut second, mut seen) = (None, None, 0);
    for i in (0..len).filter(|&i| candidate(i)) {
        seen += 1;
        match seen {
            1 => first = Some(i),
            2 => second = Some(i),
            _ => match fastrand::usize(..seen) {
                0 => first = Some(i),
                1 => second = Some(i),
                _ => {}
            },
        }
    }
    match (first, second) {
        (Some(a), Some(b)) => Some(cheaper(a, b)),
        (first, _) => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const DEFAULT_RTT: Duration = Duration::from_millis(30);
    const DECAY: Duration = Duration::from_secs(10);

    fn ms(ms: u64) -> f64 {
        Duration::from_millis(ms).as_nanos() as f64
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() <= expected * 1e-9, "{actual} != {expected}");
    }

    fn sample(ewma: &PeakEwma, rtt_ms: u64) {
        ewma.start();
        ewma.finish(Some(Duration::from_millis(rtt_ms)), Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn one_slow_sample_raises_the_estimate_at_once() {
        let ewma = PeakEwma::new(DEFAULT_RTT, DECAY);
        assert_close(ewma.cost(Instant::now()), ms(30));

        // A lower sample at the same instant has no weight yet.
        sample(&ewma, 10);
        assert_close(ewma.cost(Instant::now()), ms(30));

        sample(&ewma, 500);
        assert_close(ewma.cost(Instant::now()), ms(500));
    }

    #[tokio::test(start_paused = true)]
    async fn estimate_decays_over_time() {
        let ewma = PeakEwma::new(DEFAULT_RTT, DECAY);
        sample(&ewma, 500);

        advance(DECAY).await;
        let e = (-1.0f64).exp();
        assert_close(ewma.cost(Instant::now()), ms(500) * e);

        // A faster response pulls the last measured value toward it by the weight of the gap.
        sample(&ewma, 10);
        let blended = ms(500) * e + ms(10) * (1.0 - e);
        assert_close(ewma.cost(Instant::now()), blended);

        advance(2 * DECAY).await;
        assert_close(ewma.cost(Instant::now()), blended * (-2.0f64).exp());
    }

    #[tokio::test(start_paused = true)]
    async fn cost_grows_with_in_flight() {
        let ewma = PeakEwma::new(DEFAULT_RTT, DECAY);
        for _ in 0..3 {
            ewma.start();
        }
        assert_eq!(ewma.in_flight(), 3);
        assert_close(ewma.cost(Instant::now()), ms(30) * 4.0);

        ewma.finish(None, Instant::now());
        assert_eq!(ewma.in_flight(), 2);
        assert_close(ewma.cost(Instant::now()), ms(30) * 3.0);
    }

    /// Sends a request every millisecond to four 10 ms endpoints and one 100 ms endpoint.
    #[tokio::test(start_paused = true)]
    async fn p2c_avoids_a_slow_endpoint() {
        fastrand::seed(1);
        let latency = [10, 10, 10, 10, 100].map(Duration::from_millis);
        let endpoints = latency.map(|_| PeakEwma::new(DEFAULT_RTT, DECAY));
        let mut pending: Vec<(Instant, usize)> = Vec::new();
        let mut picks = [0u32; 5];

        for _ in 0..10_000 {
            advance(Duration::from_millis(1)).await;
            let now = Instant::now();
            pending.retain(|&(done, i)| {
                let finished = done <= now;
                if finished {
                    endpoints[i].finish(Some(latency[i]), now);
                }
                !finished
            });
            let i = p2c(endpoints.len(), |_| true, |i| endpoints[i].cost(now)).unwrap();
            endpoints[i].start();
            pending.push((now + latency[i], i));
            picks[i] += 1;
        }

        // Uniform picks would give it 2,000.
        assert!(picks[4] < 300, "slow endpoint got {picks:?}");
        assert!(picks[..4].iter().all(|&n| n > 2_000), "fast endpoints: {picks:?}");
    }

    #[test]
    fn p2c_skips_rejected_candidates() {
        fastrand::seed(2);
        for _ in 0..100 {
            assert_eq!(p2c(10, |i| i == 7, |_| 1.0), Some(7));
            // Both survivors are compared, not just the first one found.
            assert_eq!(p2c(10, |i| i == 3 || i == 8, |i| i as f64), Some(3));
            assert_eq!(p2c(1_000, |i| i == 3 || i == 800, |i| -(i as f64)), Some(800));
            assert!(p2c(10, |i| i % 2 == 0, |_| 1.0).is_some_and(|i| i % 2 == 0));
        }
    }

    #[test]
    fn p2c_spreads_equal_costs() {
        fastrand::seed(3);
        let cases: [(usize, &[usize]); 4] = [
            (2, &[0, 1]),
            (10, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            // Mostly found by the fallback scan.
            (1_000, &[10, 900]),
            (1_000, &[10, 500, 900]),
        ];
        for (len, accept) in cases {
            let mut picks = vec![0; len];
            let rounds = 1_000 * accept.len();
            for _ in 0..rounds {
                picks[p2c(len, |i| accept.contains(&i), |_| 1.0).unwrap()] += 1;
            }
            for &i in accept {
                assert!((800..1_200).contains(&picks[i]), "len {len}: {picks:?}");
            }
        }
    }

    #[test]
    fn p2c_none_when_all_rejected() {
        assert_eq!(p2c(0, |_| true, |_| 1.0), None);
        assert_eq!(p2c(1, |_| false, |_| 1.0), None);
        assert_eq!(p2c(2, |_| false, |_| 1.0), None);
        assert_eq!(p2c(100, |_| false, |_| 1.0), None);
    }

    #[test]
    fn p2c_small_lists() {
        fastrand::seed(4);
        assert_eq!(p2c(1, |_| true, |_| 1.0), Some(0));
        for _ in 0..100 {
            // Two distinct draws: the cheaper endpoint always wins.
            assert_eq!(p2c(2, |_| true, |i| [2.0, 1.0][i]), Some(1));
            assert_eq!(p2c(2, |i| i == 0, |i| [2.0, 1.0][i]), Some(0));
        }
    }
}
