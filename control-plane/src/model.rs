//! The read model (the CQRS projection): the resources and registered endpoints in force, folded
//! from the event log. It is rebuilt at start-up from the latest snapshot plus the events after
//! it, then follows the log; `history` folds it to earlier points for diff and rollback. The
//! rollouts' sagas fold into it too (`rollout::Runs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use pilotfish_api::wire::{Change, EndpointRecord, RotationPhase, TokenKind};

use crate::rollout::Runs;
use crate::store::{AppendRequest, Event, StoreError};

/// Event kinds written to the log.
pub mod kind {
    pub const RESOURCE_APPLIED: &str = "ResourceApplied";
    pub const RESOURCE_DELETED: &str = "ResourceDeleted";
    pub const ENDPOINT_REGISTERED: &str = "EndpointRegistered";
    pub const ENDPOINT_DEREGISTERED: &str = "EndpointDeregistered";
    pub const ENDPOINT_EXPIRED: &str = "EndpointExpired";
    pub const TOKEN_CREATED: &str = "TokenCreated";
    pub const CA_ROOT_ADDED: &str = "CaRootAdded";
    pub const CA_ISSUER_ACTIVATED: &str = "CaIssuerActivated";
    pub const CA_ROOT_RETIRED: &str = "CaRootRetired";
}

/// The aggregate of the mesh CA's rotation events.
pub const CA_AGGREGATE: &str = "CertificateAuthority/mesh";

/// The aggregate a resource's events belong to: `Kind/namespace/name`.
pub fn resource_aggregate(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// The aggregate of a registered instance's events: `Endpoint/<id>`.
pub fn endpoint_aggregate(id: &str) -> String {
    format!("Endpoint/{id}")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The last event folded in.
    pub seq: u64,
    /// By aggregate (`Kind/namespace/name`). Shared, so the copies of the configuration that
    /// history keeps (see `history`) cost a pointer per resource, not a document.
    pub resources: BTreeMap<String, Arc<StoredResource>>,
    /// By instance id.
    pub endpoints: BTreeMap<String, EndpointRecord>,
    /// Per-service join tokens, by token id (only a hash of each secret is kept).
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenRecord>,
    /// What root rotations did to the mesh CA.
    #[serde(default)]
    pub ca: CaLog,
    /// Every rollout's latest run of its saga, by `namespace/name`.
    #[serde(default)]
    pub rollouts: Runs,
}

/// The mesh CA as the log knows it: the roots rotations added and retired, the issuer in force
/// and the rotation under way. Only certificates and fingerprints, never a key: the keys stay
/// with the CA (its directory, or sealed in etcd). A log without rotations leaves this empty and
/// the CA opened at start trusted and issuing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaLog {
    /// The aggregate's version (rotation events expect it, so of replicas driving one rotation
    /// each phase is written once).
    pub version: u64,
    /// Roots rotations added, in order.
    pub added: Vec<AddedRoot>,
    /// Fingerprints of retired roots (the CA opened at start's too, once rotated away).
    pub retired: Vec<String>,
    /// The root whose issuer signs; none: the CA opened at start's.
    pub active: Option<String>,
    /// Sidecars whose certificate arrived before this (RFC 3339) renew it.
    pub renew_before: Option<String>,
    pub rotation: Option<Rotation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddedRoot {
    pub fingerprint: String,
    pub root_pem: String,
}

/// A rotation under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    pub new_root: String,
    pub old_roots: Vec<String>,
    pub overlap_seconds: u64,
    /// Unix seconds.
    pub started_at: u64,
    pub phase: RotationPhase,
    /// Unix seconds.
    pub phase_since: u64,
    /// The seq of the event that began the phase: sidecars that acknowledged it hold its bundle.
    pub phase_seq: u64,
}

/// `CaRootAdded`: a rotation begins; its new root joins the trust bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootAdded {
    pub fingerprint: String,
    pub root_pem: String,
    pub old_roots: Vec<String>,
    pub overlap_seconds: u64,
    pub at: u64,
}

/// `CaIssuerActivated`: the issuer under `fingerprint` signs from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuerActivated {
    pub fingerprint: String,
    /// RFC 3339.
    pub renew_before: String,
    pub at: u64,
}

/// `CaRootRetired`: these roots leave the trust bundle; the rotation is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootsRetired {
    pub fingerprints: Vec<String>,
    pub at: u64,
}

impl CaLog {
    fn apply(&mut self, event: &Event) -> Result<(), String> {
        let data = |e: serde_json::Error| e.to_string();
        match event.kind.as_str() {
            kind::CA_ROOT_ADDED => {
                let added: RootAdded = serde_json::from_value(event.data.clone()).map_err(data)?;
                self.rotation = Some(Rotation {
                    new_root: added.fingerprint.clone(),
                    old_roots: added.old_roots,
                    overlap_seconds: added.overlap_seconds,
                    started_at: added.at,
                    phase: RotationPhase::Distributing,
                    phase_since: added.at,
                    phase_seq: event.seq,
                });
                self.added.push(AddedRoot { fingerprint: added.fingerprint, root_pem: added.root_pem });
            }
            kind::CA_ISSUER_ACTIVATED => {
                let activated: IssuerActivated = serde_json::from_value(event.data.clone()).map_err(data)?;
                if let Some(rotation) = &mut self.rotation {
                    rotation.phase = RotationPhase::Renewing;
                    rotation.phase_since = activated.at;
                    rotation.phase_seq = event.seq;
                }
                self.active = Some(activated.fingerprint);
                self.renew_before = Some(activated.renew_before);
            }
            kind::CA_ROOT_RETIRED => {
                let retired: RootsRetired = serde_json::from_value(event.data.clone()).map_err(data)?;
                self.retired.extend(retired.fingerprints);
                self.rotation = None;
            }
            other => return Err(format!("unknown event kind {other:?}")),
        }
        self.version = event.version;
        Ok(())
    }
}

/// A token: a join token lets one service's sidecars receive configuration, register
/// instances and get certificates; a read-only token reads the configuration and registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    /// Absent in records from before read-only tokens, which were all join tokens.
    #[serde(default)]
    pub kind: TokenKind,
    /// A join token's service; empty for a read-only token. Always written, so a replica a
    /// release behind still reads the record.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub namespace: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Seconds since the Unix epoch after which the token is refused; none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredResource {
    /// The aggregate's version after the event that wrote this document.
    pub version: u64,
    pub seq: u64,
    /// The document as applied (`apiVersion`, `kind`, `metadata`, `spec`).
    pub document: serde_json::Value,
}

/// Why an event could not be folded: the log holds something this version cannot read.
#[derive(Debug, thiserror::Error)]
#[error("event {seq} ({kind}) cannot be applied: {reason}")]
pub struct CorruptEvent {
    pub seq: u64,
    pub kind: String,
    pub reason: String,
}

impl From<CorruptEvent> for StoreError {
    fn from(e: CorruptEvent) -> Self {
        StoreError::Corrupt { seq: e.seq, reason: e.to_string() }
    }
}

impl State {
    /// Folds one event in. Events must come in `seq` order.
    pub fn apply(&mut self, event: &Event) -> Result<(), CorruptEvent> {
        let corrupt = |reason: String| CorruptEvent { seq: event.seq, kind: event.kind.clone(), reason };
        match event.kind.as_str() {
            kind::RESOURCE_APPLIED => {
                let resource =
                    StoredResource { version: event.version, seq: event.seq, document: event.data.clone() };
                self.resources.insert(event.aggregate.clone(), Arc::new(resource));
            }
            kind::RESOURCE_DELETED => {
                self.resources.remove(&event.aggregate);
            }
            kind::ENDPOINT_REGISTERED => {
                let record: EndpointRecord =
                    serde_json::from_value(event.data.clone()).map_err(|e| corrupt(e.to_string()))?;
                self.endpoints.insert(record.id.clone(), record);
            }
            kind::TOKEN_CREATED => {
                let record: TokenRecord =
                    serde_json::from_value(event.data.clone()).map_err(|e| corrupt(e.to_string()))?;
                self.tokens.insert(record.id.clone(), record);
            }
            kind::ENDPOINT_DEREGISTERED | kind::ENDPOINT_EXPIRED => {
                let id = event.aggregate.strip_prefix("Endpoint/").unwrap_or(&event.aggregate);
                self.endpoints.remove(id);
            }
            kind::CA_ROOT_ADDED | kind::CA_ISSUER_ACTIVATED | kind::CA_ROOT_RETIRED => {
                self.ca.apply(event).map_err(corrupt)?;
            }
            rollout if crate::rollout::kind::is_rollout(rollout) => {
                self.rollouts.apply(event).map_err(corrupt)?;
            }
            other => return Err(corrupt(format!("unknown event kind {other:?}"))),
        }
        self.seq = event.seq;
        Ok(())
    }

    /// The configuration alone (the resources at `seq`), without live registrations and tokens:
    /// what history keeps of a point of the log.
    pub fn configuration(&self) -> State {
        State { seq: self.seq, resources: self.resources.clone(), ..State::default() }
    }

    /// The events that turn `self` back into `target`'s resources (a rollback): every resource
    /// that differs is re-applied as it was, every resource added since is deleted. Registered
    /// endpoints are live state, not configuration, and are left alone.
    pub fn restore(&self, target: &State, actor: &str) -> Vec<AppendRequest> {
        let mut out = Vec::new();
        for (aggregate, old) in &target.resources {
            let current = self.resources.get(aggregate);
            if current.map(|r| &r.document) != Some(&old.document) {
                out.push(AppendRequest {
                    aggregate: aggregate.clone(),
                    expected_version: Some(current.map_or(0, |r| r.version)),
                    kind: kind::RESOURCE_APPLIED.to_owned(),
                    data: old.document.clone(),
                    actor: actor.to_owned(),
                    idempotency_key: None,
                });
            }
        }
        for (aggregate, current) in &self.resources {
            if !target.resources.contains_key(aggregate) {
                out.push(AppendRequest {
                    aggregate: aggregate.clone(),
                    expected_version: Some(current.version),
                    kind: kind::RESOURCE_DELETED.to_owned(),
                    data: serde_json::Value::Null,
                    actor: actor.to_owned(),
                    idempotency_key: None,
                });
            }
        }
        out
    }

    /// What changed in the resources between `self` (earlier) and `later`.
    pub fn diff(&self, later: &State) -> Vec<Change> {
        let mut changes = Vec::new();
        for (aggregate, new) in &later.resources {
            match self.resources.get(aggregate) {
                None => changes.push(Change {
                    aggregate: aggregate.clone(),
                    before: None,
                    after: Some(new.document.clone()),
                }),
                Some(old) if old.document != new.document => changes.push(Change {
                    aggregate: aggregate.clone(),
                    before: Some(old.document.clone()),
                    after: Some(new.document.clone()),
                }),
                Some(_) => {}
            }
        }
        for (aggregate, old) in &self.resources {
            if !later.resources.contains_key(aggregate) {
                changes.push(Change {
                    aggregate: aggregate.clone(),
                    before: Some(old.document.clone()),
                    after: None,
                });
            }
        }
        changes.sort_by(|a, b| a.aggregate.cmp(&b.aggregate));
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, kind: &str, aggregate: &str, version: u64, data: serde_json::Value) -> Event {
        Event {
            seq,
            id: format!("e{seq}"),
            at: String::new(),
            kind: kind.to_owned(),
            aggregate: aggregate.to_owned(),
            version,
            data,
            actor: "test".to_owned(),
        }
    }

    fn fold(events: &[Event]) -> State {
        let mut state = State::default();
        for e in events {
            state.apply(e).unwrap();
        }
        state
    }

    #[test]
    fn restore_and_diff_undo_exactly_what_changed() {
        let doc = |port: u16| serde_json::json!({ "kind": "Service", "spec": { "port": port } });
        let log = [
            event(1, kind::RESOURCE_APPLIED, "Service/default/a", 1, doc(1)),
            event(2, kind::RESOURCE_APPLIED, "Service/default/b", 1, doc(2)),
            event(3, kind::RESOURCE_APPLIED, "Service/default/a", 2, doc(3)),
            event(4, kind::RESOURCE_DELETED, "Service/default/b", 2, serde_json::Value::Null),
            event(5, kind::RESOURCE_APPLIED, "Service/default/c", 1, doc(5)),
        ];
        let (then, now) = (fold(&log[..2]), fold(&log));
        let changes = then.diff(&now);
        let names: Vec<&str> = changes.iter().map(|c| c.aggregate.as_str()).collect();
        assert_eq!(names, ["Service/default/a", "Service/default/b", "Service/default/c"]);
        assert!(changes[1].after.is_none() && changes[2].before.is_none());

        let undo = now.restore(&then, "test");
        assert_eq!(undo.len(), 3);
        let a = undo.iter().find(|r| r.aggregate == "Service/default/a").unwrap();
        assert_eq!(
            (a.kind.as_str(), a.expected_version, &a.data),
            (kind::RESOURCE_APPLIED, Some(2), &doc(1))
        );
        let c = undo.iter().find(|r| r.aggregate == "Service/default/c").unwrap();
        assert_eq!((c.kind.as_str(), c.expected_version), (kind::RESOURCE_DELETED, Some(1)));
        assert!(now.restore(&now, "test").is_empty(), "restoring the present changes nothing");
    }

    #[test]
    fn unknown_event_kinds_are_corruption_not_silence() {
        let mut state = State::default();
        let err = state.apply(&event(1, "Mystery", "x", 1, serde_json::Value::Null)).unwrap_err();
        assert_eq!(err.seq, 1);
    }
}
