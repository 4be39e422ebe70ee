//! The registry's messages: a sidecar registering its app under a lease, the answers to
//! registration, heartbeat and deregistration, and the registered endpoints as listed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::protocol::{default_namespace, unversioned, Versioned, PROTOCOL_VERSION};

/// `POST /v1/endpoints` body: an instance of a service, registered under a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The sender's protocol version.
    #[serde(default = "unversioned")]
    pub protocol: u32,
    pub service: String,
    /// Left out: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[schema(value_type = String, example = "127.0.0.1:8080")]
    pub address: SocketAddr,
    /// The instance's mesh identity (a SPIFFE URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The lease, 1-3600 s (left out: 30 s); renewed by heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

impl Registration {
    /// An instance of `service.namespace` at `address`, without identity or labels.
    pub fn new(service: &str, namespace: &str, address: SocketAddr, ttl_seconds: u64) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            service: service.to_owned(),
            namespace: Some(namespace.to_owned()),
            address,
            identity: None,
            labels: BTreeMap::new(),
            ttl_seconds: Some(ttl_seconds),
        }
    }
}

impl Versioned for Registration {
    fn protocol(&self) -> u32 {
        self.protocol
    }
}

/// `POST /v1/endpoints` answer (201): the instance's id, its lease and the event's seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub id: String,
    pub ttl_seconds: u64,
    pub seq: u64,
}

/// `PUT /v1/endpoints/{id}/heartbeat` answer: the renewed lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub id: String,
    pub ttl_seconds: u64,
}

/// `DELETE /v1/endpoints/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deregistered {
    /// The instance's id.
    pub deregistered: String,
    pub seq: u64,
}

/// A registered service instance (client-side discovery), as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRecord {
    pub id: String,
    pub service: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[schema(value_type = String, example = "127.0.0.1:8080")]
    pub address: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Lease length; the lease is renewed by heartbeats and lapses without them.
    pub ttl_seconds: u64,
}

/// One entry of `GET /v1/endpoints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    pub endpoint: EndpointRecord,
    /// Seconds until the lease lapses; `null` when this replica holds no lease for it.
    pub lease_remaining_seconds: Option<f64>,
}

/// `GET /v1/endpoints` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointList {
    pub items: Vec<EndpointStatus>,
}

/// `GET /v1/endpoints` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointQuery {
    /// Only this service's instances (`name` or `name.namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::round_trip;
    use crate::wire::UNVERSIONED_PROTOCOL;

    #[test]
    fn a_registration_is_what_sidecars_send_plus_their_protocol() {
        let reg = Registration::new("web", "default", "127.0.0.1:8080".parse().unwrap(), 30);
        let today = json!({ "service": "web", "namespace": "default", "address": "127.0.0.1:8080", "ttlSeconds": 30 });
        let mut sent = today.clone();
        sent["protocol"] = json!(PROTOCOL_VERSION);
        assert_eq!(serde_json::to_value(&reg).unwrap(), sent);
        // From before the field: protocol 1.
        let before = serde_json::from_value::<Registration>(today).unwrap();
        assert_eq!(before, Registration { protocol: UNVERSIONED_PROTOCOL, ..reg });
        let next = PROTOCOL_VERSION + 1;
        let future = json!({ "protocol": next, "service": "web", "address": "[::1]:80", "zone": "eu-1" });
        let parsed: Registration = serde_json::from_value(future).unwrap();
        assert_eq!((parsed.protocol, parsed.namespace, parsed.ttl_seconds), (next, None, None));
    }

    #[test]
    fn registry_answers_round_trip() {
        let id = "web.default-127.0.0.1-80";
        round_trip::<Registered>(json!({ "id": id, "ttlSeconds": 30, "seq": 4 }));
        round_trip::<Heartbeat>(json!({ "id": id, "ttlSeconds": 30 }));
        round_trip::<Deregistered>(json!({ "deregistered": id, "seq": 5 }));
    }

    #[test]
    fn an_endpoint_list_round_trips_with_and_without_a_lease() {
        let list = json!({ "items": [
            { "endpoint": { "id": "a", "service": "web", "namespace": "shop", "address": "127.0.0.1:1",
                            "identity": "spiffe://pilotfish.local/ns/shop/sa/web", "labels": { "v": "2" },
                            "ttlSeconds": 30 },
              "leaseRemainingSeconds": 12.5 },
            { "endpoint": { "id": "b", "service": "web", "namespace": "default", "address": "127.0.0.1:2",
                            "ttlSeconds": 30 },
              "leaseRemainingSeconds": null },
        ] });
        let parsed: EndpointList = round_trip(list);
        assert_eq!(parsed.items[0].endpoint.labels["v"], "2");
        let q = EndpointQuery { service: Some("web.shop".into()) };
        assert_eq!(serde_json::to_value(&q).unwrap(), json!({ "service": "web.shop" }));
    }
}
