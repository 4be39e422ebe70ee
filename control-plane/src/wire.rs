//! The bodies of the control plane's API, as typed structs: what each operation takes and
//! answers, the push stream's lines, the ACK a sidecar sends and the error body. Their schemas
//! (`utoipa::ToSchema`) are the OpenAPI document's, so the document cannot drift from them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{Change, EndpointRecord};
use crate::push::ProxyStatus;

/// Every error: what went wrong and what to do about it; an invalid document also names the
/// document (1-based position in the stream), the field path and the reason.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What an apply did: one entry per document, and the fields accepted with a caveat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyResult {
    pub applied: Vec<AppliedItem>,
    pub warnings: Vec<ApplyWarning>,
}

/// One document of an apply: the event that wrote it, or `unchanged` when it was already so.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppliedItem {
    /// `Kind/namespace/name`.
    pub aggregate: String,
    /// The resource's version after the apply.
    pub version: u64,
    /// The event's position in the log (absent when unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// A field accepted with a caveat: kept without effect, or dropped.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyWarning {
    /// 1-based position of the document in the stream.
    pub document: usize,
    /// `Kind namespace/name`.
    pub object: String,
    pub field: String,
    pub message: String,
}

/// A resource in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourceView {
    pub version: u64,
    /// The event that wrote this version.
    pub seq: u64,
    /// The document as applied (`apiVersion`, `kind`, `metadata`, `spec`).
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourceList {
    /// The log's position the list was read at.
    pub seq: u64,
    pub items: Vec<ResourceView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// `Kind/namespace/name`.
    pub deleted: String,
    pub seq: u64,
}

/// A committed change in the log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub seq: u64,
    pub id: String,
    /// Commit time, RFC 3339 UTC.
    pub at: String,
    pub kind: String,
    pub aggregate: String,
    pub version: u64,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub actor: String,
}

impl From<crate::store::Event> for EventView {
    fn from(e: crate::store::Event) -> Self {
        let crate::store::Event { seq, id, at, kind, aggregate, version, data, actor } = e;
        Self { seq, id, at, kind, aggregate, version, data, actor }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// The log's last seq: page on with `since` = the last event's seq until it is reached.
    pub head: u64,
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiffResult {
    pub from: u64,
    pub to: u64,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// Restore the resources as they were after this event.
    pub to_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackResult {
    pub rolled_back_to: u64,
    /// The events that restored it (none when nothing differed).
    pub events: Vec<EventView>,
}

/// A service instance to register under a lease.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    #[schema(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub service: String,
    /// Default: `default`.
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub namespace: Option<String>,
    /// `IP:PORT` of the instance (its sidecar's inbound listener).
    #[schema(value_type = String, example = "127.0.0.1:9001")]
    pub address: std::net::SocketAddr,
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Lease length, 1-3600 (default 30); heartbeats renew it.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    /// The instance's id: heartbeat and deregister name it.
    pub id: String,
    pub ttl_seconds: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Renewed {
    pub id: String,
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deregistered {
    pub deregistered: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredEndpoint {
    pub endpoint: EndpointRecord,
    /// Seconds until the lease lapses without a heartbeat (unknown to a replica that holds no
    /// lease for it).
    pub lease_remaining_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointList {
    pub items: Vec<RegisteredEndpoint>,
}

/// One line of the push stream: the whole configuration a sidecar needs at `version`. Empty
/// lines between them are keepalives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotLine {
    /// The log's seq this configuration is as of: ACK it.
    pub version: u64,
    /// A YAML/JSON document stream, parsed like a static configuration file.
    pub config: String,
}

/// A sidecar's verdict on a pushed version: an ACK, or with `error` a NACK.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    pub version: u64,
    #[serde(default)]
    pub error: Option<String>,
}

/// A sidecar's sync status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProxyView {
    #[serde(flatten)]
    pub status: ProxyStatus,
    /// Whether it acknowledged the version in force.
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProxyList {
    /// The version in force.
    pub version: u64,
    pub items: Vec<ProxyView>,
}

/// A join token to create for one service's sidecars.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    #[schema(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub service: String,
    /// Default: `default`.
    #[serde(default = "default_namespace")]
    #[schema(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub namespace: String,
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// A join token; the secret is shown this once (the log keeps only its hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinToken {
    /// `ID.SECRET`: the sidecars' bearer token.
    pub token: String,
    pub service: String,
    pub namespace: String,
    pub seq: u64,
}
