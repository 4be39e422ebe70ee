//! The body of every error answer: `{"error": "..."}`, and for a configuration refused, which
//! document and field, and why.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ConfigError;

/// An error answer's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
    /// A refused configuration: the 1-based position of the document at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// A refused configuration: the field path (empty for the whole document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A refused configuration: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        Self { error: error.into(), document: None, field: None, reason: None }
    }

    /// A refused configuration, with where and why.
    pub fn invalid(error: impl Into<String>, e: &ConfigError) -> Self {
        Self {
            error: error.into(),
            document: Some(e.document),
            field: Some(e.field.clone()),
            reason: Some(e.reason.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::round_trip;

    #[test]
    fn error_bodies_round_trip_plain_and_with_the_field_at_fault() {
        round_trip::<ErrorBody>(json!({ "error": "endpoint x not found" }));
        let invalid: ErrorBody = round_trip(json!({
            "error": "invalid configuration: ...", "document": 2,
            "field": "spec.endpoints[0].address", "reason": "not an address",
        }));
        assert_eq!(invalid.document, Some(2));
    }
}
