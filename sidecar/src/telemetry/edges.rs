//! Per-edge golden metrics for the control plane: what this sidecar's app sent to each
//! destination (service and the identity its endpoint proves: the client side), and what each
//! caller sent to this sidecar's app (by the identity it proved: the server side), counted on
//! the request path and collected as a delta by the reporter ([`crate::source::report`]) about
//! every two seconds.
//!
//! Like the Prometheus handles of [`super::metrics`], an edge's handle ([`EdgeStats`]) is
//! resolved when a service's runtime state is built (outbound) or when a connection is
//! accepted (inbound, once its peer is known); the request path only adds to its
//! atomics (relaxed: each counter is a sum on its own, and a report that catches a request
//! half counted gives the other half to the next report). Collecting swaps every counter to
//! zero, so counts are never lost between reports and never counted twice. Edges no snapshot
//! holds any more are forgotten once they have nothing left to report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::HeaderMap;
use pilotfish_api::wire::stats::{latency_bucket, LATENCY_BUCKETS, MAX_EDGES_PER_REPORT};
use pilotfish_api::wire::DEFAULT_NAMESPACE;
use pilotfish_api::wire::{EdgeCounts, EdgeDirection, EdgePeer, EdgeReport};
use pilotfish_api::SpiffeId;

/// An HTTPRoute of a snapshot as a number (its position in the snapshot's resources, plus one),
/// so that the request path finds a route's edge without comparing names.
pub type RouteId = u32;

/// The [`RouteId`] of requests no HTTPRoute routed (a service's default route).
pub const NO_ROUTE: RouteId = 0;

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
        self.record_outcome(is_success(status, headers), elapsed);
    }

    /// A request whose outcome was decided otherwise (a gRPC status in the trailers).
    pub fn record_outcome(&self, success: bool, elapsed: Duration) {
        let micros =
            elapsed.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(elapsed.subsec_micros()));
        self.latency[latency_bucket(micros)].fetch_add(1, Relaxed);
        if !success {
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
/// trailers-only answer); a status in the trailers is [`grpc_ok`]'s.
pub fn is_success(status: u16, headers: Option<&HeaderMap>) -> bool {
    status < 500 && headers.and_then(|h| h.get("grpc-status")).is_none_or(|v| v.as_bytes() == b"0")
}

/// Whether a gRPC call's trailers say it succeeded: a `grpc-status` of 0 (none at all is an
/// error: the call ended without a status).
pub fn grpc_ok(trailers: &HeaderMap) -> bool {
    trailers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"0")
}

/// An edge as this sidecar knows it: which way, the other side (for an outbound edge the
/// destination and the identity its endpoint proves; for an inbound one the caller, named by
/// the identity it proved, or no service when plaintext), and the route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EdgeKey {
    direction: EdgeDirection,
    peer: EdgePeer,
    route: Option<Arc<str>>,
}

/// Every edge's handle, by direction, peer and route.
#[derive(Default)]
pub struct Edges {
    /// Locked when a snapshot is built, when an mTLS inbound connection is accepted and when
    /// the reporter collects, never per request.
    by_key: Mutex<HashMap<EdgeKey, Arc<EdgeStats>>>,
    /// Plaintext callers' handle, taken once: a plaintext connection is often one request, so
    /// accepting it takes no lock (holding it keeps the edge in `by_key`, counted or not).
    plaintext: OnceLock<Arc<EdgeStats>>,
}

impl Edges {
    /// The handle of calls to `service` (`name.namespace`), to an endpoint proving `identity`,
    /// routed by `route` (`namespace/name`) when one did.
    pub fn outbound(
        &self,
        service: &str,
        identity: Option<String>,
        route: Option<Arc<str>>,
    ) -> Arc<EdgeStats> {
        let (name, namespace) = service.split_once('.').unwrap_or((service, DEFAULT_NAMESPACE));
        let peer = EdgePeer { service: name.to_owned(), namespace: namespace.to_owned(), identity };
        self.handle(EdgeKey { direction: EdgeDirection::Outbound, peer, route })
    }

    /// The handle of calls into this sidecar's app from `peer` (`None`: a plaintext caller).
    pub fn inbound(&self, peer: Option<&SpiffeId>) -> Arc<EdgeStats> {
        let Some(id) = peer else {
            return self
                .plaintext
                .get_or_init(|| {
                    let peer = EdgePeer {
                        service: String::new(),
                        namespace: DEFAULT_NAMESPACE.to_owned(),
                        identity: None,
                    };
                    self.handle(EdgeKey { direction: EdgeDirection::Inbound, peer, route: None })
                })
                .clone();
        };
        let peer = EdgePeer {
            service: id.service_account().to_owned(),
            namespace: id.namespace().to_owned(),
            identity: Some(id.to_string()),
        };
        self.handle(EdgeKey { direction: EdgeDirection::Inbound, peer, route: None })
    }

    fn handle(&self, key: EdgeKey) -> Arc<EdgeStats> {
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
            edges.push(EdgeReport {
                direction: key.direction,
                peer: key.peer.clone(),
                route: key.route.as_deref().map(str::to_owned),
                secured: key.peer.identity.is_some(),
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
        let users = edges.outbound("users.shop", None, None);
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
    fn inbound_edges_name_the_caller_by_its_identity() {
        let edges = Edges::default();
        let web: SpiffeId = "spiffe://td/ns/shop/sa/web".parse().unwrap();
        edges.inbound(Some(&web)).record(200, None, Duration::ZERO);
        edges.inbound(None).record(503, None, Duration::ZERO);
        let (mut report, _) = edges.collect();
        report.sort_by(|a, b| a.peer.cmp(&b.peer));
        let seen: Vec<_> = report
            .iter()
            .map(|e| {
                (
                    e.direction,
                    e.peer.service.as_str(),
                    e.peer.namespace.as_str(),
                    e.secured,
                    e.counts.successes,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (EdgeDirection::Inbound, "", "default", false, 0),
                (EdgeDirection::Inbound, "web", "shop", true, 1)
            ]
        );
        assert_eq!(report[1].peer.identity.as_deref(), Some("spiffe://td/ns/shop/sa/web"));
        assert!(
            Arc::ptr_eq(&edges.inbound(None), &edges.inbound(None)),
            "plaintext callers share one handle"
        );
        edges.collect();
        let (report, _) = edges.collect();
        assert!(report.is_empty(), "nothing counted, nothing reported");
        edges.inbound(None).record(200, None, Duration::ZERO);
        assert_eq!(edges.collect().0.len(), 1, "the plaintext edge outlives quiet reports");
    }

    #[test]
    fn grpc_errors_in_headers_are_failures() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "14".parse().unwrap());
        assert!(!is_success(200, Some(&headers)));
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(is_success(200, Some(&headers)));
        assert!(!is_success(503, None));
        assert!(grpc_ok(&headers));
        assert!(!grpc_ok(&HeaderMap::new()), "no status in the trailers");
    }

    #[test]
    fn an_open_connection_is_reported_until_it_closes_and_a_dropped_edge_is_forgotten() {
        let edges = Edges::default();
        let db = edges.outbound("db.default", Some("spiffe://td/ns/default/sa/db".into()), None);
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
        let handles: Vec<_> = (0..MAX_EDGES_PER_REPORT + 3)
            .map(|i| edges.outbound(&format!("s{i}.default"), None, None))
            .collect();
        for h in &handles {
            h.record(200, None, Duration::ZERO);
        }
        let (report, dropped) = edges.collect();
        assert_eq!((report.len(), dropped), (MAX_EDGES_PER_REPORT, 3));
    }
}
