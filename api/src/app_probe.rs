//! The app's own probes, as the injector hands them to the sidecar in `PILOTFISH_APP_PROBES`.
//!
//! In an injected pod the kubelet's `httpGet` and `tcpSocket` probes of an app container go to
//! the sidecar's status port as `GET /app-health/<container>/<liveness|readiness|startup>`
//! (under interception and strict mTLS the kubelet could not reach the app itself), and this
//! map says where each such path goes on the app's loopback. `pilotfish inject` and the webhook
//! write it; `pilotfish sidecar` reads it; both use these types.
//!
//! The JSON: `{"/app-health/web/readiness": {"port": 8080, "path": "/healthz", "scheme":
//! "HTTP", "headers": [["x-probe", "1"]]}, "/app-health/web/liveness": {"tcp": 8080}}`;
//! `timeoutSeconds` may be given too (the probe's own, default 1 as in Kubernetes). Unknown
//! fields are tolerated: an injector one version ahead of the sidecar may add some.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::field::FieldError;

/// Where forwarded probes live on the status port.
pub const APP_HEALTH_PREFIX: &str = "/app-health/";

/// The env var that carries the map to the sidecar.
pub const APP_PROBES_ENV: &str = "PILOTFISH_APP_PROBES";

/// The kubelet's three probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [ProbeKind::Liveness, ProbeKind::Readiness, ProbeKind::Startup].into_iter().find(|k| k.as_str() == s)
    }
}

/// Status-port path → the probe it forwards to. Built by [`AppProbes::insert`] or
/// [`AppProbes::parse`], so every path and probe in it is valid.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct AppProbes(BTreeMap<String, AppProbe>);

/// One probe of the app, sent to `127.0.0.1:<port>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AppProbe {
    /// `tcpSocket`: healthy when a connection opens.
    Tcp {
        tcp: u16,
        #[serde(rename = "timeoutSeconds", default, skip_serializing_if = "Option::is_none")]
        timeout_seconds: Option<u32>,
    },
    /// `httpGet`: the app's status is the answer.
    Http(HttpProbe),
}

/// An `httpGet` probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpProbe {
    pub port: u16,
    #[serde(default = "root")]
    pub path: String,
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(rename = "timeoutSeconds", default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

/// As in Kubernetes: HTTPS probes do not verify the app's certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

fn root() -> String {
    "/".into()
}

/// Kubernetes' `timeoutSeconds` default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Far above any sensible probe; keeps a forwarded probe from holding a connection for hours.
const MAX_TIMEOUT_SECONDS: u32 = 600;

impl AppProbe {
    /// How long the sidecar waits for the app (the kubelet gives up after the same time).
    pub fn timeout(&self) -> Duration {
        let seconds = match self {
            AppProbe::Tcp { timeout_seconds, .. } => timeout_seconds,
            AppProbe::Http(http) => &http.timeout_seconds,
        };
        seconds.map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s.into()))
    }

    pub fn port(&self) -> u16 {
        match self {
            AppProbe::Tcp { tcp, .. } => *tcp,
            AppProbe::Http(http) => http.port,
        }
    }

    fn validate(&self, field: &str) -> Result<(), FieldError> {
        let timeout = match self {
            AppProbe::Tcp { timeout_seconds, .. } => timeout_seconds,
            AppProbe::Http(http) => &http.timeout_seconds,
        };
        if self.port() == 0 {
            return Err(FieldError::new(format!("{field}.port"), "must be 1-65535"));
        }
        if timeout.is_some_and(|s| !(1..=MAX_TIMEOUT_SECONDS).contains(&s)) {
            return Err(FieldError::new(
                format!("{field}.timeoutSeconds"),
                format!("must be 1-{MAX_TIMEOUT_SECONDS}"),
            ));
        }
        let AppProbe::Http(http) = self else { return Ok(()) };
        // The path goes into a request line as it is.
        if !http.path.starts_with('/') || http.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(FieldError::new(
                format!("{field}.path"),
                "must start with / and hold no spaces or control characters",
            ));
        }
        for (i, (name, value)) in http.headers.iter().enumerate() {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(FieldError::new(format!("{field}.headers[{i}]"), "not a valid header name"));
            }
            if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
                return Err(FieldError::new(
                    format!("{field}.headers[{i}]"),
                    "a header value holds no control characters",
                ));
            }
        }
        Ok(())
    }
}

impl AppProbes {
    /// The status-port path of a container's probe.
    pub fn path(container: &str, kind: ProbeKind) -> String {
        format!("{APP_HEALTH_PREFIX}{container}/{}", kind.as_str())
    }

    /// Adds a container's probe (the injector's side).
    pub fn insert(&mut self, container: &str, kind: ProbeKind, probe: AppProbe) -> Result<(), FieldError> {
        let path = Self::path(container, kind);
        check_path(&path)?;
        probe.validate(&path)?;
        self.0.insert(path, probe);
        Ok(())
    }

    /// Reads the JSON of `PILOTFISH_APP_PROBES` (the sidecar's side); an error names the path
    /// and field. Empty means no probes, as `{}` does.
    pub fn parse(json: &str) -> Result<Self, FieldError> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(json)
            .map_err(|e| FieldError::new(APP_PROBES_ENV, format!("not a JSON object of probes: {e}")))?;
        let mut probes = BTreeMap::new();
        for (path, value) in raw {
            check_path(&path)?;
            let probe: AppProbe = serde_json::from_value(value).map_err(|_| {
                FieldError::new(
                    &path,
                    r#"expected {"port": N, "path": "/x", "scheme": "HTTP"|"HTTPS", "headers": [[k, v]]} or {"tcp": N}"#,
                )
            })?;
            probe.validate(&path)?;
            probes.insert(path, probe);
        }
        Ok(Self(probes))
    }

    /// The probe a status-port path forwards to.
    pub fn get(&self, path: &str) -> Option<&AppProbe> {
        self.0.get(path)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("probes serialize to JSON")
    }
}

/// `/app-health/<container>/<kind>`, the container a DNS-1123 label as Kubernetes requires.
fn check_path(path: &str) -> Result<(), FieldError> {
    let wrong = || {
        FieldError::new(
            path,
            "expected /app-health/<container>/<liveness|readiness|startup>, the container a DNS label",
        )
    };
    let rest = path.strip_prefix(APP_HEALTH_PREFIX).ok_or_else(wrong)?;
    let (container, kind) = rest.split_once('/').ok_or_else(wrong)?;
    let label = |c: &str| {
        (1..=63).contains(&c.len())
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    };
    if !label(container) || ProbeKind::parse(kind).is_none() {
        return Err(wrong());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_format_reads_back() {
        let json = r#"{
            "/app-health/web/readiness": {"port": 8080, "path": "/healthz?full=1", "scheme": "HTTPS", "headers": [["x-probe", "1"]], "timeoutSeconds": 3},
            "/app-health/web/liveness": {"tcp": 8080},
            "/app-health/web-2/startup": {"port": 9090, "later": "tolerated"}
        }"#;
        let probes = AppProbes::parse(json).unwrap();
        assert_eq!(probes.len(), 3);
        let Some(AppProbe::Http(ready)) = probes.get("/app-health/web/readiness") else { panic!() };
        assert_eq!((ready.port, ready.path.as_str(), ready.scheme), (8080, "/healthz?full=1", Scheme::Https));
        assert_eq!(ready.headers, [("x-probe".to_owned(), "1".to_owned())]);
        assert_eq!(probes.get("/app-health/web/readiness").unwrap().timeout(), Duration::from_secs(3));
        let live = probes.get("/app-health/web/liveness").unwrap();
        assert_eq!((live.port(), live.timeout()), (8080, Duration::from_secs(1)));
        let Some(AppProbe::Http(start)) = probes.get("/app-health/web-2/startup") else { panic!() };
        assert_eq!((start.path.as_str(), start.scheme), ("/", Scheme::Http));
    }

    #[test]
    fn what_the_injector_writes_the_sidecar_reads() {
        let mut probes = AppProbes::default();
        let http = HttpProbe {
            port: 8080,
            path: "/ready".into(),
            scheme: Scheme::Http,
            headers: vec![("Host".into(), "web.local".into())],
            timeout_seconds: Some(2),
        };
        probes.insert("web", ProbeKind::Readiness, AppProbe::Http(http)).unwrap();
        probes
            .insert("web", ProbeKind::Liveness, AppProbe::Tcp { tcp: 8080, timeout_seconds: None })
            .unwrap();
        assert_eq!(AppProbes::parse(&probes.to_json()).unwrap(), probes);
        assert!(AppProbes::parse(" ").unwrap().is_empty() && AppProbes::parse("{}").unwrap().is_empty());
        assert!(
            probes.to_json().contains(r#""/app-health/web/liveness":{"tcp":8080}"#),
            "{}",
            probes.to_json()
        );
    }

    #[test]
    fn bad_input_names_the_path_and_field() {
        let cases = [
            ("[]", "PILOTFISH_APP_PROBES"),
            (r#"{"/healthz": {"tcp": 1}}"#, "/healthz"),
            (r#"{"/app-health/Web/liveness": {"tcp": 1}}"#, "/app-health/Web/liveness"),
            (r#"{"/app-health/web/alive": {"tcp": 1}}"#, "/app-health/web/alive"),
            (r#"{"/app-health/web/liveness": {"path": "/x"}}"#, "/app-health/web/liveness"),
            (r#"{"/app-health/web/liveness": {"tcp": 0}}"#, "/app-health/web/liveness.port"),
            (r#"{"/app-health/web/liveness": {"port": 1, "path": "x"}}"#, "/app-health/web/liveness.path"),
            (r#"{"/app-health/web/liveness": {"port": 1, "path": "/a b"}}"#, "/app-health/web/liveness.path"),
            (
                r#"{"/app-health/web/liveness": {"port": 1, "headers": [["a b", "c"]]}}"#,
                "/app-health/web/liveness.headers[0]",
            ),
            (
                r#"{"/app-health/web/liveness": {"port": 1, "headers": [["a", "c\r\nx: y"]]}}"#,
                "/app-health/web/liveness.headers[0]",
            ),
            (
                r#"{"/app-health/web/liveness": {"tcp": 1, "timeoutSeconds": 0}}"#,
                "/app-health/web/liveness.timeoutSeconds",
            ),
        ];
        for (json, field) in cases {
            let err = AppProbes::parse(json).unwrap_err();
            assert_eq!(err.field, field, "{json}: {}", err.reason);
        }
    }
}
