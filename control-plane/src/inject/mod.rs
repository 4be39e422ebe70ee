//! Sidecar injection: the one mutation behind `pilotfish inject` and the admission webhook
//! (`POST /inject`), and its inverse. Pure: a Kubernetes object (JSON) in, the same object
//! with the sidecar added out; no I/O, no cluster.
//!
//! What is added (the names are the contract in `/work/k8s-contract.md`): the `pilotfish-init`
//! init container (the interception rules), the `pilotfish-proxy` container — a native
//! sidecar (an init container with `restartPolicy: Always` and a startup probe on `/ready`, so
//! the app starts only once the proxy is ready and a Job completes when its app exits) or, with
//! `pilotfish.io/native-sidecar: "false"` for clusters before 1.29, the first regular
//! container with a postStart hook that waits for readiness (a run-to-completion pod's app
//! commands are then wrapped in `pilotfish await --`, which shuts the proxy down when the
//! command ends) — the projected ServiceAccount token and trust-bundle volumes (and an
//! `emptyDir` for iptables' lock file: `pilotfish-init`'s root filesystem is read-only), the app's
//! probes rewritten to the status port ([`probes`]), and the marker annotation
//! `pilotfish.io/injected`.
//!
//! - [`settings`]: the annotation keys, the injector's [`Options`] and their defaults, and the
//!   checked [`Settings`] of one pod (its annotations over its namespace's).
//! - [`workload`]: where each kind keeps its pod (template).
//! - [`sidecar`]: the containers and volumes added.
//! - [`probes`]: the app's probes, rewritten and restored.
//! - [`admission`]: the webhook's side: `AdmissionReview` v1 in, a JSONPatch out, and the seam
//!   through which the control plane learns a namespace's annotations.
//!
//! Injecting an injected object changes nothing (the marker says it is), and [`uninject`]
//! gives the object back as it was before [`inject`], with one exception: an explicitly empty
//! `initContainers: []`, `volumes: []`, template `annotations: {}` or `metadata: {}` comes back
//! absent (injection keeps no record of it; Kubernetes does not keep empty fields either).

pub mod admission;
pub mod probes;
pub mod settings;
pub mod sidecar;
pub mod workload;

use serde_json::{Map, Value};

pub use settings::{Annotations, Options, Settings};

use pilotfish_api::document::validate_name;
use settings::keys;

/// The value of the marker annotation: the version of the injector.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The prefix a run-to-completion app's command gets in legacy mode.
const AWAIT: [&str; 3] = ["pilotfish", "await", "--"];

/// What [`inject`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added; the warnings say what could not be done for the app (a probe
    /// left as it was, a command that could not be wrapped).
    Injected { warnings: Vec<String> },
    /// The object already has the sidecar: left as it is.
    AlreadyInjected,
    /// `pilotfish.io/inject: disabled`: left as it is.
    OptedOut,
    /// Not a kind that runs pods: left as it is.
    NotAWorkload,
    /// Its pods use the node's network (`hostNetwork: true`): left as it is, since
    /// `pilotfish init` would rewrite the node's own iptables and every such pod on a node would
    /// want the same ports.
    HostNetwork,
}

/// What is said of a workload left alone because of `hostNetwork`.
pub const HOST_NETWORK: &str =
    "its pods use the node's network (hostNetwork: true): not injected, as intercepting would redirect the whole node's traffic";

/// Why an object could not be injected; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("annotation {key}: {value:?} is not valid: {why}")]
    Annotation { key: String, value: String, why: String },
    #[error("the service name {name:?} (from {from}) is not a DNS label: set the pilotfish.io/service annotation to the service's name")]
    ServiceName { name: String, from: &'static str },
    #[error("{0}")]
    Malformed(String),
}

/// Adds the sidecar to `object`, of `kind`, in a namespace with `namespace` annotations. On
/// an error `object` is left as it was.
pub fn inject(
    object: &mut Value,
    kind: &str,
    options: &Options,
    namespace: &Annotations,
) -> Result<Outcome, InjectError> {
    let mut injected = object.clone();
    let outcome = inject_into(&mut injected, kind, options, namespace)?;
    *object = injected;
    Ok(outcome)
}

fn inject_into(
    object: &mut Value,
    kind: &str,
    options: &Options,
    namespace: &Annotations,
) -> Result<Outcome, InjectError> {
    let workload_name = workload::name(object);
    let workload_annotations =
        object.as_object().map(|o| workload::string_map(o, "annotations")).unwrap_or_default();
    let Some(pod) = workload::pod_template(object, kind)? else { return Ok(Outcome::NotAWorkload) };
    let annotations = workload::string_map(pod, "annotations");
    if annotations.contains_key(keys::INJECTED) {
        return Ok(Outcome::AlreadyInjected);
    }
    let labels = workload::string_map(pod, "labels");
    let choice = [&annotations, &workload_annotations, &labels, namespace]
        .into_iter()
        .find_map(|a| a.get(keys::INJECT));
    if choice.is_some_and(|c| c == "disabled") {
        return Ok(Outcome::OptedOut);
    }
    if pod.get("spec").and_then(|s| s.get("hostNetwork")).and_then(Value::as_bool) == Some(true) {
        return Ok(Outcome::HostNetwork);
    }
    let settings = Settings::new(options, namespace, &annotations)?;
    let service = service_name(&settings, &labels, workload_name)?;

    let spec = pod.get_mut("spec").and_then(Value::as_object_mut).ok_or_else(|| malformed(kind, "spec"))?;
    refuse_our_names(spec, kind)?;
    let runs_to_completion =
        matches!(spec.get("restartPolicy").and_then(Value::as_str), Some("Never" | "OnFailure"));
    let containers = spec
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| malformed(kind, "spec.containers"))?;
    let rewritten = probes::rewrite(containers);
    let mut warnings = rewritten.warnings;
    if !settings.native_sidecar && runs_to_completion {
        warnings.extend(wrap_commands(containers));
    }
    let app_probes =
        (!rewritten.app_probes.is_empty()).then(|| Value::Object(rewritten.app_probes).to_string());
    let app_port = first_tcp_port(containers);
    let proxy = sidecar::proxy_container(&settings, &service, app_port, app_probes);
    let mut head = vec![sidecar::init_container(&settings)];
    if settings.native_sidecar {
        head.push(proxy);
    } else {
        containers.insert(0, proxy);
    }
    list(spec, "initContainers", kind)?.splice(0..0, head);
    list(spec, "volumes", kind)?.extend(sidecar::volumes());

    let pod = workload::pod_template(object, kind)?.expect("a workload");
    let metadata = object_field(pod, "metadata", kind)?;
    let annotations = object_field(metadata, "annotations", kind)?;
    annotations.insert(keys::INJECTED.into(), VERSION.into());
    if !rewritten.originals.is_empty() {
        annotations
            .insert(keys::ORIGINAL_PROBES.into(), Value::Object(rewritten.originals).to_string().into());
    }
    Ok(Outcome::Injected { warnings })
}

/// Takes the sidecar out of `object`, of `kind`: the object as it was before [`inject`].
/// Returns whether there was a sidecar to take out.
pub fn uninject(object: &mut Value, kind: &str) -> Result<bool, InjectError> {
    let Some(pod) = workload::pod_template(object, kind)? else { return Ok(false) };
    if !workload::string_map(pod, "annotations").contains_key(keys::INJECTED) {
        return Ok(false);
    }
    let originals = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(keys::ORIGINAL_PROBES))
        .and_then(Value::as_str)
        .map(serde_json::from_str::<Map<String, Value>>)
        .transpose()
        .map_err(|e| InjectError::Malformed(format!("{kind}: annotation {}: {e}", keys::ORIGINAL_PROBES)))?;
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        // Legacy mode (the proxy among the containers) is the one that wrapped commands.
        let legacy =
            spec.get("containers").and_then(Value::as_array).is_some_and(|c| c.iter().any(sidecar::is_ours));
        for field in ["initContainers", "containers", "volumes"] {
            let ours = sidecar::added_to(field);
            if let Some(items) = spec.get_mut(field).and_then(Value::as_array_mut) {
                items.retain(|item| !ours(item));
            }
        }
        let runs_to_completion =
            matches!(spec.get("restartPolicy").and_then(Value::as_str), Some("Never" | "OnFailure"));
        if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            if legacy && runs_to_completion {
                unwrap_commands(containers);
            }
            if let Some(originals) = &originals {
                probes::restore(containers, originals);
            }
        }
        drop_if_empty(spec, "initContainers");
        drop_if_empty(spec, "volumes");
    }
    if let Some(metadata) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(keys::INJECTED);
            annotations.remove(keys::ORIGINAL_PROBES);
        }
        drop_if_empty(metadata, "annotations");
    }
    drop_if_empty(pod, "metadata");
    Ok(true)
}

/// The service the proxy registers for: `pilotfish.io/service`, else the pod's label
/// `app.kubernetes.io/name`, else `app`, else the workload's name.
fn service_name(
    settings: &Settings,
    labels: &Annotations,
    workload: Option<String>,
) -> Result<String, InjectError> {
    if let Some(service) = &settings.service {
        return Ok(service.clone());
    }
    let (name, from) = if let Some(name) = labels.get("app.kubernetes.io/name") {
        (name.clone(), "label app.kubernetes.io/name")
    } else if let Some(name) = labels.get("app") {
        (name.clone(), "label app")
    } else if let Some(name) = workload {
        (name, "the workload's name")
    } else {
        (String::new(), "no name, label or annotation")
    };
    validate_name(&name).map_err(|_| InjectError::ServiceName { name: name.clone(), from })?;
    Ok(name)
}

/// Legacy mode, a pod that runs to completion: each app command becomes `pilotfish await --
/// <command>` (its `args` follow as before), which waits for the proxy, runs the command and
/// then shuts the proxy down, so the pod completes. A container without a `command` runs its
/// image's entrypoint, which is not known here: it is warned about and left as it is.
fn wrap_commands(containers: &mut [Value]) -> Vec<String> {
    let mut warnings = Vec::new();
    for container in containers {
        match container.get_mut("command").and_then(Value::as_array_mut) {
            Some(command) => {
                command.splice(0..0, AWAIT.map(Value::from));
            }
            None => warnings.push(format!(
                "container {}: no command, so it cannot be wrapped in `pilotfish await --` and the proxy keeps the pod running after it exits: set its command, or use native sidecars (Kubernetes 1.29+)",
                container.get("name").unwrap_or(&Value::Null)
            )),
        }
    }
    warnings
}

fn unwrap_commands(containers: &mut [Value]) {
    for command in containers.iter_mut().filter_map(|c| c.get_mut("command").and_then(Value::as_array_mut)) {
        if command.len() >= AWAIT.len() && command.iter().zip(AWAIT).all(|(a, b)| a == b) {
            command.drain(..AWAIT.len());
        }
    }
}

fn malformed(kind: &str, field: &str) -> InjectError {
    InjectError::Malformed(format!("{kind}: the pod's {field} is missing or of the wrong type"))
}

/// The array `field` of `map`, created empty if absent.
fn list<'a>(
    map: &'a mut Map<String, Value>,
    field: &str,
    kind: &str,
) -> Result<&'a mut Vec<Value>, InjectError> {
    map.entry(field)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| malformed(kind, field))
}

/// Injection's names must be free: a container or volume of the app by one of them would be
/// taken for injection's own by uninject.
fn refuse_our_names(spec: &Map<String, Value>, kind: &str) -> Result<(), InjectError> {
    for field in ["containers", "initContainers", "volumes"] {
        let items =
            spec.get(field).map(|v| v.as_array().ok_or_else(|| malformed(kind, field))).transpose()?;
        let ours = sidecar::added_to(field);
        if let Some(taken) = items.into_iter().flatten().find(|item| ours(item)) {
            return Err(InjectError::Malformed(format!(
                "{kind}: spec.{field} already has one named {} but the pod has no {} annotation: rename it to inject",
                taken["name"],
                keys::INJECTED
            )));
        }
    }
    Ok(())
}

/// The object `field` of `map`, created empty if absent.
fn object_field<'a>(
    map: &'a mut Map<String, Value>,
    field: &str,
    kind: &str,
) -> Result<&'a mut Map<String, Value>, InjectError> {
    map.entry(field)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| malformed(kind, field))
}

fn drop_if_empty(map: &mut Map<String, Value>, field: &str) {
    let empty = match map.get(field) {
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(fields)) => fields.is_empty(),
        _ => false,
    };
    if empty {
        map.remove(field);
    }
}

/// The first TCP port the app's containers declare: where the proxy forwards inbound
/// connections that reach its inbound port without interception. Intercepted ones keep their
/// own port. 80 when none is declared.
fn first_tcp_port(containers: &[Value]) -> u16 {
    containers
        .iter()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .filter(|p| p.get("protocol").and_then(Value::as_str).is_none_or(|proto| proto == "TCP"))
        .find_map(|p| p.get("containerPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()))
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(template_metadata: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {"team": "a"}},
            "spec": {"template": {
                "metadata": template_metadata,
                "spec": {
                    "initContainers": [{"name": "setup", "image": "setup"}],
                    "containers": [{"name": "web", "image": "web", "readinessProbe": {"tcpSocket": {"port": 80}}}],
                },
            }},
        })
    }

    fn injected(mut object: Value, namespace: &Annotations) -> (Value, Outcome) {
        let outcome = inject(&mut object, "Deployment", &Options::default(), namespace).unwrap();
        (object, outcome)
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect()
    }

    #[test]
    fn native_sidecars_go_first_among_the_init_containers_and_injecting_again_changes_nothing() {
        let (once, outcome) = injected(deployment(json!({"labels": {"app": "shop"}})), &Annotations::new());
        assert_eq!(outcome, Outcome::Injected { warnings: vec![] });
        let pod = &once["spec"]["template"];
        assert_eq!(names(&pod["spec"]["initContainers"]), ["pilotfish-init", "pilotfish-proxy", "setup"]);
        assert_eq!(names(&pod["spec"]["containers"]), ["web"]);
        assert_eq!(names(&pod["spec"]["volumes"]), ["pilotfish-xtables", "pilotfish-token", "pilotfish-ca"]);
        assert_eq!(pod["metadata"]["annotations"][keys::INJECTED], VERSION);
        let proxy = &pod["spec"]["initContainers"][1];
        assert_eq!(
            (&proxy["restartPolicy"], &proxy["startupProbe"]["httpGet"]["path"]),
            (&json!("Always"), &json!("/ready"))
        );
        assert!(proxy["args"]
            .as_array()
            .unwrap()
            .windows(2)
            .any(|w| w == [json!("--service"), json!("shop")]));

        let (twice, outcome) = injected(once.clone(), &Annotations::new());
        assert_eq!((twice, outcome), (once, Outcome::AlreadyInjected));
    }

    #[test]
    fn pods_on_the_nodes_network_are_left_alone() {
        let mut object = deployment(json!({}));
        object["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        let (left, outcome) = injected(object.clone(), &Annotations::new());
        assert_eq!((left, outcome), (object, Outcome::HostNetwork));
    }

    #[test]
    fn legacy_mode_puts_the_proxy_first_among_the_containers_with_a_post_start_wait() {
        let metadata = json!({"annotations": {keys::NATIVE_SIDECAR: "false"}});
        let (object, _) = injected(deployment(metadata), &Annotations::new());
        let spec = &object["spec"]["template"]["spec"];
        assert_eq!(names(&spec["initContainers"]), ["pilotfish-init", "setup"]);
        assert_eq!(names(&spec["containers"]), ["pilotfish-proxy", "web"]);
        assert_eq!(
            spec["containers"][0]["lifecycle"]["postStart"]["exec"]["command"],
            json!(["pilotfish", "await"])
        );
        assert!(spec["containers"][0].get("restartPolicy").is_none());
    }

    #[test]
    fn uninject_gives_back_exactly_what_was_injected() {
        for metadata in [
            json!({"labels": {"app": "web"}}),
            json!({"annotations": {keys::NATIVE_SIDECAR: "false", "other": "x"}}),
            Value::Null,
        ] {
            let mut original = deployment(metadata.clone());
            if metadata.is_null() {
                original["spec"]["template"].as_object_mut().unwrap().remove("metadata");
                original["spec"]["template"]["spec"]["restartPolicy"] = "Never".into();
                original["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["/web"]);
            }
            let (mut object, _) = injected(original.clone(), &Annotations::new());
            assert_ne!(object, original);
            assert!(uninject(&mut object, "Deployment").unwrap());
            assert_eq!(object, original);
            assert!(!uninject(&mut object, "Deployment").unwrap(), "nothing left to take out");
        }
    }

    #[test]
    fn disabled_opts_out_on_the_pod_its_labels_its_workload_or_its_namespace_unless_the_pod_says_enabled() {
        let disabled: Annotations = [(keys::INJECT.to_owned(), "disabled".to_owned())].into();
        let pod_annotation = deployment(json!({"annotations": {keys::INJECT: "disabled"}}));
        let pod_label = deployment(json!({"labels": {keys::INJECT: "disabled"}}));
        let mut workload = deployment(json!({}));
        workload["metadata"]["annotations"][keys::INJECT] = "disabled".into();
        for (object, namespace) in [
            (pod_annotation, Annotations::new()),
            (pod_label, Annotations::new()),
            (workload, Annotations::new()),
            (deployment(json!({})), disabled.clone()),
        ] {
            assert_eq!(injected(object.clone(), &namespace), (object, Outcome::OptedOut));
        }
        let enabled = deployment(json!({"annotations": {keys::INJECT: "enabled"}}));
        assert!(matches!(injected(enabled, &disabled).1, Outcome::Injected { .. }));
    }

    #[test]
    fn other_kinds_are_left_alone_and_our_names_in_the_app_are_refused() {
        let mut service = json!({"kind": "Service", "spec": {"ports": [{"port": 80}]}});
        let before = service.clone();
        assert_eq!(
            inject(&mut service, "Service", &Options::default(), &Annotations::new()).unwrap(),
            Outcome::NotAWorkload
        );
        assert_eq!(service, before);

        let mut taken = deployment(json!({}));
        taken["spec"]["template"]["spec"]["containers"][0]["name"] = "pilotfish-proxy".into();
        let err = inject(&mut taken, "Deployment", &Options::default(), &Annotations::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pilotfish-proxy") && err.contains("rename"), "{err}");
    }

    #[test]
    fn the_service_is_the_annotation_then_the_name_label_then_app_then_the_workloads_name() {
        let service = |metadata: Value| {
            let (object, _) = injected(deployment(metadata), &Annotations::new());
            let args =
                object["spec"]["template"]["spec"]["initContainers"][1]["args"].as_array().unwrap().clone();
            let at = args.iter().position(|a| a == "--service").unwrap();
            args[at + 1].as_str().unwrap().to_owned()
        };
        let labels = json!({"app.kubernetes.io/name": "named", "app": "app"});
        assert_eq!(
            service(json!({"labels": labels, "annotations": {keys::SERVICE: "annotated"}})),
            "annotated"
        );
        assert_eq!(service(json!({"labels": labels})), "named");
        assert_eq!(service(json!({"labels": {"app": "app"}})), "app");
        assert_eq!(service(json!({})), "web");
    }
}
