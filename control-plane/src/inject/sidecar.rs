//! What injection adds to a pod: the `pilotfish-init` container (the interception rules), the
//! `pilotfish-proxy` container (the sidecar, native or legacy), and their volumes (the
//! projected ServiceAccount token and the mesh's trust bundle). The names, ports and UID are
//! the contract the sidecar, `pilotfish init` and `deploy/` rely on.

use serde_json::{json, Value};

use super::settings::{Resources, Settings};

pub const INIT_CONTAINER: &str = "pilotfish-init";
pub const PROXY_CONTAINER: &str = "pilotfish-proxy";
pub const TOKEN_VOLUME: &str = "pilotfish-token";
pub const CA_VOLUME: &str = "pilotfish-ca";
/// A writable `/run` for `pilotfish-init`, whose root filesystem is read-only: iptables takes
/// its lock file there (`/run/xtables.lock`).
pub const XTABLES_VOLUME: &str = "pilotfish-xtables";
/// The ConfigMap the control plane keeps current in every namespace labelled for injection.
pub const CA_CONFIG_MAP: &str = "pilotfish-ca";

/// The proxy's UID and GID: its own traffic is what the interception rules let through.
pub const PROXY_UID: u16 = 2102;
/// Where iptables redirects the app's outbound traffic (on loopback).
pub const OUTBOUND_PORT: u16 = 15001;
/// Where iptables redirects inbound traffic.
pub const INBOUND_PORT: u16 = 15006;
/// The admin listener, loopback only: `/config`, `/metrics`, `/shutdown`.
pub const ADMIN_PORT: u16 = 15000;
/// The status listener the kubelet reaches on the pod IP: `/ready`, `/live`, `/app-health/...`.
pub const STATUS_PORT: u16 = 15021;

const TOKEN_DIR: &str = "/var/run/secrets/pilotfish";
const CA_DIR: &str = "/var/run/pilotfish/ca";
/// The projected token's audience: what TokenReview checks a CSR's bootstrap credential for.
const TOKEN_AUDIENCE: &str = "pilotfish";
const TOKEN_SECONDS: u64 = 3600;

/// `pilotfish-init`: installs the interception rules, as root with NET_ADMIN and NET_RAW only.
/// The admin and status ports are never intercepted inbound (the kubelet probes the status
/// port; the admin port answers only loopback).
pub fn init_container(settings: &Settings) -> Value {
    let mut skip_inbound = vec![ADMIN_PORT, STATUS_PORT];
    skip_inbound
        .extend(settings.skip_inbound_ports.iter().filter(|p| !skip_inbound.contains(p)).collect::<Vec<_>>());
    let mut args = vec![
        "init".to_owned(),
        "--proxy-uid".to_owned(),
        PROXY_UID.to_string(),
        "--inbound-port".to_owned(),
        INBOUND_PORT.to_string(),
        "--outbound-port".to_owned(),
        OUTBOUND_PORT.to_string(),
        "--exclude-inbound-ports".to_owned(),
        join(&skip_inbound),
    ];
    if !settings.skip_outbound_ports.is_empty() {
        args.extend(["--exclude-outbound-ports".to_owned(), join(&settings.skip_outbound_ports)]);
    }
    if !settings.skip_outbound_cidrs.is_empty() {
        args.extend(["--exclude-outbound-cidrs".to_owned(), settings.skip_outbound_cidrs.join(",")]);
    }
    json!({
        "name": INIT_CONTAINER,
        "image": settings.image,
        "command": ["pilotfish"],
        "args": args,
        "resources": resources(&settings.resources),
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
        "volumeMounts": [{"name": XTABLES_VOLUME, "mountPath": "/run"}],
    })
}

/// `pilotfish-proxy`, with `app_probes` (`PILOTFISH_APP_PROBES`) if the app has probes it
/// answers for. Native: restarted always and started up (probed on `/ready`) before the app's
/// containers start. Legacy: a regular container whose postStart hook holds the next
/// containers back until it is ready.
pub fn proxy_container(
    settings: &Settings,
    service: &str,
    app_port: u16,
    app_probes: Option<String>,
) -> Value {
    let args = [
        "sidecar",
        "--control-plane",
        &settings.control_plane,
        "--service",
        service,
        "--namespace",
        "$(POD_NAMESPACE)",
        "--no-register",
        "--inbound",
        &format!("0.0.0.0:{INBOUND_PORT}"),
        "--app",
        &format!("127.0.0.1:{app_port}"),
        "--outbound",
        &format!("127.0.0.1:{OUTBOUND_PORT}"),
        "--admin",
        &format!("127.0.0.1:{ADMIN_PORT}"),
        "--status",
        &format!("0.0.0.0:{STATUS_PORT}"),
        "--drain-delay",
        &settings.drain_delay,
    ];
    let mut env = vec![
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": "PILOTFISH_TOKEN_FILE", "value": format!("{TOKEN_DIR}/token")}),
        json!({"name": "PILOTFISH_CA_FILE", "value": format!("{CA_DIR}/ca.pem")}),
        json!({"name": "RUST_LOG", "value": settings.log_level}),
    ];
    if !settings.opaque_ports.is_empty() {
        env.push(json!({"name": "PILOTFISH_OPAQUE_PORTS", "value": join(&settings.opaque_ports)}));
    }
    if let Some(probes) = app_probes {
        env.push(json!({"name": "PILOTFISH_APP_PROBES", "value": probes}));
    }
    let status_probe = |path: &str| json!({"httpGet": {"path": path, "port": STATUS_PORT}});
    let mut proxy = json!({
        "name": PROXY_CONTAINER,
        "image": settings.image,
        "command": ["pilotfish"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "pf-inbound", "containerPort": INBOUND_PORT, "protocol": "TCP"},
            {"name": "pf-status", "containerPort": STATUS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": status_probe("/ready"),
        "livenessProbe": status_probe("/live"),
        "resources": resources(&settings.resources),
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": true},
        ],
    });
    let fields = proxy.as_object_mut().expect("built as an object");
    if settings.native_sidecar {
        fields.insert("restartPolicy".into(), "Always".into());
        // Up to two minutes (a cold control plane, a slow image pull of the app's sidecars).
        let mut startup = status_probe("/ready");
        startup["periodSeconds"] = 1.into();
        startup["failureThreshold"] = 120.into();
        fields.insert("startupProbe".into(), startup);
    } else {
        fields
            .insert("lifecycle".into(), json!({"postStart": {"exec": {"command": ["pilotfish", "await"]}}}));
    }
    proxy
}

/// The volumes the containers mount. The CA ConfigMap is required: a pod that cannot verify the
/// control plane must not start (its event says the ConfigMap is missing: label the namespace
/// `pilotfish.io/inject=enabled` so the control plane creates it).
pub fn volumes() -> [Value; 3] {
    [
        json!({"name": XTABLES_VOLUME, "emptyDir": {}}),
        json!({
            "name": TOKEN_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": TOKEN_AUDIENCE, "expirationSeconds": TOKEN_SECONDS, "path": "token",
            }}]},
        }),
        json!({"name": CA_VOLUME, "configMap": {"name": CA_CONFIG_MAP, "items": [{"key": "ca.pem", "path": "ca.pem"}]}}),
    ]
}

fn resources(r: &Resources) -> Value {
    let pick = |cpu: &Option<String>, memory: &Option<String>| {
        let mut map = serde_json::Map::new();
        if let Some(cpu) = cpu {
            map.insert("cpu".into(), cpu.clone().into());
        }
        if let Some(memory) = memory {
            map.insert("memory".into(), memory.clone().into());
        }
        map
    };
    let mut out = serde_json::Map::new();
    for (field, values) in [
        ("requests", pick(&r.cpu_request, &r.memory_request)),
        ("limits", pick(&r.cpu_limit, &r.memory_limit)),
    ] {
        if !values.is_empty() {
            out.insert(field.into(), values.into());
        }
    }
    out.into()
}

fn join(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// Whether `container` is one injection added.
pub fn is_ours(container: &Value) -> bool {
    matches!(container.get("name").and_then(Value::as_str), Some(INIT_CONTAINER | PROXY_CONTAINER))
}

/// Whether an item of the pod spec's list `field` (`containers`, `initContainers`,
/// `volumes`) is one injection added: by its name, which is why the app may not use them.
pub fn added_to(field: &str) -> fn(&Value) -> bool {
    match field {
        "volumes" => |volume| {
            matches!(
                volume.get("name").and_then(Value::as_str),
                Some(TOKEN_VOLUME | CA_VOLUME | XTABLES_VOLUME)
            )
        },
        _ => is_ours,
    }
}
