//! Every kind Pilotfish understands, with its `apiVersion`: [`Resource`], what a valid document
//! becomes, and its JSON form.

use super::metadata::Metadata;
use crate::authz::AuthorizationPolicySpec;
use crate::policy::{BackendPolicySpec, RateLimitPolicySpec};
use crate::rollout::RolloutSpec;
use crate::route::{HttpRouteSpec, GATEWAY_V1};
use crate::{ServiceSpec, SidecarSpec};

/// The `apiVersion` of Pilotfish's own kinds.
pub const PILOTFISH_V1ALPHA1: &str = "pilotfish.io/v1alpha1";

/// A resource of one kind: its metadata and its validated spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<S> {
    pub metadata: Metadata,
    pub spec: S,
}

/// Every kind Pilotfish understands. The kinds with large specs are boxed, so that the enum is
/// the size of a Service or an HTTPRoute, the kinds a mesh has thousands of (and sidecars keep).
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Sidecar(Box<Object<SidecarSpec>>),
    Service(Object<ServiceSpec>),
    HttpRoute(Object<HttpRouteSpec>),
    BackendPolicy(Box<Object<BackendPolicySpec>>),
    RateLimitPolicy(Box<Object<RateLimitPolicySpec>>),
    AuthorizationPolicy(Box<Object<AuthorizationPolicySpec>>),
    Rollout(Box<Object<RolloutSpec>>),
}

/// Every kind, with its `apiVersion`.
pub(crate) const KINDS: [(&str, &str); 7] = [
    ("Sidecar", PILOTFISH_V1ALPHA1),
    ("Service", PILOTFISH_V1ALPHA1),
    ("HTTPRoute", GATEWAY_V1),
    ("BackendPolicy", PILOTFISH_V1ALPHA1),
    ("RateLimitPolicy", PILOTFISH_V1ALPHA1),
    ("AuthorizationPolicy", PILOTFISH_V1ALPHA1),
    ("Rollout", PILOTFISH_V1ALPHA1),
];

impl Resource {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sidecar(_) => "Sidecar",
            Self::Service(_) => "Service",
            Self::HttpRoute(_) => "HTTPRoute",
            Self::BackendPolicy(_) => "BackendPolicy",
            Self::RateLimitPolicy(_) => "RateLimitPolicy",
            Self::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Self::Rollout(_) => "Rollout",
        }
    }

    pub fn api_version(&self) -> &'static str {
        let kind = self.kind();
        KINDS.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v).expect("every kind is listed")
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Self::Sidecar(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::HttpRoute(o) => &o.metadata,
            Self::BackendPolicy(o) => &o.metadata,
            Self::RateLimitPolicy(o) => &o.metadata,
            Self::AuthorizationPolicy(o) => &o.metadata,
            Self::Rollout(o) => &o.metadata,
        }
    }

    /// The document as JSON, in the shape it was written (`apiVersion`, `kind`, `metadata`, `spec`).
    pub fn to_json(&self) -> serde_json::Value {
        let spec = match self {
            Self::Sidecar(o) => serde_json::to_value(&o.spec),
            Self::Service(o) => serde_json::to_value(&o.spec),
            Self::HttpRoute(o) => serde_json::to_value(&o.spec),
            Self::BackendPolicy(o) => serde_json::to_value(&o.spec),
            Self::RateLimitPolicy(o) => serde_json::to_value(&o.spec),
            Self::AuthorizationPolicy(o) => serde_json::to_value(&o.spec),
            Self::Rollout(o) => serde_json::to_value(&o.spec),
        }
        .expect("specs serialize to JSON");
        serde_json::json!({
            "apiVersion": self.api_version(),
            "kind": self.kind(),
            "metadata": self.metadata(),
            "spec": spec,
        })
    }

    /// `Kind namespace/name`, as errors and warnings name a document.
    pub fn describe(&self) -> String {
        let m = self.metadata();
        format!("{} {}/{}", self.kind(), m.namespace, m.name)
    }
}
