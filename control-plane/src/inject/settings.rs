//! What an injection is told: the [`Options`] of whoever injects (the CLI's flags, the webhook's
//! defaults), and the `pilotfish.io/*` annotations of the pod and its namespace (the pod's win),
//! read once into [`Settings`], whose values are checked so the containers built from them are
//! valid.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use pilotfish_api::document::validate_name;

use super::InjectError;

/// Annotations (or labels) of one object: key → value.
pub type Annotations = BTreeMap<String, String>;

/// The annotation keys, the same on pods and namespaces (`/work/k8s-contract.md`).
pub mod keys {
    pub const INJECT: &str = "pilotfish.io/inject";
    pub const SKIP_INBOUND_PORTS: &str = "pilotfish.io/skip-inbound-ports";
    pub const SKIP_OUTBOUND_PORTS: &str = "pilotfish.io/skip-outbound-ports";
    pub const OPAQUE_PORTS: &str = "pilotfish.io/opaque-ports";
    pub const SKIP_OUTBOUND_CIDRS: &str = "pilotfish.io/skip-outbound-cidrs";
    pub const LOG_LEVEL: &str = "pilotfish.io/log-level";
    pub const CPU_REQUEST: &str = "pilotfish.io/proxy-cpu-request";
    pub const MEMORY_REQUEST: &str = "pilotfish.io/proxy-memory-request";
    pub const CPU_LIMIT: &str = "pilotfish.io/proxy-cpu-limit";
    pub const MEMORY_LIMIT: &str = "pilotfish.io/proxy-memory-limit";
    pub const NATIVE_SIDECAR: &str = "pilotfish.io/native-sidecar";
    pub const DRAIN_DELAY: &str = "pilotfish.io/drain-delay";
    pub const IMAGE: &str = "pilotfish.io/image";
    pub const SERVICE: &str = "pilotfish.io/service";
    /// The marker of an injected pod template; its value is the injector's version.
    pub const INJECTED: &str = "pilotfish.io/injected";
    /// The app's probes as they were before injection rewrote them (JSON), for uninject.
    pub const ORIGINAL_PROBES: &str = "pilotfish.io/original-probes";
}

/// The control plane's address when none is given: its Service in the `pilotfish` namespace.
pub const DEFAULT_CONTROL_PLANE: &str = "https://pilotfish-control-plane.pilotfish.svc:15100";
/// How long a terminating proxy keeps serving before it drains, when no annotation says: long
/// enough for the endpoint's removal to reach every caller (linkerd2#8214).
pub const DEFAULT_DRAIN_DELAY: &str = "5s";
/// The proxy's log filter when no annotation says.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The image of this version of Pilotfish.
pub fn default_image() -> String {
    format!("ghcr.io/pilotfish/pilotfish:{}", env!("CARGO_PKG_VERSION"))
}

pub const DEFAULT_CPU_REQUEST: &str = "100m";
pub const DEFAULT_MEMORY_REQUEST: &str = "64Mi";
pub const DEFAULT_MEMORY_LIMIT: &str = "256Mi";

/// The proxy's resources (Kubernetes quantities). Defaults: a request that fits a proxy at
/// moderate load (about 12 MiB resident under load in the benchmarks) and a memory limit with
/// room for bursts; no CPU limit, because CFS throttling shows up as tail latency on every
/// request through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu_request: Some(DEFAULT_CPU_REQUEST.into()),
            memory_request: Some(DEFAULT_MEMORY_REQUEST.into()),
            cpu_limit: None,
            memory_limit: Some(DEFAULT_MEMORY_LIMIT.into()),
        }
    }
}

/// What the injector itself is told (CLI flags, the control plane's settings); annotations
/// override the image and resources per pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The control plane's URL, as the proxies reach it.
    pub control_plane: String,
    pub image: String,
    pub resources: Resources,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            control_plane: DEFAULT_CONTROL_PLANE.into(),
            image: default_image(),
            resources: Resources::default(),
        }
    }
}

/// An injection's settings, from [`Options`] and the merged annotations, every value checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub control_plane: String,
    pub image: String,
    pub resources: Resources,
    /// `false` for clusters before 1.29: the proxy as the first regular container.
    pub native_sidecar: bool,
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_ports: Vec<u16>,
    pub opaque_ports: Vec<u16>,
    pub skip_outbound_cidrs: Vec<String>,
    pub log_level: String,
    pub drain_delay: String,
    /// The `pilotfish.io/service` annotation, if set.
    pub service: Option<String>,
}

/// Whether `annotations` (or labels) opt the pod out.
pub fn opted_out(annotations: &Annotations) -> bool {
    annotations.get(keys::INJECT).is_some_and(|v| v == "disabled")
}

impl Settings {
    /// The settings of a pod with `pod` annotations in a namespace with `namespace`
    /// annotations: for each key, the pod's value if it has one.
    pub fn new(options: &Options, namespace: &Annotations, pod: &Annotations) -> Result<Self, InjectError> {
        let get = |key: &str| pod.get(key).or_else(|| namespace.get(key)).map(String::as_str);
        if let Some(value) = get(keys::INJECT) {
            if value != "enabled" && value != "disabled" {
                return Err(bad(keys::INJECT, value, "use enabled or disabled"));
            }
        }
        let quantity = |key: &str, default: &Option<String>| match get(key) {
            Some(v) if is_quantity(v) => Ok(Some(v.to_owned())),
            Some(v) => Err(bad(key, v, "not a Kubernetes quantity (e.g. 100m, 64Mi)")),
            None => Ok(default.clone()),
        };
        let r = &options.resources;
        Ok(Self {
            control_plane: options.control_plane.clone(),
            image: match get(keys::IMAGE) {
                Some(v) if v.trim().is_empty() || v.contains(char::is_whitespace) => {
                    return Err(bad(keys::IMAGE, v, "not an image reference"))
                }
                Some(v) => v.to_owned(),
                None => options.image.clone(),
            },
            resources: Resources {
                cpu_request: quantity(keys::CPU_REQUEST, &r.cpu_request)?,
                memory_request: quantity(keys::MEMORY_REQUEST, &r.memory_request)?,
                cpu_limit: quantity(keys::CPU_LIMIT, &r.cpu_limit)?,
                memory_limit: quantity(keys::MEMORY_LIMIT, &r.memory_limit)?,
            },
            native_sidecar: match get(keys::NATIVE_SIDECAR) {
                None | Some("true") => true,
                Some("false") => false,
                Some(v) => return Err(bad(keys::NATIVE_SIDECAR, v, "use true or false")),
            },
            skip_inbound_ports: ports(keys::SKIP_INBOUND_PORTS, get(keys::SKIP_INBOUND_PORTS))?,
            skip_outbound_ports: ports(keys::SKIP_OUTBOUND_PORTS, get(keys::SKIP_OUTBOUND_PORTS))?,
            opaque_ports: ports(keys::OPAQUE_PORTS, get(keys::OPAQUE_PORTS))?,
            skip_outbound_cidrs: cidrs(get(keys::SKIP_OUTBOUND_CIDRS))?,
            log_level: match get(keys::LOG_LEVEL) {
                Some(v) if v.is_empty() || v.contains(char::is_whitespace) => {
                    return Err(bad(keys::LOG_LEVEL, v, "a log filter such as info or pilotfish=debug"))
                }
                Some(v) => v.to_owned(),
                None => DEFAULT_LOG_LEVEL.to_owned(),
            },
            drain_delay: match get(keys::DRAIN_DELAY) {
                Some(v) if v.parse::<pilotfish_api::Duration>().is_ok() => v.to_owned(),
                Some(v) => return Err(bad(keys::DRAIN_DELAY, v, "a duration such as 5s or 1m30s")),
                None => DEFAULT_DRAIN_DELAY.to_owned(),
            },
            service: match get(keys::SERVICE) {
                Some(v) => {
                    validate_name(v).map_err(|why| bad(keys::SERVICE, v, &why))?;
                    Some(v.to_owned())
                }
                None => None,
            },
        })
    }
}

fn bad(key: &str, value: &str, why: &str) -> InjectError {
    InjectError::Annotation { key: key.to_owned(), value: value.to_owned(), why: why.to_owned() }
}

/// A comma-separated list of ports (`8080,9090`; spaces allowed).
fn ports(key: &str, value: Option<&str>) -> Result<Vec<u16>, InjectError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u16>().ok().filter(|&p| p != 0))
        .collect::<Option<Vec<u16>>>()
        .ok_or_else(|| bad(key, value, "a comma-separated list of ports 1-65535"))
}

/// A comma-separated list of CIDRs (`10.0.0.0/8,fd00::/8`), each an address and a prefix
/// length that fits it.
fn cidrs(value: Option<&str>) -> Result<Vec<String>, InjectError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let cidr = |c: &str| {
        let (address, prefix) = c.split_once('/')?;
        let address: IpAddr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        (prefix <= if address.is_ipv4() { 32 } else { 128 }).then(|| c.to_owned())
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(cidr)
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| {
            bad(keys::SKIP_OUTBOUND_CIDRS, value, "a comma-separated list of CIDRs such as 10.0.0.0/8")
        })
}

/// A Kubernetes resource quantity (`100m`, `64Mi`, `1.5`, `1e3`), as the API server parses them.
pub fn is_quantity(text: &str) -> bool {
    static QUANTITY: OnceLock<regex::Regex> = OnceLock::new();
    QUANTITY
        .get_or_init(|| {
            regex::Regex::new(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
                .expect("the quantity pattern compiles")
        })
        .is_match(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> Annotations {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_pods_annotations_win_over_the_namespaces_key_by_key() {
        let namespace = annotations(&[(keys::LOG_LEVEL, "debug"), (keys::SKIP_OUTBOUND_PORTS, "5432")]);
        let pod = annotations(&[(keys::LOG_LEVEL, "warn")]);
        let settings = Settings::new(&Options::default(), &namespace, &pod).unwrap();
        assert_eq!(settings.log_level, "warn");
        assert_eq!(settings.skip_outbound_ports, [5432]);
        assert_eq!(settings.drain_delay, DEFAULT_DRAIN_DELAY);
        assert!(settings.native_sidecar);
    }

    #[test]
    fn bad_values_are_refused_naming_the_annotation() {
        for (key, value) in [
            (keys::SKIP_INBOUND_PORTS, "80,http"),
            (keys::SKIP_INBOUND_PORTS, "70000"),
            (keys::SKIP_OUTBOUND_CIDRS, "10.0.0.0/33"),
            (keys::SKIP_OUTBOUND_CIDRS, "10.0.0.0"),
            (keys::CPU_LIMIT, "lots"),
            (keys::NATIVE_SIDECAR, "yes"),
            (keys::DRAIN_DELAY, "5 seconds"),
            (keys::SERVICE, "My_Service"),
            (keys::INJECT, "maybe"),
        ] {
            let err = Settings::new(&Options::default(), &Annotations::new(), &annotations(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains(value), "{key}={value}: {err}");
        }
    }

    #[test]
    fn lists_take_spaces_and_quantities_take_the_api_servers_forms() {
        let pod = annotations(&[
            (keys::SKIP_OUTBOUND_CIDRS, "10.0.0.0/8, fd00::/8"),
            (keys::OPAQUE_PORTS, " 3306 ,5432"),
        ]);
        let settings = Settings::new(&Options::default(), &Annotations::new(), &pod).unwrap();
        assert_eq!(settings.skip_outbound_cidrs, ["10.0.0.0/8", "fd00::/8"]);
        assert_eq!(settings.opaque_ports, [3306, 5432]);
        for ok in ["100m", "1", "0.5", "64Mi", "1Gi", "1e3", "2k"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "64MB", "1 Gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
