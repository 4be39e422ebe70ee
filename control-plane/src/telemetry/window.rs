//! One edge's rolling window: per-second slots of counts, kept for [`RETAIN_SECONDS`], merged
//! over whatever window a query asks for.
//!
//! Slots are allocated sparsely — only for the seconds in which a report arrived (a sidecar
//! reports every two seconds, so an edge with one sidecar fills half of them) — in a
//! `VecDeque` ordered by second, so adding is to the back and ageing out from the front. A
//! slot is [`SLOT_BYTES`]: at most [`RETAIN_SECONDS`] of them per edge.

use std::collections::VecDeque;

use pilotfish_api::wire::stats::{bucket_upper_ms, LATENCY_BUCKETS};
use pilotfish_api::wire::{EdgeCounts, Golden};

/// How far back any window may reach.
pub const RETAIN_SECONDS: u64 = pilotfish_api::wire::stats::MAX_WINDOW_SECONDS;

/// The size of one slot in memory.
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// What reports added in one second.
#[derive(Debug, Clone, Default)]
struct Slot {
    second: u64,
    requests: u64,
    successes: u64,
    tcp_opened: u64,
    bytes_sent: u64,
    bytes_received: u64,
    latency: [u32; LATENCY_BUCKETS],
}

/// Counts merged over a window: what a row of `/v1/stats` is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub successes: u64,
    pub tcp_opened: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Totals {
    /// The latency (ms) below which a fraction `q` of the requests fell: the upper bound of
    /// the bucket holding the request at that rank.
    pub fn quantile_ms(&self, q: f64) -> Option<u32> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        self.latency
            .iter()
            .position(|n| {
                seen += n;
                seen >= rank
            })
            .map(bucket_upper_ms)
    }

    /// The golden metrics over `seconds`, with `tcp_open` connections open now.
    pub fn golden(&self, seconds: u64, tcp_open: u64) -> Golden {
        Golden {
            requests: self.requests,
            successes: self.successes,
            success_rate: (self.requests > 0).then(|| self.successes as f64 / self.requests as f64),
            rps: self.requests as f64 / seconds.max(1) as f64,
            p50_ms: self.quantile_ms(0.5),
            p95_ms: self.quantile_ms(0.95),
            p99_ms: self.quantile_ms(0.99),
            tcp_opened: self.tcp_opened,
            tcp_open,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
        }
    }
}

/// An edge's slots, oldest first.
#[derive(Debug, Default)]
pub struct Window {
    slots: VecDeque<Slot>,
}

impl Window {
    /// Adds `counts` reported at `second` (seconds only move forward).
    pub fn add(&mut self, second: u64, counts: &EdgeCounts) {
        if self.slots.back().is_none_or(|s| s.second < second) {
            self.slots.push_back(Slot { second, ..Slot::default() });
        }
        let slot = self.slots.back_mut().expect("just pushed");
        slot.requests += counts.requests;
        slot.successes += counts.successes.min(counts.requests);
        slot.tcp_opened += counts.tcp_opened;
        slot.bytes_sent += counts.bytes_sent;
        slot.bytes_received += counts.bytes_received;
        for &(bucket, n) in &counts.latency {
            if let Some(b) = slot.latency.get_mut(usize::from(bucket)) {
                *b = b.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
        self.age_out(second);
    }

    /// Drops the slots older than [`RETAIN_SECONDS`] before `now`.
    pub fn age_out(&mut self, now: u64) {
        while self.slots.front().is_some_and(|s| s.second + RETAIN_SECONDS <= now) {
            self.slots.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds the counts of the last `seconds` up to `now` (the current second included) to
    /// `totals`.
    pub fn add_to(&self, totals: &mut Totals, now: u64, seconds: u64) {
        for slot in self.slots.iter().rev().take_while(|s| s.second + seconds > now) {
            totals.requests += slot.requests;
            totals.successes += slot.successes;
            totals.tcp_opened += slot.tcp_opened;
            totals.bytes_sent += slot.bytes_sent;
            totals.bytes_received += slot.bytes_received;
            for (t, n) in totals.latency.iter_mut().zip(slot.latency) {
                *t += u64::from(n);
            }
        }
    }

    /// The counts of the last `seconds` up to `now`.
    #[cfg(test)]
    fn totals(&self, now: u64, seconds: u64) -> Totals {
        let mut totals = Totals::default();
        self.add_to(&mut totals, now, seconds);
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, successes: u64, bucket: u8) -> EdgeCounts {
        EdgeCounts { requests, successes, latency: vec![(bucket, requests)], ..EdgeCounts::default() }
    }

    #[test]
    fn a_window_counts_only_its_last_seconds() {
        let mut w = Window::default();
        w.add(10, &counts(5, 5, 0));
        w.add(10, &counts(5, 4, 0));
        w.add(14, &counts(3, 3, 2));
        assert_eq!(w.totals(14, 5).requests, 13, "seconds 10..=14");
        assert_eq!(w.totals(15, 5).requests, 3, "second 10 is out");
        assert_eq!(w.totals(14, 5).successes, 12);
        assert_eq!(w.slots.len(), 2, "one slot per second with reports");
    }

    #[test]
    fn slots_age_out_after_an_hour() {
        let mut w = Window::default();
        w.add(1, &counts(1, 1, 0));
        w.add(RETAIN_SECONDS, &counts(1, 1, 0));
        assert_eq!(w.slots.len(), 2);
        w.add(RETAIN_SECONDS + 1, &counts(1, 1, 0));
        assert_eq!(w.slots.len(), 2, "second 1 aged out");
        w.age_out(3 * RETAIN_SECONDS);
        assert!(w.is_empty());
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let mut w = Window::default();
        // 90 requests at <= 1 ms (bucket 0), 10 at <= 100 ms (bucket 11).
        w.add(1, &counts(90, 90, 0));
        w.add(1, &counts(10, 0, 11));
        let t = w.totals(1, 60);
        assert_eq!(
            (t.quantile_ms(0.5), t.quantile_ms(0.9), t.quantile_ms(0.95)),
            (Some(1), Some(1), Some(100))
        );
        let golden = t.golden(10, 0);
        assert_eq!((golden.rps, golden.success_rate), (10.0, Some(0.9)));
        assert_eq!(Totals::default().quantile_ms(0.5), None);
    }
}
