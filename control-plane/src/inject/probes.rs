//! The app's probes under interception. The kubelet probes from outside the pod, so with
//! interception a probe of the app's port would meet the inbound listener, which (strict mTLS)
//! refuses the kubelet's plaintext. Exempting the port instead would open it in plaintext to
//! anyone, so the probes are rewritten: an `httpGet` or `tcpSocket` probe of the pod's own
//! address becomes `GET /app-health/<container>/<kind>` on the proxy's status port, which
//! forwards it to `127.0.0.1` (not intercepted) as `PILOTFISH_APP_PROBES` says and answers with
//! its result. The originals go into the `pilotfish.io/original-probes` annotation, so uninject
//! puts them back as they were. `exec` probes run in the container and need nothing; `grpc`
//! probes are left as they are and warned about (the port needs `skip-inbound-ports`).

use serde_json::{json, Map, Value};

use super::sidecar::STATUS_PORT;

const KINDS: [(&str, &str); 3] =
    [("livenessProbe", "liveness"), ("readinessProbe", "readiness"), ("startupProbe", "startup")];

/// What rewriting a pod's probes made.
#[derive(Debug, Default)]
pub struct Rewritten {
    /// `PILOTFISH_APP_PROBES`: status path → where and how to probe the app.
    pub app_probes: Map<String, Value>,
    /// container → probe field → the probe as it was.
    pub originals: Map<String, Value>,
    pub warnings: Vec<String>,
}

/// Rewrites the probes of `containers` (the app's) in place.
pub fn rewrite(containers: &mut [Value]) -> Rewritten {
    let mut out = Rewritten::default();
    for container in containers.iter_mut().filter_map(Value::as_object_mut) {
        let name = container.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let ports = container.get("ports").cloned().unwrap_or(Value::Null);
        for (field, kind) in KINDS {
            let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) else { continue };
            let target = match target(probe, &ports) {
                Ok(Some(target)) => target,
                Ok(None) => continue,
                Err(why) => {
                    out.warnings.push(format!("container {name:?}: {field} left as it is: {why}"));
                    continue;
                }
            };
            let path = format!("/app-health/{name}/{kind}");
            out.originals
                .entry(name.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("inserted as an object")
                .insert(field.to_owned(), Value::Object(probe.clone()));
            probe.remove("httpGet");
            probe.remove("tcpSocket");
            probe.insert("httpGet".into(), json!({"path": path, "port": STATUS_PORT, "scheme": "HTTP"}));
            out.app_probes.insert(path, target);
        }
    }
    out
}

/// Where the status port forwards `probe` to; `None` for probes it does not take over (exec,
/// none); an error for probes that would break but cannot be taken over.
fn target(probe: &Map<String, Value>, ports: &Value) -> Result<Option<Value>, String> {
    let elsewhere =
        |handler: &Value| handler.get("host").and_then(Value::as_str).is_some_and(|h| !h.is_empty());
    if let Some(http) = probe.get("httpGet") {
        if elsewhere(http) {
            return Ok(None);
        }
        let port = port(http.get("port"), ports)?;
        let headers: Vec<Value> = http
            .get("httpHeaders")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|h| {
                json!([
                    h.get("name").cloned().unwrap_or_default(),
                    h.get("value").cloned().unwrap_or_default()
                ])
            })
            .collect();
        // The kubelet puts a missing leading slash back; so does the status port's target.
        let path = http.get("path").and_then(Value::as_str).unwrap_or_default();
        let path = match path.starts_with('/') {
            true => path.to_owned(),
            false => format!("/{path}"),
        };
        let scheme = http.get("scheme").and_then(Value::as_str).unwrap_or("HTTP");
        let mut target = json!({"port": port, "path": path, "scheme": scheme, "headers": headers});
        target["timeoutSeconds"] = timeout_seconds(probe);
        return Ok(Some(target));
    }
    if let Some(tcp) = probe.get("tcpSocket") {
        if elsewhere(tcp) {
            return Ok(None);
        }
        return Ok(Some(
            json!({"tcp": port(tcp.get("port"), ports)?, "timeoutSeconds": timeout_seconds(probe)}),
        ));
    }
    if probe.contains_key("grpc") {
        return Err("a gRPC probe reaches the app through the inbound listener: list its port in pilotfish.io/skip-inbound-ports".into());
    }
    Ok(None)
}

/// The probe's own `timeoutSeconds` (Kubernetes' default 1), within what the status port takes
/// (1-600 s): the kubelet waits that long for the forwarded answer.
fn timeout_seconds(probe: &Map<String, Value>) -> Value {
    let seconds = probe.get("timeoutSeconds").and_then(Value::as_u64).unwrap_or(1);
    json!(seconds.clamp(1, 600))
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(port: Option<&Value>, ports: &Value) -> Result<u64, String> {
    match port {
        Some(Value::Number(n)) => {
            n.as_u64().filter(|p| (1..=65535).contains(p)).ok_or(format!("port {n} is out of range"))
        }
        Some(Value::String(name)) => ports
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
            .or_else(|| name.parse().ok())
            .filter(|p| (1..=65535).contains(p))
            .ok_or(format!("no container port is named {name:?}")),
        _ => Err("the probe names no port".into()),
    }
}

/// Puts the probes in `originals` (the annotation's value) back into `containers`.
pub fn restore(containers: &mut [Value], originals: &Map<String, Value>) {
    for container in containers.iter_mut().filter_map(Value::as_object_mut) {
        let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
        let Some(probes) = originals.get(name).and_then(Value::as_object) else { continue };
        for (field, probe) in probes {
            container.insert(field.clone(), probe.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_tcp_probes_go_to_the_status_port_and_the_rest_stay() {
        let mut containers = vec![json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "healthz", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 3, "timeoutSeconds": 5},
            "readinessProbe": {"tcpSocket": {"port": 9090}},
            "startupProbe": {"exec": {"command": ["true"]}},
        })];
        let out = rewrite(&mut containers);
        assert_eq!(
            containers[0]["livenessProbe"],
            json!({"httpGet": {"path": "/app-health/web/liveness", "port": 15021, "scheme": "HTTP"}, "periodSeconds": 3, "timeoutSeconds": 5})
        );
        assert_eq!(containers[0]["readinessProbe"]["httpGet"]["path"], "/app-health/web/readiness");
        assert!(containers[0]["readinessProbe"].get("tcpSocket").is_none());
        assert_eq!(containers[0]["startupProbe"], json!({"exec": {"command": ["true"]}}));
        assert_eq!(
            Value::Object(out.app_probes.clone()),
            json!({
                "/app-health/web/liveness": {"port": 8080, "path": "/healthz", "scheme": "HTTP", "headers": [["X-Probe", "1"]], "timeoutSeconds": 5},
                "/app-health/web/readiness": {"tcp": 9090, "timeoutSeconds": 1},
            })
        );
        assert!(out.warnings.is_empty());
        // What the sidecar reads back is what it accepts.
        let json = Value::Object(out.app_probes.clone()).to_string();
        let probes = pilotfish_api::app_probe::AppProbes::parse(&json)
            .expect("the sidecar takes the injector's probes");
        assert_eq!(probes.len(), 2);

        let mut restored = containers.clone();
        restore(&mut restored, &out.originals);
        assert_eq!(restored[0]["livenessProbe"]["httpGet"]["port"], "http");
        assert_eq!(restored[0]["livenessProbe"]["httpGet"]["path"], "healthz", "restored as it was");
        assert_eq!(restored[0]["readinessProbe"], json!({"tcpSocket": {"port": 9090}}));
    }

    #[test]
    fn probes_of_other_hosts_are_kept_and_unresolvable_or_grpc_ones_warned_about() {
        let mut containers = vec![json!({
            "name": "web",
            "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
            "readinessProbe": {"httpGet": {"port": "nope"}},
            "startupProbe": {"grpc": {"port": 9000}},
        })];
        let before = containers.clone();
        let out = rewrite(&mut containers);
        assert_eq!(containers, before);
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings[1].contains("skip-inbound-ports"), "{:?}", out.warnings);
    }
}
