//! Tap on the wire: what an operator asks for (`GET /v1/tap`'s query, [`TapQuery`]), what the
//! control plane tells a tapped service's sidecars on their push stream ([`TapLine`]: the
//! filters of every tap open on the service), what the sidecars send back ([`TapReport`], a
//! batch of [`TapEvent`]s), and each line of the stream the operator reads ([`TapMessage`]).
//!
//! Everything is bounded: at most [`MAX_TAPS`] taps at once (so a tap line carries at most
//! that many filters), at most [`MAX_TAP_EVENTS_PER_REPORT`] events per report, and an event's
//! strings are cut at [`MAX_TAP_TEXT`] bytes by the sidecar that records it.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::protocol::{unversioned, Versioned, PROTOCOL_VERSION};
use super::stats::EdgeDirection;

/// Taps open at once on one control plane; also the most filters one tap line carries.
pub const MAX_TAPS: usize = 64;
/// Events one report carries at most (the sidecar's queue holds no more).
pub const MAX_TAP_EVENTS_PER_REPORT: usize = 200;
/// The longest path prefix a filter may have, and the most bytes of a path, authority or
/// request id an event keeps.
pub const MAX_TAP_TEXT: usize = 1024;
/// The longest method a filter may name.
pub const MAX_TAP_METHOD: usize = 32;

/// `GET /v1/tap` query: whose requests, and which of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TapQuery {
    /// The service whose sidecars record requests (to and from it).
    pub service: String,
    /// Its namespace (default: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only requests whose path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^/", max_length = 1024)]
    pub path: Option<String>,
    /// Only requests of this method (exactly: `GET`, not `get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")]
    pub method: Option<String>,
    /// End the stream after this many events (default: at the time limit, one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1)]
    pub max: Option<u64>,
}

impl TapQuery {
    /// The filter this query asks for, or what is wrong with it (naming the field).
    pub fn filter(&self) -> Result<TapFilter, String> {
        if let Some(path) = &self.path {
            if !path.starts_with('/') || path.len() > MAX_TAP_TEXT {
                return Err(format!("path: a prefix starting with `/`, at most {MAX_TAP_TEXT} bytes"));
            }
        }
        if let Some(method) = &self.method {
            if !is_method(method) {
                return Err(format!(
                    "method: an HTTP method such as GET, at most {MAX_TAP_METHOD} token characters, not {method:?}"
                ));
            }
        }
        if self.max == Some(0) {
            return Err("max: at least 1 (leave it out for no limit)".into());
        }
        Ok(TapFilter { path: self.path.clone(), method: self.method.clone() })
    }
}

/// An HTTP method as RFC 9110 spells one (a token), within the bound.
fn is_method(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= MAX_TAP_METHOD
        && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Which requests a tap wants: all of them, or those with a path prefix and/or a method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct TapFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl TapFilter {
    /// Whether a request of `method` to `path` (without its query) is one this filter wants.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path.as_deref().is_none_or(|p| path.starts_with(p))
    }
}

/// The `tap` member of a tap line: the filters of every tap open on the sidecar's service. A
/// request any of them matches is recorded; none stops recording.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TapControl {
    #[schema(max_items = 64)]
    pub filters: Vec<TapFilter>,
}

/// A push-stream line that starts, changes or stops tapping (protocol 2; sent only to sidecars
/// that announced protocol 2 or later, since older ones would take it for a malformed snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TapLine {
    /// The sender's protocol version.
    #[serde(default = "unversioned")]
    pub protocol: u32,
    pub tap: TapControl,
}

impl TapLine {
    pub fn new(filters: Vec<TapFilter>) -> Self {
        Self { protocol: PROTOCOL_VERSION, tap: TapControl { filters } }
    }
}

impl Versioned for TapLine {
    fn protocol(&self) -> u32 {
        self.protocol
    }
}

/// One request a sidecar recorded, when its response ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TapEvent {
    /// When the response ended (RFC 3339, milliseconds).
    pub at: String,
    /// The sidecar that recorded it (set by the control plane from the reporter's credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Inbound: a request to the service; outbound: one the service made.
    pub direction: EdgeDirection,
    pub method: String,
    pub authority: String,
    /// The path and query.
    pub path: String,
    /// The status sent downstream (a gRPC error still answers 200).
    pub status: u16,
    /// From the request's arrival to the end of its response.
    pub latency_ms: f64,
    /// `x-request-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The other side's verified mesh identity: the caller (inbound) or the endpoint
    /// (outbound), when the hop was mesh mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Whether the hop to or from the other sidecar was mesh mTLS.
    pub secured: bool,
    /// Why the sidecar answered itself (`pilotfish-error`), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/proxies/{id}/tap` body: events a sidecar recorded since its previous report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TapReport {
    /// The sender's protocol version.
    #[serde(default = "unversioned")]
    pub protocol: u32,
    #[schema(max_items = 200)]
    pub events: Vec<TapEvent>,
}

impl TapReport {
    pub fn new(events: Vec<TapEvent>) -> Self {
        Self { protocol: PROTOCOL_VERSION, events }
    }

    /// Whether the report is within its bounds: at most [`MAX_TAP_EVENTS_PER_REPORT`] events,
    /// each string at most [`MAX_TAP_TEXT`] bytes (a method [`MAX_TAP_METHOD`]) and free of
    /// control characters — a sidecar cuts what it records to these, and the control plane
    /// copies each event into every matching tap's queue and onto operators' terminals, so it
    /// takes nothing longer. The error names the event and its field.
    pub fn check(&self) -> Result<(), String> {
        if self.events.len() > MAX_TAP_EVENTS_PER_REPORT {
            return Err(format!(
                "events: a report carries at most {MAX_TAP_EVENTS_PER_REPORT}, this one {}",
                self.events.len()
            ));
        }
        for (i, e) in self.events.iter().enumerate() {
            let texts = [
                ("at", Some(&e.at), MAX_TAP_METHOD),
                ("method", Some(&e.method), MAX_TAP_METHOD),
                ("authority", Some(&e.authority), MAX_TAP_TEXT),
                ("path", Some(&e.path), MAX_TAP_TEXT),
                ("requestId", e.request_id.as_ref(), MAX_TAP_TEXT),
                ("peer", e.peer.as_ref(), MAX_TAP_TEXT),
                ("error", e.error.as_ref(), MAX_TAP_METHOD),
            ];
            for (field, text, max) in texts {
                let Some(text) = text else { continue };
                if text.len() > max || text.chars().any(char::is_control) {
                    return Err(format!(
                        "events[{i}].{field}: at most {max} bytes without control characters"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Versioned for TapReport {
    fn protocol(&self) -> u32 {
        self.protocol
    }
}

/// Why a tap stream ended (its last line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TapEnd {
    /// `max` events were sent.
    Max,
    /// A tap lasts an hour at most; open a new one to go on.
    TimeLimit,
    /// The control plane is stopping.
    Stopping,
}

/// One line of `GET /v1/tap`'s stream (newline-delimited JSON; an empty line is a keepalive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TapMessage {
    /// A request.
    Event(TapEvent),
    /// Events left out since the previous line because this client read too slowly.
    Dropped(u64),
    /// The stream ends, and why.
    End(TapEnd),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn query(path: Option<&str>, method: Option<&str>, max: Option<u64>) -> TapQuery {
        TapQuery {
            service: "web".into(),
            namespace: None,
            path: path.map(Into::into),
            method: method.map(Into::into),
            max,
        }
    }

    #[test]
    fn a_filter_matches_by_path_prefix_and_exact_method() {
        let all = TapFilter::default();
        assert!(all.matches("POST", "/anything"));
        let f = query(Some("/api"), Some("GET"), None).filter().unwrap();
        assert!(f.matches("GET", "/api/users"));
        assert!(f.matches("GET", "/api"));
        assert!(!f.matches("POST", "/api/users"), "another method");
        assert!(!f.matches("get", "/api/users"), "methods are case-sensitive");
        assert!(!f.matches("GET", "/other"), "another path");
    }

    #[test]
    fn a_bad_query_names_its_field() {
        for (q, field) in [
            (query(Some("api"), None, None), "path:"),
            (query(Some(&format!("/{}", "a".repeat(MAX_TAP_TEXT))), None, None), "path:"),
            (query(None, Some("GE T"), None), "method:"),
            (query(None, Some(""), None), "method:"),
            (query(None, Some(&"A".repeat(33)), None), "method:"),
            (query(None, None, Some(0)), "max:"),
        ] {
            let err = q.filter().unwrap_err();
            assert!(err.starts_with(field), "{q:?}: {err}");
        }
        assert!(query(Some("/"), Some("PURGE"), Some(1)).filter().is_ok());
    }

    #[test]
    fn a_report_past_its_bounds_names_the_event_and_field() {
        let event: TapEvent = serde_json::from_value(json!({
            "at": "2026-12-03T08:00:00.123Z", "direction": "inbound", "method": "GET",
            "authority": "web", "path": "/", "status": 200, "latencyMs": 1.0, "secured": false,
        }))
        .unwrap();
        assert_eq!(TapReport::new(vec![event.clone(); MAX_TAP_EVENTS_PER_REPORT]).check(), Ok(()));
        let too_many = TapReport::new(vec![event.clone(); MAX_TAP_EVENTS_PER_REPORT + 1]);
        assert!(too_many.check().unwrap_err().starts_with("events:"));
        let long = TapEvent { path: format!("/{}", "a".repeat(MAX_TAP_TEXT)), ..event.clone() };
        let err = TapReport::new(vec![event.clone(), long]).check().unwrap_err();
        assert!(err.starts_with("events[1].path:"), "{err}");
        let escape = TapEvent { peer: Some("spiffe://x\u{1b}[2J".into()), ..event.clone() };
        let err = TapReport::new(vec![escape]).check().unwrap_err();
        assert!(err.starts_with("events[0].peer:"), "{err}");
        let method = TapEvent { method: "G".repeat(MAX_TAP_METHOD + 1), ..event };
        assert!(TapReport::new(vec![method]).check().unwrap_err().starts_with("events[0].method:"));
    }

    #[test]
    fn a_tap_line_is_the_protocol_and_the_filters() {
        let line = TapLine::new(vec![TapFilter { path: Some("/api".into()), method: None }]);
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json, json!({ "protocol": PROTOCOL_VERSION, "tap": { "filters": [{ "path": "/api" }] } }));
        assert_eq!(crate::wire::round_trip::<TapLine>(json), line);
    }

    #[test]
    fn events_are_camel_case_and_tolerate_newer_fields_and_stream_lines_name_their_kind() {
        let event = json!({
            "at": "2026-12-03T08:00:00.123Z", "proxy": "web-1", "direction": "inbound", "method": "GET",
            "authority": "web", "path": "/api?x=1", "status": 200, "latencyMs": 1.5,
            "requestId": "r-1", "peer": "spiffe://pilotfish.local/ns/default/sa/client", "secured": true,
        });
        let parsed: TapEvent = crate::wire::round_trip(event.clone());
        assert_eq!((parsed.status, parsed.direction), (200, EdgeDirection::Inbound));
        let report: TapReport = crate::wire::round_trip(json!({ "protocol": 2, "events": [event.clone()] }));
        assert_eq!(report.events.len(), 1);
        // A stream line is one member naming what it is (a client skips a line it does not know).
        let line: TapMessage = serde_json::from_value(json!({ "event": event })).unwrap();
        assert_eq!(line, TapMessage::Event(parsed));
        assert_eq!(serde_json::to_value(TapMessage::Dropped(3)).unwrap(), json!({ "dropped": 3 }));
        assert_eq!(
            serde_json::to_value(TapMessage::End(TapEnd::TimeLimit)).unwrap(),
            json!({ "end": "timeLimit" })
        );
    }
}
