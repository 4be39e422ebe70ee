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
//! An `AdmissionRequest` does not carry its namespace's annotations. The control plane knows
//! them through [`NamespaceAnnotations`]: with `--kubernetes`, a reflector of the cluster's
//! Namespaces (in memory, so admission never waits on the API server); without, none, and only
//! the pod's annotations apply.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{inject, workload, Annotations, Options, Outcome};
use crate::core::NamespaceAnnotations;

/// The webhook's injector: the [`Options`] the control plane injects with.
#[derive(Default)]
pub struct Injector {
    options: Options,
}

impl Injector {
    pub fn new(options: Options) -> Self {
        Self { options }
    }

    /// The answer to `review`, with the annotations `namespaces` knows of its namespace.
    pub fn review(
        &self,
        review: AdmissionReview,
        namespaces: &dyn NamespaceAnnotations,
    ) -> AdmissionReviewResponse {
        AdmissionReviewResponse {
            api_version: AdmissionApiVersion::V1,
            kind: AdmissionReviewKind::AdmissionReview,
            response: self.respond(review.request, namespaces),
        }
    }

    fn respond(&self, request: AdmissionRequest, namespaces: &dyn NamespaceAnnotations) -> AdmissionResponse {
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
            Some(ns) => namespaces.get(ns),
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
            Ok(Outcome::HostNetwork) => response.warnings.push(format!("pilotfish: {}", super::HOST_NETWORK)),
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

    impl NamespaceAnnotations for Shop {
        fn get(&self, namespace: &str) -> Annotations {
            assert_eq!(namespace, "shop");
            [("pilotfish.io/log-level".to_owned(), "debug".to_owned())].into()
        }
    }

    struct NoNamespaces;

    impl NamespaceAnnotations for NoNamespaces {
        fn get(&self, _: &str) -> Annotations {
            Annotations::new()
        }
    }

    #[test]
    fn a_created_pod_gets_a_patch_that_makes_it_what_inject_makes_it() {
        let injector = Injector::new(Options::default());
        let answer =
            serde_json::to_value(injector.review(review("CREATE", "Pod", pod(json!({}))), &Shop)).unwrap();
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

    #[test]
    fn updates_opted_out_and_other_kinds_are_allowed_unchanged_and_bad_annotations_denied() {
        let injector = Injector::default();
        for (operation, kind, object) in [
            ("UPDATE", "Pod", pod(json!({}))),
            ("CREATE", "Pod", pod(json!({"pilotfish.io/inject": "disabled"}))),
            ("CREATE", "ConfigMap", json!({"data": {}})),
        ] {
            let answer = injector.review(review(operation, kind, object), &NoNamespaces).response;
            assert!(answer.allowed && answer.patch.is_none(), "{operation} {kind}: {answer:?}");
        }
        let denied = injector.review(
            review("CREATE", "Pod", pod(json!({"pilotfish.io/skip-inbound-ports": "http"}))),
            &NoNamespaces,
        );
        assert!(!denied.response.allowed);
        let message = denied.response.status.unwrap().message;
        assert!(message.contains("pilotfish.io/skip-inbound-ports"), "{message}");
    }
}
