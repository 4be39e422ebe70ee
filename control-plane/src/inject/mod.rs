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
//! command ends) — the projected ServiceAccount token and trust-bundle volumes, the app's
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
}

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

/// Adds the sidecar to `object`, of `kind`, in a namespace with `namespace` annotations.
pub fn inject(
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
    let choice = [&annotations, &workload_annotations, &labels, namespace].into_iter().find_map(|a| a.get(keys::INJECT));
    if choice.is_some_and(|c| c == "disabled") {
        return Ok(Outcome::OptedOut);
    }
    let settings = Settings::new(options, namespace, &annotations)?;
    let service = service_name(&settings, &labels, workload_name)?;

    let spec = pod.get_mut("spec").and_then(Value::as_object_mut).ok_or_else(|| malformed(kind, "spec"))?;
    refuse_our_names(spec, kind)?;
    let runs_to_completion =
        matches!(spec.get("restartPolicy").and_then(Value::as_str), Some("Never" | "OnFailure"));
    let containers =
        spec.get_mut("containers").and_then(Value::as_array_mut).ok_or_else(|| malformed(kind, "spec.containers"))?;
    let rewritten = probes::rewrite(containers);
    let mut warnings = rewritten.warnings;
    if !settings.native_sidecar && runs_to_completion {
        warnings.extend(wrap_commands(containers));
    }
    let app_probes = (!rewritten.app_probes.is_empty()).then(|| Value::Object(rewritten.app_probes).to_string());
    let proxy = sidecar::proxy_container(&settings, &service, app_probes);
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
        annotations.insert(keys::ORIGINAL_PROBES.into(), Value::Object(rewritten.originals).to_string().into());
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
        .map(|text| serde_json::from_str::<Map<String, Value>>(text))
        .transpose()
        .map_err(|e| InjectError::Malformed(format!("{kind}: annotation {}: {e}", keys::ORIGINAL_PROBES)))?;
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        for field in ["initContainers", "containers", "volumes"] {
            if let Some(items) = spec.get_mut(field).and_then(Value::as_array_mut) {
                items.retain(|item| !sidecar::is_ours(item) && !(field == "volumes" && sidecar::is_our_volume(item)));
            }
        }
        let runs_to_completion =
            matches!(spec.get("restartPolicy").and_then(Value::as_str), Some("Never" | "OnFailure"));
        if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            if runs_to_completion {
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
fn service_name(settings: &Settings, labels: &Annotations, workload: Option<String>) -> Result<String, InjectError> {
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
fn list<'a>(map: &'a mut Map<String, Value>, field: &str, kind: &str) -> Result<&'a mut Vec<Value>, InjectError> {
    map.entry(field).or_insert_with(|| Value::Array(Vec::new())).as_array_mut().ok_or_else(|| malformed(kind, field))
}

/// Injection's names must be free: a container or volume of the app by one of them would be
/// taken for injection's own by uninject.
fn refuse_our_names(spec: &Map<String, Value>, kind: &str) -> Result<(), InjectError> {
    for field in ["containers", "initContainers", "volumes"] {
        let items = spec.get(field).map(|v| v.as_array().ok_or_else(|| malformed(kind, field))).transpose()?;
        let ours = |item: &&Value| if field == "volumes" { sidecar::is_our_volume(item) } else { sidecar::is_ours(item) };
        if let Some(taken) = items.into_iter().flatten().find(ours) {
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
fn object_field<'a>(map: &'a mut Map<String, Value>, field: &str, kind: &str) -> Result<&'a mut Map<String, Value>, InjectError> {
    map.entry(field).or_insert_with(|| Value::Object(Map::new())).as_object_mut().ok_or_else(|| malformed(kind, field))
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
