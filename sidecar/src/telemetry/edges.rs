//! Per-edge golden metrics for the control plane: what this sidecar's app sent to each
//! destination (service and the identity its endpoint proves), counted on the request path and
//! collected as a delta by the reporter ([`crate::source::stats`]) about every two seconds.
//!
//! Like the Prometheus handles of [`super::metrics`], an edge's handle ([`EdgeStats`]) is
//! resolved when a service's runtime state is built; the request path only adds to its
//! atomics (relaxed: each counter is a sum on its own, and a report that catches a request
//! half counted gives the other half to the next report). Collecting swaps every counter to
//! zero, so counts are never lost between reports and never counted twice. Edges no snapshot
//! holds any more are forgotten once they have nothing left to report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use pilotfish_api::wire::stats::{latency_bucket, LATENCY_BUCKETS, MAX_EDGES_PER_REPORT};
use pilotfish_api::wire::DEFAULT_NAMESPACE;
use pilotfish_api::wire::{EdgeCounts, EdgeDirection, EdgePeer, EdgeReport};

/// One edge's counters since the last collection.
#[derive(Default)]
pub struct EdgeStats {
    /// Requests by latency bucket: their sum is the requests, so a request costs one atomic
    /// add, and a failure one more.
    latency: [AtomicU64; LATENCY_BUCKETS],
    failures: AtomicU64,
    tcp_opened: AtomicU64,
    /// Not reset by collection: a gauge.
    tcp_open: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

impl EdgeStats {
    /// A request answered with `status` (and response `headers`, for gRPC) after `elapsed`.
    pub fn record(&self, status: u16, headers: Option<&HeaderMap>, elapsed: Duration) {
        let micros =
            elapsed.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(elapsed.subsec_micros()));
        self.latency[latency_bucket(micros)].fetch_add(1, Relaxed);
        if !is_success(status, headers) {
            self.failures.fetch_add(1, Relaxed);
        }
    }

    /// An opaque TCP connection opened; [`EdgeStats::tcp_closed`] when it ends.
    pub fn tcp_opened(&self) {
        self.tcp_opened.fetch_add(1, Relaxed);
        self.tcp_open.fetch_add(1, Relaxed);
    }

    /// An opaque TCP connection ended, having moved these bytes each way.
    pub fn tcp_closed(&self, sent: u64, received: u64) {
        self.tcp_open.fetch_sub(1, Relaxed);
        self.bytes_sent.fetch_add(sent, Relaxed);
        self.bytes_received.fetch_add(received, Relaxed);
    }

    /// The counts since the last collection; `None` when there is nothing to report.
    fn take(&self) -> Option<EdgeCounts> {
        let latency: Vec<(u8, u64)> = (0..LATENCY_BUCKETS)
            .filter_map(|i| Some((i as u8, self.latency[i].swap(0, Relaxed))).filter(|(_, n)| *n > 0))
            .collect();
        let requests = latency.iter().map(|(_, n)| n).sum();
        // A request counted between the two swaps may leave its failure in this report and its
        // bucket for the next: one report one success short, the next one over; none lost.
        let failures = self.failures.swap(0, Relaxed);
        let counts = EdgeCounts {
            requests,
            successes: requests.saturating_sub(failures),
            latency,
            tcp_opened: self.tcp_opened.swap(0, Relaxed),
            tcp_open: self.tcp_open.load(Relaxed),
            bytes_sent: self.bytes_sent.swap(0, Relaxed),
            bytes_received: self.bytes_received.swap(0, Relaxed),
        };
        (counts != EdgeCounts::default()).then_some(counts)
    }
}

/// Non-5xx, and for gRPC a `grpc-status` of 0 when the response headers carry one (a
/// trailers-only answer); a status only in the trailers is not seen here.
pub fn is_success(status: u16, headers: Option<&HeaderMap>) -> bool {
    status < 500 && headers.and_then(|h| h.get("grpc-status")).is_none_or(|v| v.as_bytes() == b"0")
}

/// Where an edge goes: the destination service (`name.namespace`) and the identity its
/// endpoint proves (none: plaintext).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EdgeKey {
    service: String,
    identity: Option<String>,
}

/// Every outbound edge's handle, by destination.
#[derive(Default)]
pub struct Edges {
    /// Locked only when a snapshot is built and when the reporter collects, never per request.
    by_key: Mutex<HashMap<EdgeKey, Arc<EdgeStats>>>,
}

impl Edges {
    /// The handle of calls to `service` (`name.namespace`), to an endpoint proving `identity`.
    pub fn outbound(&self, service: &str, identity: Option<String>) -> Arc<EdgeStats> {
        let key = EdgeKey { service: service.to_owned(), identity };
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key.entry(key).or_default().clone()
    }

    /// What every edge counted since the last collection, busiest first and at most
    /// [`MAX_EDGES_PER_REPORT`], and how many edges were left out.
    pub fn collect(&self) -> (Vec<EdgeReport>, u64) {
        let mut edges = Vec::new();
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key.retain(|key, stats| {
            let Some(counts) = stats.take() else {
                // Nothing counted and no snapshot holds it: the destination is gone.
                return Arc::strong_count(stats) > 1;
            };
            let (name, namespace) = key.service.split_once('.').unwrap_or((&key.service, DEFAULT_NAMESPACE));
            edges.push(EdgeReport {
                direction: EdgeDirection::Outbound,
                peer: EdgePeer {
                    service: name.to_owned(),
                    namespace: namespace.to_owned(),
                    identity: key.identity.clone(),
                },
                route: None,
                secured: key.identity.is_some(),
                counts,
            });
            true
        });
        drop(by_key);
        edges.sort_by_key(|e| std::cmp::Reverse(e.counts.requests));
        let dropped = edges.len().saturating_sub(MAX_EDGES_PER_REPORT) as u64;
        edges.truncate(MAX_EDGES_PER_REPORT);
        (edges, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_takes_what_was_counted_once() {
        let edges = Edges::default();
        let users = edges.outbound("users.shop", None);
        for i in 0..10u64 {
            users.record(if i == 0 { 500 } else { 200 }, None, Duration::from_millis(i));
        }
        let (report, dropped) = edges.collect();
        assert_eq!(dropped, 0);
        let edge = &report[0];
        assert_eq!((edge.peer.service.as_str(), edge.peer.namespace.as_str()), ("users", "shop"));
        assert_eq!((edge.counts.requests, edge.counts.successes, edge.secured), (10, 9, false));
        assert_eq!(edge.counts.latency.iter().map(|(_, n)| n).sum::<u64>(), 10);
        assert_eq!(edge.counts.latency[0], (0, 2), "0 ms and 1 ms");
        assert!(edges.collect().0.is_empty(), "nothing new");
    }

    #[test]
    fn grpc_errors_in_headers_are_failures() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "14".parse().unwrap());
        assert!(!is_success(200, Some(&headers)));
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(is_success(200, Some(&headers)));
        assert!(!is_success(503, None));
    }

    #[test]
    fn an_open_connection_is_reported_until_it_closes_and_a_dropped_edge_is_forgotten() {
        let edges = Edges::default();
        let db = edges.outbound("db.default", Some("spiffe://td/ns/default/sa/db".into()));
        db.tcp_opened();
        let (report, _) = edges.collect();
        assert_eq!((report[0].counts.tcp_opened, report[0].counts.tcp_open, report[0].secured), (1, 1, true));
        assert_eq!(edges.collect().0[0].counts.tcp_open, 1, "still open");
        db.tcp_closed(10, 20);
        drop(db);
        let (report, _) = edges.collect();
        assert_eq!((report[0].counts.bytes_sent, report[0].counts.bytes_received), (10, 20));
        assert!(edges.collect().0.is_empty());
        assert!(edges.by_key.lock().unwrap().is_empty(), "forgotten");
    }

    #[test]
    fn a_report_is_bounded() {
        let edges = Edges::default();
        let handles: Vec<_> =
            (0..MAX_EDGES_PER_REPORT + 3).map(|i| edges.outbound(&format!("s{i}.default"), None)).collect();
        for h in &handles {
            h.record(200, None, Duration::ZERO);
        }
        let (report, dropped) = edges.collect();
        assert_eq!((report.len(), dropped), (MAX_EDGES_PER_REPORT, 3));
    }
}
