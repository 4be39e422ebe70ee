//! Mesh telemetry on the wire: the report a sidecar sends about every two seconds
//! ([`StatsReport`], per-edge counts since its previous report), the latency buckets both ends
//! share, and `GET /v1/stats`'s query and answer.
//!
//! A report is a delta, so a lost one loses its two seconds and nothing else, and the control
//! plane only ever adds. It is bounded: at most [`MAX_EDGES_PER_REPORT`] edges (the rest are
//! counted in `droppedEdges`), each with at most [`LATENCY_BUCKETS`] histogram entries.
//! Latency is a histogram over [`LATENCY_BOUNDS_MS`], sent sparse (`[bucket, count]` pairs of
//! the buckets that counted), so a report costs a few hundred bytes per edge at most.
//!
//! The reporting side of an edge is the caller's credential, never what the report claims:
//! a report names only the other side ([`EdgePeer`]).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::protocol::{unversioned, Versioned, PROTOCOL_VERSION};

/// Upper bounds (inclusive, milliseconds) of the latency buckets; one more bucket counts
/// everything slower. Both ends use these: a change is a protocol change.
pub const LATENCY_BOUNDS_MS: [u32; 24] = [
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000,
    30000,
];

/// Buckets of a latency histogram: one per bound and one above the last.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Edges one report may carry; a sidecar with more sends the busiest and counts the rest.
pub const MAX_EDGES_PER_REPORT: usize = 256;

/// The bucket a latency of `micros` microseconds falls in.
pub fn latency_bucket(micros: u64) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|&bound| u64::from(bound) * 1000 < micros)
}

/// The latency (milliseconds) a bucket stands for: its upper bound (the last bound for the
/// open bucket above it).
pub fn bucket_upper_ms(bucket: usize) -> u32 {
    LATENCY_BOUNDS_MS[bucket.min(LATENCY_BOUNDS_MS.len() - 1)]
}

/// Which way the edge's traffic went through the reporting sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EdgeDirection {
    /// The reporter's app called `peer`: the reporter is the edge's source.
    Outbound,
    /// `peer` called the reporter's app: the reporter is the edge's destination.
    Inbound,
}

/// `POST /v1/proxies/{id}/stats` body: what one sidecar saw since its previous report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsReport {
    /// The sender's protocol version.
    #[serde(default = "unversioned")]
    pub protocol: u32,
    /// The mesh identity the sidecar holds (absent: none). Accepted only when it is the
    /// identity of the service the credential is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Edges with traffic since the previous report, at most [`MAX_EDGES_PER_REPORT`].
    #[serde(default)]
    #[schema(max_items = 256)]
    pub edges: Vec<EdgeReport>,
    /// Edges left out because the report was full.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_edges: u64,
    /// Destinations toward which some endpoint circuit breakers are open (or half-open) now,
    /// at most [`MAX_EDGES_PER_REPORT`]; a destination not listed has none open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 256)]
    pub breakers: Vec<BreakersOpen>,
}

impl StatsReport {
    pub fn new(identity: Option<String>, edges: Vec<EdgeReport>, dropped_edges: u64) -> Self {
        Self { protocol: PROTOCOL_VERSION, identity, edges, dropped_edges, breakers: Vec::new() }
    }
}

/// How many of a destination's endpoints the reporting sidecar's circuit breakers keep out now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BreakersOpen {
    pub service: String,
    #[serde(default = "super::protocol::default_namespace")]
    pub namespace: String,
    /// Endpoints whose breaker is open or half-open.
    pub open: u64,
}

impl Versioned for StatsReport {
    fn protocol(&self) -> u32 {
        self.protocol
    }
}

/// The other side of an edge, as the reporter knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct EdgePeer {
    /// Its service (empty: not a service of the mesh, e.g. passthrough).
    pub service: String,
    #[serde(default = "super::protocol::default_namespace")]
    pub namespace: String,
    /// Its mesh identity, when the edge was mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// One edge's counts since the previous report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeCounts {
    /// HTTP requests answered (by the upstream or by the sidecar itself).
    #[serde(default)]
    pub requests: u64,
    /// Of those, not 5xx (and for gRPC, `grpc-status` 0 when the response headers carry one).
    #[serde(default)]
    pub successes: u64,
    /// Latency histogram, sparse: `[bucket, count]` pairs over [`LATENCY_BOUNDS_MS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Vec<u64>>, max_items = 25)]
    pub latency: Vec<(u8, u64)>,
    /// Opaque TCP connections opened.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tcp_opened: u64,
    /// Opaque TCP connections open at the time of the report.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tcp_open: u64,
    /// Bytes from the edge's source to its destination (opaque TCP and upgraded connections).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_sent: u64,
    /// Bytes from the destination back to the source.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_received: u64,
}

/// One edge of a [`StatsReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeReport {
    pub direction: EdgeDirection,
    pub peer: EdgePeer,
    /// The HTTPRoute (`namespace/name`) the requests matched, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Whether the edge was mesh mTLS.
    #[serde(default)]
    pub secured: bool,
    #[serde(flatten)]
    pub counts: EdgeCounts,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How `GET /v1/stats` groups its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatsBy {
    /// One row per destination service.
    #[default]
    Service,
    /// One row per (source, destination, identities, mTLS).
    Edge,
    /// One row per (destination service, route).
    Route,
}

/// Whose view `GET /v1/stats` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatsSide {
    /// What the callers' sidecars saw (outbound): every call once, as the caller got it,
    /// destinations without a sidecar included.
    #[default]
    Client,
    /// What the destinations' sidecars saw on their inbound listener: every attempt that
    /// reached them (retries included), only destinations with a sidecar.
    Server,
}

/// The longest window: as far back as the control plane keeps.
pub const MAX_WINDOW_SECONDS: u64 = 3600;
/// The shortest window (two report periods and a half).
pub const MIN_WINDOW_SECONDS: u64 = 5;
/// The window of a read that names none.
pub const DEFAULT_WINDOW_SECONDS: u64 = 60;

/// What a window may be: a whole number (no leading zero) of seconds, minutes or an hour, from
/// [`MIN_WINDOW_SECONDS`] to [`MAX_WINDOW_SECONDS`] — exactly what [`window_seconds`] takes.
pub const WINDOW_PATTERN: &str =
    "^(([5-9]|[1-9][0-9]|[1-9][0-9]{2}|[12][0-9]{3}|3[0-5][0-9]{2}|3600)s|([1-9]|[1-5][0-9]|60)m|1h)$";

/// A window that is not one of [`WINDOW_PATTERN`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("window {0:?} is not a window: give whole seconds, minutes or an hour from 5s to 1h, e.g. window=30s, 1m or 1h")]
pub struct BadWindow(pub String);

/// A window's length in seconds (`30s`, `5m`, `1h`).
pub fn window_seconds(text: &str) -> Result<u64, BadWindow> {
    let bad = || BadWindow(text.to_owned());
    let unit = text.chars().last().ok_or_else(bad)?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        _ => return Err(bad()),
    };
    let digits = &text[..text.len() - 1];
    let n: u64 =
        digits.parse().ok().filter(|_| digits.bytes().all(|b| b.is_ascii_digit())).ok_or_else(bad)?;
    // No leading zeros, as the pattern has none.
    if format!("{n}{unit}") != text {
        return Err(bad());
    }
    Some(n * scale).filter(|s| (MIN_WINDOW_SECONDS..=MAX_WINDOW_SECONDS).contains(s)).ok_or_else(bad)
}

/// `GET /v1/stats` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// How far back to look: whole seconds, minutes or an hour from `5s` to `1h` (default
    /// `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(
        pattern = r"^(([5-9]|[1-9][0-9]|[1-9][0-9]{2}|[12][0-9]{3}|3[0-5][0-9]{2}|3600)s|([1-9]|[1-5][0-9]|60)m|1h)$"
    )]
    pub window: Option<String>,
    /// Rows per service (default), edge or route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<StatsBy>,
    /// Only rows whose source or destination is this service (`name` or `name.namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The callers' view (`client`, default) or the destinations' (`server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<StatsSide>,
}

/// Golden metrics of one row of `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Golden {
    pub requests: u64,
    pub successes: u64,
    /// `successes / requests` (absent: no requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Requests per second over the window.
    pub rps: f64,
    /// Latency quantiles (milliseconds, the upper bound of the bucket they fall in; absent: no
    /// requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<u32>,
    /// Opaque TCP connections opened over the window, and open now.
    pub tcp_opened: u64,
    pub tcp_open: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Sidecars of a service: reporting now, and reported within the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Meshed {
    pub current: u64,
    pub total: u64,
}

/// One row of `GET /v1/stats`; which fields are present depends on `by`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsRow {
    /// by=service and by=route: the service (`name.namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// by=route: the route (`namespace/name`; empty: requests no route matched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// by=edge: the source and destination services and their identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_identity: Option<String>,
    /// by=edge: whether the edge was mesh mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secured: Option<bool>,
    /// by=service: the service's sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meshed: Option<Meshed>,
    /// Endpoint circuit breakers open (or half-open) toward the destination: the most any
    /// one calling sidecar (by=edge: of the source service) keeps open, as of its latest
    /// report within the window; 0 when none.
    #[serde(default)]
    pub breakers_open: u64,
    #[serde(flatten)]
    pub golden: Golden,
}

/// `GET /v1/stats` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsList {
    /// The window in seconds.
    pub window_seconds: u64,
    pub by: StatsBy,
    #[serde(default)]
    pub side: StatsSide,
    pub items: Vec<StatsRow>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::round_trip;

    #[test]
    fn latencies_fall_in_the_bucket_of_their_upper_bound() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1000), 0);
        assert_eq!(latency_bucket(1001), 1);
        assert_eq!(latency_bucket(30_000_000), LATENCY_BOUNDS_MS.len() - 1);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_upper_ms(LATENCY_BUCKETS - 1), 30000);
    }

    #[test]
    fn windows_are_whole_units_from_5s_to_an_hour_as_the_pattern_says() {
        let pattern = regex::Regex::new(WINDOW_PATTERN).unwrap();
        for (text, secs) in [("5s", 5), ("59s", 59), ("3600s", 3600), ("1m", 60), ("60m", 3600), ("1h", 3600)]
        {
            assert_eq!(window_seconds(text), Ok(secs), "{text}");
            assert!(pattern.is_match(text), "{text}");
        }
        for bad in ["4s", "3601s", "61m", "2h", "0m", "05s", "1500ms", "1m30s", "+5s", "soon", "", "s"] {
            let e = window_seconds(bad).unwrap_err();
            assert!(e.to_string().contains("from 5s to 1h"), "{bad}: {e}");
            assert!(!pattern.is_match(bad), "{bad}");
        }
        // The query's documented pattern is this one.
        use utoipa::IntoParams;
        let params = serde_json::to_value(StatsQuery::into_params(|| None)).unwrap();
        let window = params.as_array().unwrap().iter().find(|p| p["name"] == "window").unwrap();
        assert_eq!(window["schema"]["pattern"], WINDOW_PATTERN, "{window}");
    }

    #[test]
    fn a_report_is_sparse_and_tolerates_newer_fields() {
        let report: StatsReport = round_trip(json!({
            "protocol": PROTOCOL_VERSION,
            "edges": [{
                "direction": "outbound",
                "peer": { "service": "users", "namespace": "default" },
                "secured": false,
                "requests": 10, "successes": 9, "latency": [[0, 7], [5, 3]],
                "bytesSent": 12
            }]
        }));
        assert_eq!(report.edges[0].counts.latency, vec![(0, 7), (5, 3)]);
        assert_eq!(report.check_protocol(), Ok(()));
        let oldest: StatsReport = serde_json::from_value(json!({ "edges": [] })).unwrap();
        assert_eq!(oldest.protocol, crate::wire::UNVERSIONED_PROTOCOL);
    }
}
