//! The history API's messages: events of the log and a page of them, a diff between two points
//! of the log, and a rollback's request and result.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One committed change of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Position in the whole log: starts at 1, gap-free, strictly increasing.
    pub seq: u64,
    /// A UUID v4, unique across replicas.
    pub id: String,
    /// Commit time, RFC 3339 UTC with milliseconds.
    pub at: String,
    /// `ResourceApplied`, `ResourceDeleted`, `EndpointRegistered`, ...
    pub kind: String,
    /// What the event is about: `Kind/namespace/name`, `Endpoint/<id>`, `Token/<id>`.
    pub aggregate: String,
    /// Position within `aggregate`: starts at 1.
    pub version: u64,
    /// What changed: a document, a record, or `null` (a deletion).
    pub data: serde_json::Value,
    /// Who wrote it.
    pub actor: String,
}

/// `GET /v1/events` answer: one page; page on with `since` = the last event's seq.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// The log's last seq when the page was read.
    pub head: u64,
    pub events: Vec<Event>,
}

/// `GET /v1/events` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events after this seq (default 0).
    #[serde(default)]
    pub since: u64,
    /// At most this many (default and most: 1000; a page also stops at about 4 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// `GET /v1/diff` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// One point of the log (a seq).
    pub from: u64,
    /// The other (default: the head); before `from`, the changes come out reversed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// `GET /v1/diff` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Diff {
    pub from: u64,
    pub to: u64,
    /// By aggregate.
    pub changes: Vec<Change>,
}

/// One resource's change between two points of the log: added (no `before`), deleted (no
/// `after`) or changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    pub aggregate: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

/// `POST /v1/rollback` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// Restore the configuration as it was after this seq.
    pub to_seq: u64,
}

/// `POST /v1/rollback` answer: the events that restored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackResult {
    pub rolled_back_to: u64,
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::round_trip;

    fn event() -> serde_json::Value {
        json!({ "seq": 3, "id": "6f1c", "at": "2026-12-02T03:00:00.000Z", "kind": "ResourceApplied",
                "aggregate": "Service/default/users", "version": 2, "data": { "kind": "Service" },
                "actor": "admin" })
    }

    #[test]
    fn events_pages_and_queries_round_trip() {
        let page: EventPage = round_trip(json!({ "head": 3, "events": [event()] }));
        assert_eq!(page.events[0].aggregate, "Service/default/users");
        round_trip::<EventsQuery>(json!({ "since": 2, "limit": 1000 }));
        assert_eq!(serde_json::from_value::<EventsQuery>(json!({})).unwrap(), EventsQuery::default());
    }

    #[test]
    fn diffs_and_rollbacks_round_trip() {
        let diff: Diff = round_trip(json!({ "from": 1, "to": 3, "changes": [
            { "aggregate": "HTTPRoute/default/users", "before": null, "after": { "spec": {} } },
            { "aggregate": "Service/default/billing", "before": { "spec": {} }, "after": null },
        ] }));
        assert!(diff.changes[0].before.is_none() && diff.changes[1].after.is_none());
        round_trip::<DiffQuery>(json!({ "from": 1, "to": 3 }));
        round_trip::<RollbackRequest>(json!({ "toSeq": 1 }));
        round_trip::<RollbackResult>(json!({ "rolledBackTo": 1, "events": [event()] }));
    }
}
