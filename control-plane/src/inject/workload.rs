//! Where each injectable kind keeps its pod: the object itself for a Pod, `spec.template` for
//! the controllers, `spec.jobTemplate.spec.template` for a CronJob. Everything else is not a
//! workload and is left alone.

use serde_json::{Map, Value};

use super::settings::Annotations;
use super::InjectError;

/// The JSON pointer of the pod (template) in an object of `kind`, if it is a workload.
pub fn pod_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// The pod (template) of `object` of `kind` (`kind` as the object or the admission request
/// says), or `None` when the kind is not a workload.
pub fn pod_template<'a>(
    object: &'a mut Value,
    kind: &str,
) -> Result<Option<&'a mut Map<String, Value>>, InjectError> {
    let Some(pointer) = pod_pointer(kind) else { return Ok(None) };
    let template = object.pointer_mut(pointer).and_then(Value::as_object_mut).ok_or_else(|| {
        let at = if pointer.is_empty() { "the object".to_owned() } else { pointer[1..].replace('/', ".") };
        InjectError::Malformed(format!("{kind}: {at} is not an object"))
    })?;
    Ok(Some(template))
}

/// The string map at `metadata.<field>` of `object` (labels, annotations); empty when absent.
pub fn string_map(object: &Map<String, Value>, field: &str) -> Annotations {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|map| map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

/// The name of the workload `object` belongs to: its controller's (a Deployment's pods and
/// ReplicaSets are named after the Deployment, without the `pod-template-hash` suffix; a
/// StatefulSet's pods after the set), else `metadata.name`, else `metadata.generateName` without
/// its trailing `-` (a pod a controller creates is named by the API server after admission).
/// So every pod of one workload is one service, whichever way it was injected.
pub fn name(object: &Value) -> Option<String> {
    let metadata = object.get("metadata")?;
    let controller = metadata
        .get("ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true));
    if let Some(owner) = controller {
        let name = owner.get("name").and_then(Value::as_str).unwrap_or_default();
        let hash = metadata.pointer("/labels/pod-template-hash").and_then(Value::as_str);
        let is_replica_set = owner.get("kind").and_then(Value::as_str) == Some("ReplicaSet");
        let name = match hash.filter(|_| is_replica_set) {
            Some(hash) => name.strip_suffix(hash).and_then(|n| n.strip_suffix('-')).unwrap_or(name),
            None => name,
        };
        if !name.is_empty() {
            return Some(name.to_owned());
        }
    }
    if let Some(name) = metadata.get("name").and_then(Value::as_str) {
        return Some(name.to_owned());
    }
    metadata.get("generateName").and_then(Value::as_str).map(|g| g.trim_end_matches('-').to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pod_is_named_after_its_controller() {
        let pod = |owner: Value, labels: Value| json!({"metadata": {"generateName": "x-", "labels": labels, "ownerReferences": [owner]}});
        let rs = json!({"kind": "ReplicaSet", "name": "web-7d9f5c6b8", "controller": true});
        assert_eq!(name(&pod(rs.clone(), json!({"pod-template-hash": "7d9f5c6b8"}))).as_deref(), Some("web"));
        assert_eq!(
            name(&pod(rs, json!({}))).as_deref(),
            Some("web-7d9f5c6b8"),
            "a bare ReplicaSet's own name"
        );
        let sts = json!({"kind": "StatefulSet", "name": "db", "controller": true});
        assert_eq!(name(&pod(sts, json!({}))).as_deref(), Some("db"));
        let not_controller = json!({"kind": "ConfigMap", "name": "cfg"});
        assert_eq!(name(&pod(not_controller, json!({}))).as_deref(), Some("x"));
    }

    #[test]
    fn each_kind_has_its_pod_where_kubernetes_keeps_it() {
        let mut cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}});
        assert!(pod_template(&mut cron, "CronJob").unwrap().unwrap().contains_key("spec"));
        let mut service = json!({"spec": {"ports": []}});
        assert!(pod_template(&mut service, "Service").unwrap().is_none());
        let mut broken = json!({"spec": {"template": 3}});
        let err = pod_template(&mut broken, "Deployment").unwrap_err().to_string();
        assert!(err.contains("spec.template"), "{err}");
    }

    #[test]
    fn a_pod_without_a_name_is_named_by_its_generate_name() {
        assert_eq!(name(&json!({"metadata": {"generateName": "web-7d9f-"}})).as_deref(), Some("web-7d9f"));
        assert_eq!(name(&json!({"metadata": {"name": "web"}})).as_deref(), Some("web"));
        assert_eq!(name(&json!({})), None);
    }
}
