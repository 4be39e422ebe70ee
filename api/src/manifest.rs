//! Carrying Kubernetes manifests over: what `kubectl get -o yaml` prints besides configuration,
//! and the Gateway API features Pilotfish understands but does not implement. Runs on the raw
//! document, before the strict typed parse (which still refuses every field it does not know).
//!
//! - Dropped silently: `status` and the metadata a cluster sets (`uid`, `resourceVersion`,
//!   `generation`, `creationTimestamp`, `deletionTimestamp`, `deletionGracePeriodSeconds`,
//!   `selfLink`, `managedFields`, `generateName`) and kubectl's
//!   `last-applied-configuration` annotation: they describe one cluster's copy of the object.
//! - Dropped with a warning: `ownerReferences` and `finalizers`, which drive Kubernetes' garbage
//!   collection and deletion; Pilotfish has neither.
//! - Kept, with a warning that they have no effect: an HTTPRoute's `parentRefs[].sectionName` and
//!   `port` (the route applies to every port of its Service) and `hostnames`.
//! - Refused, with the reason: HTTPRoute features whose absence would change what the route does —
//!   the `RequestMirror`, `ExtensionRef`, `CORS` and `ExternalAuth` filters, filters on a
//!   backendRef, `sessionPersistence`. (The Gateway API, too, says an unsupported filter must not
//!   be skipped.)

use serde_yaml_ng::Value;

use crate::field::FieldError;

/// A field that was accepted, but not as written: dropped, or kept without effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldWarning {
    pub field: String,
    pub message: String,
}

pub(crate) const CLUSTER_SET: [&str; 9] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
    "generateName",
];

/// Metadata dropped with a warning: it drives what Pilotfish does not have.
pub(crate) const UNSUPPORTED: [(&str, &str); 2] = [
    ("ownerReferences", "ignored: Pilotfish does not garbage-collect objects with their owners"),
    ("finalizers", "ignored: Pilotfish deletes an object at once, without finalizers"),
];

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what a cluster added to `doc`, and judges the HTTPRoute features Pilotfish lacks.
pub(crate) fn carry_over(kind: &str, doc: &mut Value) -> Result<Vec<FieldWarning>, FieldError> {
    let mut warnings = Vec::new();
    let Some(top) = doc.as_mapping_mut() else { return Ok(warnings) };
    top.shift_remove("status");
    if let Some(meta) = top.get_mut("metadata").and_then(Value::as_mapping_mut) {
        for field in CLUSTER_SET {
            meta.shift_remove(field);
        }
        for (field, message) in UNSUPPORTED {
            if meta.shift_remove(field).is_some() {
                warnings.push(warning(format!("metadata.{field}"), message.to_owned()));
            }
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_mapping_mut) {
            annotations.shift_remove(LAST_APPLIED);
        }
    }
    if kind == "HTTPRoute" {
        if let Some(spec) = top.get_mut("spec") {
            http_route(spec, &mut warnings)?;
        }
    }
    Ok(warnings)
}

fn http_route(spec: &mut Value, warnings: &mut Vec<FieldWarning>) -> Result<(), FieldError> {
    if spec.get("hostnames").and_then(Value::as_sequence).is_some_and(|h| !h.is_empty()) {
        warnings.push(warning(
            "spec.hostnames".into(),
            "not matched: a mesh route applies to all traffic to its parent Services, whatever the Host"
                .into(),
        ));
    }
    for (i, parent) in items(spec, "parentRefs") {
        let service = parent.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let section = parent.get("sectionName").and_then(Value::as_str).filter(|s| !s.is_empty());
        if let Some(section) = section {
            warnings.push(warning(
                format!("spec.parentRefs[{i}].sectionName"),
                format!("not implemented: the route applies to every port of Service {service}, not only to port {section:?}"),
            ));
        }
        if let Some(port) = parent.get("port").and_then(Value::as_u64) {
            warnings.push(warning(
                format!("spec.parentRefs[{i}].port"),
                format!("not implemented: the route applies to every port of Service {service}, not only to port {port}"),
            ));
        }
    }
    for (r, rule) in items(spec, "rules") {
        if rule.get("sessionPersistence").is_some() {
            return Err(FieldError::new(
                format!("spec.rules[{r}].sessionPersistence"),
                "not implemented: Pilotfish does not pin a session to one endpoint; remove it to balance every request",
            ));
        }
        for (f, filter) in items(rule, "filters") {
            let kind = filter.get("type").and_then(Value::as_str).unwrap_or_default();
            let why = match kind {
                "RequestMirror" => "not implemented: the mirror backend would get no copies; remove the filter",
                "CORS" => "not implemented: cross-origin requests would be answered without CORS headers",
                "ExternalAuth" => {
                    "not implemented: requests would reach the backend without the external authorization check"
                }
                "ExtensionRef" => "not supported: an extension filter belongs to the implementation that defines it",
                _ => continue,
            };
            return Err(FieldError::new(
                format!("spec.rules[{r}].filters[{f}].type"),
                format!("{kind} is {why}"),
            ));
        }
        for (b, backend) in items(rule, "backendRefs") {
            let Some(backend) = backend.as_mapping_mut() else { continue };
            match backend.get("filters").and_then(Value::as_sequence) {
                Some(filters) if filters.is_empty() => {
                    backend.shift_remove("filters");
                }
                Some(_) => {
                    return Err(FieldError::new(
                        format!("spec.rules[{r}].backendRefs[{b}].filters"),
                        "not implemented: filters per backend; put the backend in a rule of its own and the filters on that rule",
                    ));
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// The elements of a list field, with their index; nothing when the field is not a list (the
/// typed parse reports that).
fn items<'a>(value: &'a mut Value, field: &str) -> impl Iterator<Item = (usize, &'a mut Value)> {
    value.get_mut(field).and_then(Value::as_sequence_mut).into_iter().flatten().enumerate()
}

fn warning(field: String, message: String) -> FieldWarning {
    FieldWarning { field, message }
}

#[cfg(test)]
mod tests {
    use crate::{parse, Resource};

    const EXPORTED: &str = include_str!("../../examples/kubectl-httproute.yaml");

    #[test]
    fn a_route_as_kubectl_prints_it_is_accepted_keeping_labels_and_dropping_what_the_cluster_set() {
        let parsed = parse("users.yaml", EXPORTED).unwrap();
        let [Resource::HttpRoute(route)] = &parsed.resources[..] else { panic!("{:?}", parsed.resources) };
        let m = &route.metadata;
        assert_eq!((m.name.as_str(), m.namespace.as_str()), ("users", "shop"));
        assert_eq!(m.labels["app.kubernetes.io/name"], "users");
        assert_eq!(m.labels.len(), 2);
        let annotations: Vec<&str> = m.annotations.keys().map(String::as_str).collect();
        assert_eq!(annotations, ["meta.helm.sh/release-name", "team.example.com/owner"]);
        assert_eq!(route.spec.parent_refs[0].section_name.as_deref(), Some("http"));
        assert_eq!(route.spec.rules[0].backend_refs[1].weight, 10);

        let stored = parsed.resources[0].to_json();
        let mut meta: Vec<&String> = stored["metadata"].as_object().unwrap().keys().collect();
        meta.sort();
        assert_eq!(meta, ["annotations", "labels", "name", "namespace"], "{stored}");
        assert!(stored.get("status").is_none(), "{stored}");
        assert_eq!(stored["spec"]["parentRefs"][0]["port"], 80);

        let warned: Vec<(&str, &str)> =
            parsed.warnings.iter().map(|w| (w.object.as_str(), w.field.as_str())).collect();
        assert_eq!(
            warned,
            [
                ("HTTPRoute shop/users", "spec.parentRefs[0].sectionName"),
                ("HTTPRoute shop/users", "spec.parentRefs[0].port")
            ]
        );
        let text = parsed.warnings[1].to_string();
        assert_eq!(
            text,
            "users.yaml: document 1 (HTTPRoute shop/users): spec.parentRefs[0].port: not implemented: the route applies to every port of Service users, not only to port 80"
        );
        // What is stored parses again to the same route (the control plane pushes it as stored).
        let again = parse("stored", &stored.to_string()).unwrap();
        assert_eq!(again.resources, parsed.resources);
    }

    #[test]
    fn every_field_a_cluster_sets_is_dropped_without_a_word() {
        let set: String = super::CLUSTER_SET.iter().map(|f| format!("  {f}: x\n")).collect();
        let text = format!(
            "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata:\n  name: users\n{set}spec: {{}}\nstatus: {{ready: true}}\n"
        );
        let parsed = parse("f", &text).unwrap();
        assert_eq!(parsed.warnings, []);
        let stored = parsed.resources[0].to_json();
        assert_eq!(stored["metadata"], serde_json::json!({"name": "users", "namespace": "default"}));
        assert!(stored.get("status").is_none());
    }

    #[test]
    fn owner_references_finalizers_and_hostnames_are_warned_about() {
        let text = EXPORTED.replace(
            "\n  name: users\n",
            "\n  name: users\n  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: x, uid: 1}]\n  finalizers: [example.com/keep]\n",
        )
        .replace("spec:\n  parentRefs:", "spec:\n  hostnames: [users.shop.svc.cluster.local]\n  parentRefs:");
        let parsed = parse("f", &text).unwrap();
        let fields: Vec<&str> = parsed.warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.ownerReferences",
                "metadata.finalizers",
                "spec.hostnames",
                "spec.parentRefs[0].sectionName",
                "spec.parentRefs[0].port"
            ]
        );
        assert!(parsed.resources[0].to_json()["metadata"].get("finalizers").is_none());
    }

    #[test]
    fn what_would_change_the_route_is_refused_with_the_reason() {
        let rule = "  rules:\n  - backendRefs:";
        let cases = [
            (
                "    filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}}}\n",
                "spec.rules[0].filters[0].type",
                "mirror backend would get no copies",
            ),
            ("    filters: [{type: CORS, cors: {allowOrigins: ['*']}}]\n", "spec.rules[0].filters[0].type", "CORS"),
            ("    filters: [{type: ExternalAuth}]\n", "spec.rules[0].filters[0].type", "authorization"),
            (
                "    filters: [{type: ExtensionRef, extensionRef: {group: x.io, kind: K, name: n}}]\n",
                "spec.rules[0].filters[0].type",
                "extension",
            ),
            ("    sessionPersistence: {sessionName: s}\n", "spec.rules[0].sessionPersistence", "pin a session"),
            (
                "    backendRefs: [{name: a, filters: [{type: RequestHeaderModifier}]}]\n",
                "spec.rules[0].backendRefs[0].filters",
                "filters per backend",
            ),
        ];
        for (extra, field, reason) in cases {
            let text =
                EXPORTED.replace(rule, &format!("  rules:\n  -\n{extra}    matches: []\n  - backendRefs:"));
            let err = parse("f", &text).unwrap_err();
            assert_eq!(err.field, field, "{extra}: {err}");
            assert!(err.reason.contains(reason), "{extra}: {err}");
        }

        let refs = [
            (
                "group: \"\"\n    kind: Service\n    name: users\n    port: 80",
                "group: gateway.networking.k8s.io\n    kind: Gateway\n    name: users\n    port: 80",
                "spec.parentRefs[0].kind",
            ),
            (
                "group: \"\"\n    kind: Service\n    name: users\n    port: 80",
                "group: example.com\n    kind: Service\n    name: users\n    port: 80",
                "spec.parentRefs[0].group",
            ),
            (
                "    - group: \"\"\n      kind: Service\n      name: users-v2",
                "    - group: multicluster.x-k8s.io\n      kind: Service\n      name: users-v2",
                "spec.rules[0].backendRefs[1].group",
            ),
        ];
        for (from, to, field) in refs {
            assert!(EXPORTED.contains(from), "{from}");
            let err = parse("f", &EXPORTED.replacen(from, to, 1)).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn the_rest_stays_strict() {
        let empty = EXPORTED.replace("      weight: 10\n", "      weight: 10\n      filters: []\n");
        assert!(parse("f", &empty).is_ok(), "an empty list of backend filters means none");
        for (from, to, field) in [
            ("  generation: 3\n", "  generation: 3\n  labelz: {a: b}\n", "metadata"),
            ("    sectionName: http\n", "    sectionName: http\n    weight: 1\n", "spec.parentRefs[0]"),
            ("      request: 2s\n", "      request: 2s\n      idle: 1s\n", "spec.rules[0].timeouts"),
            (
                "    - requestHeaderModifier:",
                "    - type: Mirror\n    - requestHeaderModifier:",
                "spec.rules[1].filters[0]",
            ),
        ] {
            let err = parse("f", &EXPORTED.replace(from, to)).unwrap_err();
            assert!(err.field.starts_with(field), "{to}: {err}");
        }
    }
}
