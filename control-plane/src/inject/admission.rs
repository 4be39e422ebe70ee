//! The admission webhook's side of injection: `AdmissionReview` v1 in (the Kubernetes wire
//! types, as much of them as injection reads; other fields are ignored, as newer API servers
//! may send more), an `AdmissionResponse` out whose JSONPatch is the difference between the
//! object as it came and as [`super::inject`] left it — so the webhook and `pilotfish inject`
//! cannot differ.
//!
//! Only `CREATE` is mutated (a pod's containers cannot change after it is created). An object
//! that cannot be injected as its annotations ask is denied with the reason, so `kubectl`
//! shows what to fix; one that needs no sidecar is allowed unchanged.
//!
//! # The namespace's annotations
//!
//! An `AdmissionRequest` does not carry its namespace's annotations. The control plane learns
//! them through [`NamespaceAnnotations`], set with the [`Injector`] at start
//! (`ControlPlane::set_injector`): with `--kubernetes`, a lookup backed by the cluster's
//! Namespaces (a watch or cache, so admission does not wait on the API server); without,
//! [`NoNamespaceAnnotations`], and only the pod's annotations apply. A lookup that fails does
//! not block the pod: it is injected with its own annotations and the response warns.

use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{inject, workload, Annotations, Options, Outcome};

/// Where the webhook learns a namespace's annotations (see the module's documentation).
#[async_trait::async_trait]
pub trait NamespaceAnnotations: Send + Sync {
    /// The annotations of namespace `namespace` (empty if it has none or does not exist).
    async fn annotations(&self, namespace: &str) -> Result<Annotations, LookupError>;
}

/// A namespace's annotations could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// No namespace has annotations: the control plane without a cluster.
pub struct NoNamespaceAnnotations;

#[async_trait::async_trait]
impl NamespaceAnnotations for NoNamespaceAnnotations {
    async fn annotations(&self, _: &str) -> Result<Annotations, LookupError> {
        Ok(Annotations::new())
    }
}

/// The webhook's injector: the [`Options`] the control plane injects with and the namespace
/// lookup.
pub struct Injector {
    options: Options,
    namespaces: Arc<dyn NamespaceAnnotations>,
}

impl Default for Injector {
    /// The documented defaults; no namespace annotations.
    fn default() -> Self {
        Self::new(Options::default(), Arc::new(NoNamespaceAnnotations))
    }
}

impl Injector {
    pub fn new(options: Options, namespaces: Arc<dyn NamespaceAnnotations>) -> Self {
        Self { options, namespaces }
    }

    /// The answer to `review`.
    pub async fn review(&self, review: AdmissionReview) -> AdmissionReviewResponse {
        AdmissionReviewResponse {
            api_version: AdmissionApiVersion::V1,
            kind: AdmissionReviewKind::AdmissionReview,
            response: self.respond(review.request).await,
        }
    }

    async fn respond(&self, request: AdmissionRequest) -> AdmissionResponse {
        let mut response = AdmissionResponse::allow(request.uid);
        let kind = request.kind.kind;
        let Some(object) = request.object.filter(|_| request.operation == AdmissionOperation::Create) else {
            return response;
        };
        if workload::pod_pointer(&kind).is_none() {
            return response;
        }
        let original = Value::Object(object);
        let namespace = request
            .namespace
            .filter(|ns| !ns.is_empty())
            .or_else(|| original.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned));
        let annotations = match &namespace {
            Some(ns) => self.namespaces.annotations(ns).await.unwrap_or_else(|e| {
                response.warnings.push(format!(
                    "pilotfish: the annotations of namespace {ns} could not be read ({e}); injected with the pod's own"
                ));
                Annotations::new()
            }),
            None => Annotations::new(),
        };
        let mut injected = original.clone();
        match inject(&mut injected, &kind, &self.options, &annotations) {
            Ok(Outcome::Injected { warnings }) => {
                let patch = json_patch::diff(&original, &injected);
                let patch = serde_json::to_vec(&patch).expect("a JSON patch serializes");
                response.patch_type = Some(AdmissionPatchType::JsonPatch);
                response.patch = Some(base64::engine::general_purpose::STANDARD.encode(patch));
                response.warnings.extend(warnings.into_iter().map(|w| format!("pilotfish: {w}")));
            }
            Ok(Outcome::AlreadyInjected | Outcome::OptedOut | Outcome::NotAWorkload) => {}
            Err(e) => {
                response.allowed = false;
                response.status = Some(AdmissionStatus {
                    code: 400,
                    message: format!("pilotfish cannot inject this {kind}: {e}"),
                });
            }
        }
        response
    }
}

/// `AdmissionReview` (admission.k8s.io/v1) as the API server sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: AdmissionApiVersion,
    pub kind: AdmissionReviewKind,
    pub request: AdmissionRequest,
}

/// `AdmissionReview` (admission.k8s.io/v1) as the webhook answers it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    pub api_version: AdmissionApiVersion,
    pub kind: AdmissionReviewKind,
    pub response: AdmissionResponse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum AdmissionApiVersion {
    #[serde(rename = "admission.k8s.io/v1")]
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum AdmissionReviewKind {
    AdmissionReview,
}

/// The part of an `AdmissionRequest` injection reads.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// The object's kind (a Pod, or a workload if the webhook is configured for them).
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: AdmissionOperation,
    /// The object being created.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub object: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum AdmissionOperation {
    Create,
    Update,
    Delete,
    Connect,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<AdmissionPatchType>,
    /// The JSONPatch (RFC 6902), base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Why the object was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<AdmissionStatus>,
    /// Shown to the client (`kubectl` prints them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl AdmissionResponse {
    fn allow(uid: String) -> Self {
        Self { uid, allowed: true, patch_type: None, patch: None, status: None, warnings: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum AdmissionPatchType {
    #[serde(rename = "JSONPatch")]
    JsonPatch,
}

/// The reason of a denial, as the API server shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdmissionStatus {
    pub code: u16,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn review(operation: &str, kind: &str, object: Value) -> AdmissionReview {
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": operation,
                "object": object,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            },
        }))
        .unwrap()
    }

    fn pod(annotations: Value) -> Value {
        json!({"metadata": {"generateName": "web-", "annotations": annotations}, "spec": {"containers": [{"name": "web", "image": "web"}]}})
    }

    struct Shop;

    #[async_trait::async_trait]
    impl NamespaceAnnotations for Shop {
        async fn annotations(&self, namespace: &str) -> Result<Annotations, LookupError> {
            assert_eq!(namespace, "shop");
            Ok([("pilotfish.io/log-level".to_owned(), "debug".to_owned())].into())
        }
    }

    #[tokio::test]
    async fn a_created_pod_gets_a_patch_that_makes_it_what_inject_makes_it() {
        let injector = Injector::new(Options::default(), Arc::new(Shop));
        let answer =
            serde_json::to_value(injector.review(review("CREATE", "Pod", pod(json!({})))).await).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        let response = &answer["response"];
        assert_eq!(
            (&response["uid"], &response["allowed"], &response["patchType"]),
            (&json!("u-1"), &json!(true), &json!("JSONPatch"))
        );
        let patch =
            base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut patched = pod(json!({}));
        json_patch::patch(&mut patched, &patch).unwrap();
        let mut expected = pod(json!({}));
        let namespace = [("pilotfish.io/log-level".to_owned(), "debug".to_owned())].into();
        inject(&mut expected, "Pod", &Options::default(), &namespace).unwrap();
        assert_eq!(patched, expected);
        assert!(patched.to_string().contains(r#""RUST_LOG","value":"debug""#), "{patched}");
    }

    #[tokio::test]
    async fn updates_opted_out_and_other_kinds_are_allowed_unchanged_and_bad_annotations_denied() {
        let injector = Injector::default();
        for (operation, kind, object) in [
            ("UPDATE", "Pod", pod(json!({}))),
            ("CREATE", "Pod", pod(json!({"pilotfish.io/inject": "disabled"}))),
            ("CREATE", "ConfigMap", json!({"data": {}})),
        ] {
            let answer = injector.review(review(operation, kind, object)).await.response;
            assert!(answer.allowed && answer.patch.is_none(), "{operation} {kind}: {answer:?}");
        }
        let denied = injector
            .review(review("CREATE", "Pod", pod(json!({"pilotfish.io/skip-inbound-ports": "http"}))))
            .await;
        assert!(!denied.response.allowed);
        let message = denied.response.status.unwrap().message;
        assert!(message.contains("pilotfish.io/skip-inbound-ports"), "{message}");
    }
}
