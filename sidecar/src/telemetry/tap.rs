//! Tap on the sidecar: which requests to record for the operators tapping this sidecar's
//! service (the filters the control plane pushes, [`Tap::set`]), recording them, and the
//! bounded queue the reporter ([`crate::source::tap`]) drains.
//!
//! Tapping must never hurt traffic, so:
//! - when no one taps, a request pays one relaxed atomic load ([`Tap::sample`]), nothing more;
//! - when someone does, a request is sampled at its start only if a filter matches and the
//!   sidecar's budget of [`EVENTS_PER_SECOND`] allows (the rate limiter of rate-limit
//!   policies: no more than that in any one-second span), so only sampled requests build a
//!   record;
//! - a sampled request becomes an event when its response ends (its access-log record, which
//!   then exists even with the access log off), queued in at most [`QUEUE_EVENTS`] events:
//!   past that, events are dropped (and counted in the next report's log line), never waited
//!   for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use pilotfish_api::wire::tap::{MAX_TAP_METHOD, MAX_TAP_TEXT};
use pilotfish_api::wire::{EdgeDirection, TapControl, TapEvent, TapFilter, MAX_TAPS};
use tokio::sync::Notify;

use super::access_log::{HttpRecord, Tls};
use crate::resilience::ratelimit::limiter::{RateLimiter, Window};

/// Requests one sidecar records per second, at most.
pub const EVENTS_PER_SECOND: u32 = 100;
/// Events waiting for the reporter, at most (one report's worth).
pub const QUEUE_EVENTS: usize = pilotfish_api::wire::MAX_TAP_EVENTS_PER_REPORT;

/// The sidecar's tap state, shared by every request and the reporter.
pub struct Tap {
    /// Whether any filter is in force: what a request reads when no one taps.
    active: AtomicBool,
    filters: ArcSwap<Vec<TapFilter>>,
    budget: RateLimiter,
    queue: Mutex<Vec<TapEvent>>,
    /// Events dropped because the queue was full, since the reporter last looked.
    dropped: AtomicU64,
    /// Wakes the reporter when the queue gets its first event.
    queued: Notify,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("active", &self.is_active()).finish_non_exhaustive()
    }
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            active: AtomicBool::new(false),
            filters: ArcSwap::default(),
            budget: RateLimiter::new(
                vec![Window { period: Duration::from_secs(1), limit: EVENTS_PER_SECOND }],
                None,
                0,
            ),
            queue: Mutex::default(),
            dropped: AtomicU64::new(0),
            queued: Notify::new(),
        }
    }
}

impl Tap {
    /// Records requests that match any of `control`'s filters from now on (at most
    /// [`MAX_TAPS`] of them); none: stops.
    pub fn set(&self, control: TapControl) {
        let mut filters = control.filters;
        if filters.len() > MAX_TAPS {
            tracing::warn!(
                filters = filters.len(),
                "tap line with more filters than taps may be open; keeping {MAX_TAPS}"
            );
            filters.truncate(MAX_TAPS);
        }
        let active = !filters.is_empty();
        self.filters.store(Arc::new(filters));
        self.active.store(active, Ordering::Relaxed);
        tracing::info!(active, "tap filters changed");
    }

    /// Stops recording (the stream that said what to tap is gone).
    pub fn stop(&self) {
        if self.is_active() {
            self.set(TapControl::default());
        }
    }

    /// Whether any filter is in force.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether to record the request of `method` to `path`: never when no one taps (one
    /// atomic load), else when a filter matches and the budget allows.
    #[inline]
    pub fn sample(&self, method: &http::Method, path: &str) -> bool {
        self.is_active() && self.sample_active(method, path)
    }

    #[cold]
    fn sample_active(&self, method: &http::Method, path: &str) -> bool {
        self.filters.load().iter().any(|f| f.matches(method.as_str(), path))
            && self.budget.check(None, tokio::time::Instant::now()).allowed
    }

    /// Queues a sampled request's event, its response ended; dropped when the queue is full.
    pub fn record(&self, record: &HttpRecord) {
        // Built before taking the lock: the sidecar's request tasks share the queue.
        let event = event(record);
        let mut queue = self.queue();
        if queue.len() >= QUEUE_EVENTS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push(event);
        if queue.len() == 1 {
            self.queued.notify_one();
        }
    }

    /// Waits until an event is queued (at once if one is).
    pub async fn wait(&self) {
        let notified = self.queued.notified();
        if self.queue().is_empty() {
            notified.await;
        }
    }

    /// The queued events, and how many were dropped since the last call.
    pub fn take(&self) -> (Vec<TapEvent>, u64) {
        let events = std::mem::take(&mut *self.queue());
        (events, self.dropped.swap(0, Ordering::Relaxed))
    }

    fn queue(&self) -> MutexGuard<'_, Vec<TapEvent>> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A finished request's record as a tap event: its strings cut to what a report may carry
/// ([`TapReport::check`](pilotfish_api::wire::TapReport::check)).
fn event(r: &HttpRecord) -> TapEvent {
    let inbound = r.direction == "inbound";
    let peer = if inbound { r.peer.as_ref() } else { r.server.as_ref() };
    TapEvent {
        at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        proxy: None,
        direction: if inbound { EdgeDirection::Inbound } else { EdgeDirection::Outbound },
        method: cut(&r.method, MAX_TAP_METHOD),
        authority: cut(&r.authority, MAX_TAP_TEXT),
        path: cut(&r.path, MAX_TAP_TEXT),
        status: r.status,
        latency_ms: r.duration_ms,
        request_id: r.request_id.as_deref().map(|id| cut(id, MAX_TAP_TEXT)),
        peer: peer.map(|id| id.to_string()),
        secured: r.tls == Tls::Mtls,
        error: r.error.map(str::to_owned),
    }
}

/// `s`, or its first `max` bytes (at a character boundary), with control characters (a tab
/// in a header value, say) as spaces.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].replace(char::is_control, " ")
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::Method;
    use pilotfish_api::wire::TapReport;

    use super::*;

    fn record(method: &str, path: &str) -> HttpRecord {
        HttpRecord {
            direction: "inbound",
            client: SocketAddr::from(([127, 0, 0, 1], 1234)),
            method: method.into(),
            authority: "web".into(),
            path: path.into(),
            protocol: "HTTP/1.1",
            status: 503,
            duration_ms: 2.5,
            response_bytes: 0,
            upstream: None,
            service: None,
            request_id: Some("r-1".into()),
            traceparent: None,
            tls: Tls::Mtls,
            peer: Some(Arc::new("spiffe://pilotfish.local/ns/default/sa/client".parse().unwrap())),
            server: None,
            error: Some("no-endpoints"),
            logged: false,
            tap: None,
        }
    }

    fn control(path: Option<&str>, method: Option<&str>) -> TapControl {
        TapControl { filters: vec![TapFilter { path: path.map(Into::into), method: method.map(Into::into) }] }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sampled_until_a_filter_matches_and_none_after_stop() {
        let tap = Tap::default();
        assert!(!tap.sample(&Method::GET, "/api"), "no one taps");
        tap.set(control(Some("/api"), Some("GET")));
        assert!(tap.sample(&Method::GET, "/api/users"));
        assert!(!tap.sample(&Method::POST, "/api/users"), "another method");
        assert!(!tap.sample(&Method::GET, "/health"), "another path");
        tap.stop();
        assert!(!tap.sample(&Method::GET, "/api/users"), "stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_budget_is_sampled_per_second() {
        let tap = Tap::default();
        tap.set(control(None, None));
        let sampled = (0..1000).filter(|_| tap.sample(&Method::GET, "/")).count();
        assert_eq!(sampled, EVENTS_PER_SECOND as usize);
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(tap.sample(&Method::GET, "/"), "the next second has a budget again");
    }

    #[tokio::test(start_paused = true)]
    async fn events_carry_the_record_and_the_queue_drops_past_its_bound() {
        let tap = Tap::default();
        let mut long = record(&"X".repeat(MAX_TAP_METHOD + 8), &format!("/{}", "é".repeat(MAX_TAP_TEXT)));
        long.request_id = Some("tab\there".into());
        tap.record(&long);
        tap.wait().await;
        let (events, dropped) = tap.take();
        assert_eq!(dropped, 0);
        assert_eq!(TapReport::new(events.clone()).check(), Ok(()), "what it records, a report may carry");
        let e = &events[0];
        assert!(e.path.len() <= MAX_TAP_TEXT && e.path.starts_with("/é"), "cut at a character boundary");
        assert_eq!(e.method.len(), MAX_TAP_METHOD);
        assert_eq!(e.request_id.as_deref(), Some("tab here"), "control characters become spaces");
        assert_eq!((e.status, e.latency_ms, e.secured), (503, 2.5, true));
        assert_eq!(e.peer.as_deref(), Some("spiffe://pilotfish.local/ns/default/sa/client"));
        assert_eq!((e.direction, e.error.as_deref()), (EdgeDirection::Inbound, Some("no-endpoints")));

        for _ in 0..QUEUE_EVENTS + 5 {
            tap.record(&record("GET", "/"));
        }
        let (events, dropped) = tap.take();
        assert_eq!((events.len(), dropped), (QUEUE_EVENTS, 5));
        assert_eq!(events[0].request_id.as_deref(), Some("r-1"));
        assert_eq!(tap.take(), (Vec::new(), 0), "taken once");
    }

    #[test]
    fn an_outbound_event_names_the_endpoint_it_reached_as_its_peer() {
        let mut r = record("GET", "/");
        r.direction = "outbound";
        r.peer = None;
        r.server = Some(Arc::new("spiffe://pilotfish.local/ns/default/sa/users".parse().unwrap()));
        let e = event(&r);
        assert_eq!(
            (e.direction, e.peer.as_deref()),
            (EdgeDirection::Outbound, Some("spiffe://pilotfish.local/ns/default/sa/users"))
        );
    }
}
