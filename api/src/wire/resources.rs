//! The resources API's messages: what an apply did (and warned about), resources as listed or
//! fetched, and what a delete did. Documents themselves travel as JSON values: their types and
//! validation are the configuration model's (`crate::document`), not the wire's.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::Warning;

/// `POST /v1/resources` answer: one entry per document, and the warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApplyResult {
    pub applied: Vec<AppliedItem>,
    pub warnings: Vec<ApplyWarning>,
}

/// What an apply did to one document's resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppliedItem {
    /// `Kind/namespace/name`.
    pub aggregate: String,
    /// The resource's version after the apply.
    pub version: u64,
    /// The event written; absent when the document was already stored as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The document was already stored as it is: nothing was written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// A field accepted with a caveat: kept without effect, or dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApplyWarning {
    /// 1-based position of the document in the request.
    pub document: usize,
    /// `Kind namespace/name`.
    pub object: String,
    pub field: String,
    pub message: String,
}

impl From<&Warning> for ApplyWarning {
    fn from(w: &Warning) -> Self {
        Self {
            document: w.document,
            object: w.object.clone(),
            field: w.field.clone(),
            message: w.message.clone(),
        }
    }
}

/// A stored resource: `GET /v1/resources/{kind}/{namespace}/{name}`, and each list item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceItem {
    /// The resource's version (its aggregate's).
    pub version: u64,
    /// The event that wrote it.
    pub seq: u64,
    /// The document as applied (`apiVersion`, `kind`, `metadata`, `spec`).
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

/// `GET /v1/resources` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceList {
    /// The log's position the list was read at.
    pub seq: u64,
    pub items: Vec<ResourceItem>,
}

/// `GET /v1/resources` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this kind (case-insensitive, singular or plural).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `DELETE /v1/resources/{kind}/{namespace}/{name}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// `Kind/namespace/name`.
    pub deleted: String,
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::round_trip;

    #[test]
    fn an_apply_result_round_trips_written_unchanged_and_warned() {
        let result: ApplyResult = round_trip(json!({
            "applied": [
                { "aggregate": "Service/default/users", "version": 2, "seq": 3 },
                { "aggregate": "HTTPRoute/shop/users", "version": 1, "unchanged": true },
            ],
            "warnings": [{ "document": 2, "object": "HTTPRoute shop/users",
                           "field": "spec.parentRefs[0].port", "message": "not implemented" }],
        }));
        assert_eq!((result.applied[0].seq, result.applied[1].unchanged), (Some(3), true));
        let warning = Warning {
            origin: "request".into(),
            document: 2,
            object: "HTTPRoute shop/users".into(),
            field: "spec.parentRefs[0].port".into(),
            message: "not implemented".into(),
        };
        assert_eq!(
            serde_json::to_value(ApplyWarning::from(&warning)).unwrap(),
            serde_json::to_value(&warning).unwrap(),
            "the wire warning is the model's, as the control plane sends it"
        );
    }

    #[test]
    fn listed_fetched_and_deleted_resources_round_trip() {
        let doc = json!({ "apiVersion": "pilotfish.io/v1alpha1", "kind": "Service",
                          "metadata": { "name": "users", "namespace": "default" }, "spec": {} });
        round_trip::<ResourceItem>(json!({ "version": 1, "seq": 1, "document": doc }));
        round_trip::<ResourceList>(
            json!({ "seq": 9, "items": [{ "version": 1, "seq": 1, "document": doc }] }),
        );
        round_trip::<ResourceList>(json!({ "seq": 0, "items": [] }));
        round_trip::<Deleted>(json!({ "deleted": "Service/default/users", "seq": 10 }));
        round_trip::<ListQuery>(json!({ "kind": "service", "namespace": "default" }));
    }
}
