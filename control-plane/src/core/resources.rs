//! Resources: apply a document stream (validated whole, one atomic batch), list, get, delete.
//! A new resource kind is added in `pilotfish-api` (its type and validation) and to [`KINDS`].

use serde_json::Value;

use super::error::{Error, Result};
use super::plane::ControlPlane;
use crate::model::{kind, resource_aggregate};
use crate::store::AppendRequest;
use pilotfish_api::wire::{AppliedItem, Deleted, ResourceItem, ResourceList};

/// The kinds the API stores (a `Sidecar` is one sidecar's local settings, not mesh config).
pub const KINDS: [&str; 6] =
    ["Service", "HTTPRoute", "BackendPolicy", "RateLimitPolicy", "AuthorizationPolicy", "Rollout"];

/// What an apply did: one entry per document, and the warnings about fields accepted with a
/// caveat (kept without effect, or dropped).
pub struct Applied {
    pub items: Vec<AppliedItem>,
    pub warnings: Vec<pilotfish_api::Warning>,
}

/// `httproute` or `httproutes` → `HTTPRoute`: kinds are case-insensitive in URLs and the CLI.
pub fn canonical_kind(kind: &str) -> Result<&'static str> {
    KINDS
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(kind) || plural(k).eq_ignore_ascii_case(kind))
        .ok_or_else(|| {
            Error::BadRequest(format!("unknown kind {kind:?}: expected one of {}", KINDS.join(", ")))
        })
}

/// `HTTPRoutes`, `BackendPolicies`: a kind's plural, as the CLI and URLs accept it.
pub fn plural(kind: &str) -> String {
    match kind.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{kind}s"),
    }
}

impl ControlPlane {
    /// Applies a YAML/JSON document stream: validated as a whole, appended as one atomic batch
    /// (documents identical to what is stored are skipped). `expected` is the version a single
    /// document's resource must be at; `key` an idempotency key.
    pub async fn apply(
        &self,
        actor: &str,
        text: &str,
        expected: Option<u64>,
        key: Option<&str>,
    ) -> Result<Applied> {
        let pilotfish_api::Parsed { resources, warnings } = pilotfish_api::parse("request", text)?;
        if resources.is_empty() {
            return Err(Error::BadRequest("the request has no documents".into()));
        }
        if expected.is_some() && resources.len() > 1 {
            return Err(Error::BadRequest("If-Match applies to a single document".into()));
        }
        let key = key.map(|k| format!("apply:{k}"));
        self.refresh().await?;
        let mut batch = Vec::new();
        let mut unchanged = Vec::new();
        {
            let state = self.state.read().await;
            for (i, r) in resources.iter().enumerate() {
                if matches!(r, pilotfish_api::Resource::Sidecar(_)) {
                    return Err(Error::BadRequest(format!(
                        "document {}: a Sidecar is one sidecar's local settings, not mesh configuration",
                        i + 1
                    )));
                }
                let m = r.metadata();
                let aggregate = resource_aggregate(r.kind(), &m.namespace, &m.name);
                let document = r.to_json();
                let current = state.resources.get(&aggregate);
                if let Some(c) =
                    current.filter(|c| expected.is_none() && key.is_none() && c.document == document)
                {
                    unchanged.push(AppliedItem { aggregate, version: c.version, seq: None, unchanged: true });
                    continue;
                }
                batch.push(AppendRequest {
                    aggregate,
                    expected_version: expected,
                    kind: kind::RESOURCE_APPLIED.to_owned(),
                    data: document,
                    actor: actor.to_owned(),
                    idempotency_key: key.as_ref().map(|k| format!("{k}#{i}")),
                });
            }
        }
        let events = if batch.is_empty() { Vec::new() } else { self.store.append_batch(batch).await? };
        self.settle().await;
        let mut items: Vec<_> = events
            .into_iter()
            .map(|e| AppliedItem {
                aggregate: e.aggregate,
                version: e.version,
                seq: Some(e.seq),
                unchanged: false,
            })
            .collect();
        items.extend(unchanged);
        Ok(Applied { items, warnings })
    }

    /// The resources in force, optionally of one kind and one namespace.
    pub async fn list(&self, kind: Option<&str>, namespace: Option<&str>) -> Result<ResourceList> {
        let kind = kind.map(canonical_kind).transpose()?;
        self.refresh().await?;
        let state = self.state.read().await;
        let items = state
            .resources
            .iter()
            .filter(|(aggregate, _)| {
                let mut parts = aggregate.splitn(3, '/');
                let (k, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                kind.is_none_or(|want| want.eq_ignore_ascii_case(k))
                    && namespace.is_none_or(|want| want == ns)
            })
            .map(|(_, r)| ResourceItem { version: r.version, seq: r.seq, document: r.document.clone() })
            .collect();
        Ok(ResourceList { seq: state.seq, items })
    }

    pub async fn get(&self, kind: &str, namespace: &str, name: &str) -> Result<ResourceItem> {
        self.refresh().await?;
        let state = self.state.read().await;
        let aggregate = resource_aggregate(canonical_kind(kind)?, namespace, name);
        let r = state.resources.get(&aggregate).ok_or(Error::NotFound(aggregate))?;
        Ok(ResourceItem { version: r.version, seq: r.seq, document: r.document.clone() })
    }

    /// Deletes a resource; `expected`: the version it must be at (default: whatever it is).
    pub async fn delete(
        &self,
        actor: String,
        (kind, namespace, name): (&str, &str, &str),
        expected: Option<u64>,
        key: Option<&str>,
    ) -> Result<Deleted> {
        self.refresh().await?;
        let aggregate = resource_aggregate(canonical_kind(kind)?, namespace, name);
        let current = self.state.read().await.resources.get(&aggregate).map(|r| r.version);
        let Some(version) = current else { return Err(Error::NotFound(aggregate)) };
        let idempotency_key = key.map(|k| format!("delete {aggregate}:{k}"));
        let event = self
            .store
            .append(AppendRequest {
                aggregate,
                expected_version: Some(expected.unwrap_or(version)),
                kind: kind::RESOURCE_DELETED.to_owned(),
                data: Value::Null,
                actor,
                idempotency_key,
            })
            .await?;
        self.settle().await;
        Ok(Deleted { deleted: event.aggregate, seq: event.seq })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_are_named_in_any_case_singular_or_plural() {
        for (name, kind) in [
            ("Service", "Service"),
            ("services", "Service"),
            ("httproutes", "HTTPRoute"),
            ("backendpolicies", "BackendPolicy"),
            ("RateLimitPolicies", "RateLimitPolicy"),
            ("authorizationpolicy", "AuthorizationPolicy"),
            ("authorizationpolicies", "AuthorizationPolicy"),
            ("rollouts", "Rollout"),
        ] {
            assert_eq!(super::canonical_kind(name).unwrap(), kind, "{name}");
        }
        assert!(super::canonical_kind("authorizationpolicys").is_err());
    }
}
