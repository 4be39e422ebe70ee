//! The wire contract between the control plane, its sidecars and its clients: every JSON
//! message of the `/v1` API and the push stream, as one type used by both ends. The server
//! serializes these, the typed client (`crate::client`, feature `client`) parses them, and the
//! OpenAPI document is generated from them (`utoipa::ToSchema`, `IntoParams` for queries).
//!
//! # Compatibility
//! During an upgrade the control plane and its sidecars run different releases, so:
//! - Every message tolerates fields it does not know (none of these types denies unknown
//!   fields): a newer peer may add fields, an older one ignores them. Only what users author —
//!   the configuration documents — is refused for unknown fields, by `crate::document`.
//! - The messages a sidecar and the control plane exchange — push lines ([`PushLine`],
//!   [`TapLine`]), ACK and NACK ([`Ack`]) and registration ([`Registration`]) — carry the sender's
//!   [`PROTOCOL_VERSION`] in `protocol`; a message without it is [`UNVERSIONED_PROTOCOL`] (from
//!   a release before the field, which it matches in every other way).
//! - Protocol `N + 1` only adds to `N`. A receiver accepts [`SUPPORTED_PROTOCOLS`], one version
//!   either side of its own, and refuses anything further with [`UnsupportedProtocol`]: the
//!   control plane answers such a request 400 with an [`ErrorBody`] that says so; a sidecar
//!   NACKs such a push line and keeps its last good configuration.
//! - A minor release raises the protocol by at most one. So the supported skew is: sidecars up
//!   to one minor release behind or ahead of their control plane (upgrade the control plane
//!   first, then the sidecars, one minor release at a time).
//!
//! # Layout
//! - [`protocol`]: the protocol version, the accepted range, [`UnsupportedProtocol`].
//! - [`push`]: the push stream's query and lines, ACK/NACK.
//! - [`registry`]: registration, heartbeat, deregistration, endpoint records.
//! - [`resources`]: apply results and warnings, resources listed or fetched, delete results.
//! - [`history`]: events and pages of them, diff, rollback.
//! - [`proxies`]: each sidecar's sync status.
//! - [`tokens`]: join and read-only tokens, and how a token's text splits.
//! - [`rollouts`]: each rollout's status, as the saga's events leave it, and its actions.
//! - [`stats`]: the sidecars' telemetry reports and `/v1/stats`.
//! - [`tap`]: `/v1/tap`'s query and stream, the push stream's tap line, the sidecars' tap
//!   reports.
//! - [`identity`]: the mesh CA's certify request and answer, and its status.
//! - [`error`]: the error body.
//!
//! A new API call adds its request and answer types to the file of its resource group (a new
//! group: a new file here), derives the same traits, and gets a round-trip test against the
//! exact JSON the server sends.

pub mod error;
pub mod history;
pub mod identity;
pub mod protocol;
pub mod proxies;
pub mod push;
pub mod registry;
pub mod resources;
pub mod rollouts;
pub mod stats;
pub mod tap;
pub mod tokens;

pub use error::ErrorBody;
pub use history::{Change, Diff, DiffQuery, Event, EventPage, EventsQuery, RollbackRequest, RollbackResult};
pub use identity::{
    check_trusted_roots, CaRoot, CaRotation, CaStatus, CertificateReport, CertifyRequest, CertifyResponse,
    RotateRequest, RotationPhase, MAX_TRUSTED_ROOTS,
};
pub use protocol::{
    UnsupportedProtocol, Versioned, DEFAULT_NAMESPACE, PROTOCOL_VERSION, SUPPORTED_PROTOCOLS,
    UNVERSIONED_PROTOCOL,
};
pub use proxies::{Nack, ProxyList, ProxyStatus};
pub use push::{Ack, AckQuery, MeshSettings, PushLine, PushQuery};
pub use registry::{
    Deregistered, EndpointList, EndpointQuery, EndpointRecord, EndpointStatus, Heartbeat, Registered,
    Registration,
};
pub use resources::{AppliedItem, ApplyResult, ApplyWarning, Deleted, ListQuery, ResourceItem, ResourceList};
pub use rollouts::{
    RolloutAction, RolloutList, RolloutPhase, RolloutStatus, Verdict, VerdictResult, MAX_VERDICTS,
};
pub use stats::{
    BreakersOpen, EdgeCounts, EdgeDirection, EdgePeer, EdgeReport, Golden, Meshed, StatsBy, StatsList,
    StatsQuery, StatsReport, StatsRow, StatsSide,
};
pub use tap::{
    TapControl, TapEnd, TapEvent, TapFilter, TapLine, TapMessage, TapQuery, TapReport, MAX_TAPS,
    MAX_TAP_EVENTS_PER_REPORT,
};
pub use tokens::{is_fingerprint, JoinToken, TokenKind, TokenParts, TokenRequest};

/// Parses `value` as `T` and asserts it serializes back to exactly `value`, and that the same
/// message with a field from a newer peer parses to the same.
#[cfg(test)]
pub(crate) fn round_trip<T>(value: serde_json::Value) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let parsed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value}"));
    assert_eq!(serde_json::to_value(&parsed).unwrap(), value);
    let mut newer = value.clone();
    newer["fieldFromTheFuture"] = serde_json::json!({ "nested": [1, 2] });
    let parsed_newer: T = serde_json::from_value(newer).unwrap_or_else(|e| panic!("{e}: {value}"));
    assert_eq!(serde_json::to_value(&parsed_newer).unwrap(), value, "a newer peer's field");
    parsed
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    #[test]
    fn schemas_say_what_the_json_is() {
        let schema = serde_json::to_value(super::Registration::schema()).unwrap();
        assert_eq!(schema["properties"]["address"]["type"], "string", "{schema}");
        assert_eq!(
            schema["properties"]["ttlSeconds"]["type"],
            serde_json::json!(["integer", "null"]),
            "{schema}"
        );
        assert!(!schema["required"].as_array().unwrap().contains(&"protocol".into()), "{schema}");
        let schema = serde_json::to_value(super::Event::schema()).unwrap();
        assert!(schema["properties"]["data"].get("type").is_none(), "any JSON, null too: {schema}");
    }
}
