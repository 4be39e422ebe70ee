//! The proxies API's messages: what the control plane knows of each sidecar's push stream —
//! connected or not, the version it was sent and acknowledged, its last NACK.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::identity::{trusted_roots_schema, CertificateReport};

/// One sidecar in `GET /v1/proxies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// The id the sidecar chose.
    pub id: String,
    /// The service its token acts for.
    pub service: String,
    pub namespace: String,
    /// Whether it holds a push stream now.
    pub connected: bool,
    /// When its last connection opened (RFC 3339).
    pub connected_at: String,
    /// When its last connection ended (it is forgotten a retention period later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<String>,
    pub sent_version: u64,
    pub acked_version: u64,
    /// Whether it acknowledged the configuration in force.
    pub current: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<Nack>,
    /// The mesh certificate it last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateReport>,
    /// Why its certificate needs attention: near expiry (not renewing), expired, or not under
    /// the root the CA issues from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_warning: Option<String>,
    /// The roots it last reported trusting in mesh handshakes (SHA-256, lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = trusted_roots_schema)]
    pub trusted_roots: Option<Vec<String>>,
}

/// A version a sidecar refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Nack {
    pub version: u64,
    pub error: String,
}

/// `GET /v1/proxies` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProxyList {
    /// The configuration version in force.
    pub version: u64,
    pub items: Vec<ProxyStatus>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::round_trip;

    #[test]
    fn a_proxy_list_round_trips_current_stale_and_gone() {
        let list: ProxyList = round_trip(json!({ "version": 7, "items": [
            { "id": "web.default-1", "service": "web", "namespace": "default", "connected": true,
              "connectedAt": "2026-12-02T03:00:00.000Z", "sentVersion": 7, "ackedVersion": 7,
              "current": true },
            { "id": "web.default-2", "service": "web", "namespace": "default", "connected": false,
              "connectedAt": "2026-12-02T03:00:00.000Z", "disconnectedAt": "2026-12-02T03:01:00.000Z",
              "sentVersion": 7, "ackedVersion": 5, "current": false,
              "lastNack": { "version": 7, "error": "spec.addresses: taken" } },
        ] }));
        assert_eq!(list.items[1].last_nack.as_ref().map(|n| n.version), Some(7));
    }
}
