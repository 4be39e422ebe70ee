//! The configuration in force, as one immutable snapshot built off the hot path from validated
//! `api` resources and swapped in atomically. Lookups a request needs (service by host name, by
//! `ADDRESS:PORT`, by local port) are precomputed maps; metric handles and endpoint connection
//! pools are resolved here too (pools carry over from the previous snapshot).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pilotfish_api::sidecar::InboundSpec;
use pilotfish_api::{Protocol, Resource, ServiceSpec, SidecarSpec};

use crate::http::pool::EndpointConns;
use crate::metrics::{Direction, EndpointMetrics, Metrics, TargetMetrics};

/// Command-line settings that take precedence over the file's `Sidecar` document.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub admin: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    pub app: Option<SocketAddr>,
    pub drain: Option<std::time::Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Invalid(#[from] pilotfish_api::ConfigError),
    #[error("{0}")]
    Conflict(String),
}

pub struct Snapshot {
    /// Increments with every accepted configuration.
    pub version: u64,
    /// Hash of the configuration text, to tell a real change from a touched file.
    pub hash: u64,
    pub source: String,
    pub resources: Vec<Resource>,
    /// The effective settings of this sidecar (file plus command-line overrides).
    pub sidecar: SidecarSpec,
    pub name: String,
    pub namespace: String,
    services: HashMap<Arc<str>, Arc<ServiceRt>>,
    by_host: HashMap<String, Arc<ServiceRt>>,
    by_addr: HashMap<SocketAddr, (Arc<ServiceRt>, Option<Protocol>)>,
    pub local_ports: Vec<(u16, Arc<str>)>,
    pub inbound: Option<InboundRt>,
    pub passthrough: TargetMetrics,
    /// Labels requests refused before a service was chosen (no route).
    pub unrouted: EndpointMetrics,
}

/// A service as the request path sees it.
pub struct ServiceRt {
    /// `name.namespace`: the metrics label and the key for per-service listeners.
    pub key: Arc<str>,
    pub spec: ServiceSpec,
    pub endpoints: Vec<Arc<EndpointRt>>,
    next: AtomicUsize,
    pub metrics: TargetMetrics,
    /// Labels requests the sidecar answers itself for this service.
    pub local: EndpointMetrics,
}

pub struct EndpointRt {
    pub addr: SocketAddr,
    pub label: String,
    pub conns: Arc<EndpointConns>,
    pub metrics: EndpointMetrics,
}

pub struct InboundRt {
    pub spec: InboundSpec,
    pub app: Arc<EndpointRt>,
    pub metrics: TargetMetrics,
    pub local: EndpointMetrics,
}

impl ServiceRt {
    /// Round-robin over the endpoints.
    pub fn pick(&self) -> Option<&Arc<EndpointRt>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some(&self.endpoints[i])
    }
}

impl Snapshot {
    pub fn build(
        source: &str,
        text: &str,
        overrides: &Overrides,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        let resources = pilotfish_api::parse_stream(source, text)?;
        let (name, namespace, mut sidecar) = resources
            .iter()
            .find_map(|r| match r {
                Resource::Sidecar(s) => Some((
                    s.metadata.name.clone(),
                    s.metadata.namespace.clone(),
                    s.spec.clone(),
                )),
                _ => None,
            })
            .unwrap_or_else(|| ("sidecar".into(), "default".into(), SidecarSpec::default()));
        apply_overrides(&mut sidecar, overrides)?;

        let mut pools: HashMap<SocketAddr, Arc<EndpointConns>> = HashMap::new();
        if let Some(prev) = previous {
            for svc in prev.services.values() {
                for ep in &svc.endpoints {
                    pools.insert(ep.addr, ep.conns.clone());
                }
            }
            if let Some(inbound) = &prev.inbound {
                pools.insert(inbound.app.addr, inbound.app.conns.clone());
            }
        }
        let mut endpoint = |direction: Direction, service: &str, addr: SocketAddr| {
            let label = addr.to_string();
            Arc::new(EndpointRt {
                addr,
                conns: pools
                    .entry(addr)
                    .or_insert_with(|| EndpointConns::new(addr))
                    .clone(),
                metrics: metrics.endpoint(direction, service, &label),
                label,
            })
        };

        let mut services = HashMap::new();
        let mut by_host = HashMap::new();
        let mut by_addr = HashMap::new();
        let mut local_ports = Vec::new();
        for r in &resources {
            let Resource::Service(s) = r else { continue };
            let (svc_name, svc_ns) = (&s.metadata.name, &s.metadata.namespace);
            let key: Arc<str> = format!("{svc_name}.{svc_ns}").into();
            let svc = Arc::new(ServiceRt {
                endpoints: s
                    .spec
                    .endpoints
                    .iter()
                    .map(|e| endpoint(Direction::Outbound, &key, e.address))
                    .collect(),
                next: AtomicUsize::new(0),
                metrics: metrics.target(Direction::Outbound, &key),
                local: metrics.endpoint(Direction::Outbound, &key, ""),
                spec: s.spec.clone(),
                key: key.clone(),
            });
            // Host names as Kubernetes DNS would resolve them; the short name only within the
            // sidecar's own namespace.
            for host in [
                format!("{svc_name}.{svc_ns}"),
                format!("{svc_name}.{svc_ns}.svc"),
                format!("{svc_name}.{svc_ns}.svc.cluster.local"),
            ] {
                by_host.insert(host, svc.clone());
            }
            if *svc_ns == namespace {
                by_host.insert(svc_name.clone(), svc.clone());
            }
            for ip in &s.spec.addresses {
                for p in &s.spec.ports {
                    by_addr.insert(SocketAddr::new(*ip, p.port), (svc.clone(), p.protocol));
                }
            }
            if let Some(port) = s.spec.local_port {
                local_ports.push((port, key.clone()));
            }
            services.insert(key, svc);
        }

        let inbound = sidecar.inbound.clone().map(|spec| InboundRt {
            app: endpoint(Direction::Inbound, &name, spec.app),
            metrics: metrics.target(Direction::Inbound, &name),
            local: metrics.endpoint(Direction::Inbound, &name, ""),
            spec,
        });

        Ok(Self {
            version: previous.map_or(1, |p| p.version + 1),
            hash: hash_text(text),
            source: source.to_owned(),
            resources,
            sidecar,
            passthrough: metrics.target(Direction::Outbound, ""),
            unrouted: metrics.endpoint(Direction::Outbound, "", ""),
            name,
            namespace,
            services,
            by_host,
            by_addr,
            local_ports,
            inbound,
        })
    }

    pub fn service(&self, key: &str) -> Option<&Arc<ServiceRt>> {
        self.services.get(key)
    }

    /// The service an HTTP authority (`users`, `users.default:80`, ...) names.
    pub fn service_by_authority(&self, authority: &str) -> Option<&Arc<ServiceRt>> {
        let host = strip_port(authority).trim_end_matches('.');
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&host.to_ascii_lowercase())
        } else {
            self.by_host.get(host)
        }
    }

    /// The service dialled as `ADDRESS:PORT` (transparent mode), with the port's protocol.
    pub fn service_by_addr(&self, addr: SocketAddr) -> Option<&(Arc<ServiceRt>, Option<Protocol>)> {
        self.by_addr.get(&addr)
    }

    /// The configuration as `GET /config` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "hash": format!("{:016x}", self.hash),
            "source": self.source,
            "sidecar": self.sidecar,
            "resources": self.resources.iter().map(Resource::to_json).collect::<Vec<_>>(),
        })
    }

    /// Keeps the listener addresses and connection limit of the running snapshot (listeners
    /// are bound once), so `/config` shows what is in force. Returns whether the file asked for
    /// something different.
    pub fn keep_listeners_of(&mut self, running: &Snapshot) -> bool {
        let (new, old) = (&mut self.sidecar, &running.sidecar);
        let inbound_listen = |s: &SidecarSpec| s.inbound.as_ref().map(|i| i.listen);
        let differ = new.admin != old.admin
            || new.outbound.listen != old.outbound.listen
            || (new.inbound.is_some() && inbound_listen(new) != inbound_listen(old))
            || new.limits.max_connections != old.limits.max_connections;
        new.admin = old.admin;
        new.outbound.listen = old.outbound.listen;
        new.limits.max_connections = old.limits.max_connections;
        if let (Some(new), Some(old)) = (&mut new.inbound, &old.inbound) {
            new.listen = old.listen;
        }
        differ
    }
}

fn apply_overrides(sidecar: &mut SidecarSpec, o: &Overrides) -> Result<(), BuildError> {
    if let Some(admin) = o.admin {
        sidecar.admin = admin;
    }
    if let Some(outbound) = o.outbound {
        sidecar.outbound.listen = outbound;
    }
    match (&mut sidecar.inbound, o.app) {
        (Some(inbound), Some(app)) => inbound.app = app,
        (None, Some(app)) => {
            sidecar.inbound = Some(InboundSpec {
                listen: SocketAddr::from(([0, 0, 0, 0], 15006)),
                app,
                opaque_ports: Vec::new(),
            })
        }
        _ => {}
    }
    if let Some(listen) = o.inbound {
        match &mut sidecar.inbound {
            Some(inbound) => inbound.listen = listen,
            None => {
                return Err(BuildError::Conflict(
                    "--inbound needs an app to forward to: pass --app ADDR or set spec.inbound.app in the Sidecar document".into(),
                ))
            }
        }
    }
    if let Some(drain) = o.drain {
        sidecar.timeouts.drain = pilotfish_api::Duration::from_millis(drain.as_millis() as u64);
    }
    sidecar.validate().map_err(|e| {
        BuildError::Conflict(format!(
            "with the command-line overrides applied, {}: {}",
            e.field, e.reason
        ))
    })
}

fn strip_port(authority: &str) -> &str {
    // "[::1]:80" → "[::1]"; "users:80" → "users"; "users" → "users".
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

pub(crate) fn hash_text(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {name: web, namespace: shop}
spec: {outbound: {listen: 127.0.0.1:0}}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: users, namespace: shop}
spec:
  ports: [{port: 80, protocol: http}]
  addresses: [10.96.0.10]
  endpoints: [{address: 127.0.0.1:9001}, {address: 127.0.0.1:9002}]
  localPort: 18081
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: billing, namespace: other}
spec: {endpoints: [{address: 127.0.0.1:9003}]}
"#;

    fn build() -> Snapshot {
        Snapshot::build(
            "test.yaml",
            CONFIG,
            &Overrides::default(),
            None,
            &Metrics::new(),
        )
        .unwrap()
    }

    #[test]
    fn resolves_service_host_names_like_cluster_dns() {
        let snap = build();
        for host in [
            "users",
            "users:80",
            "USERS.shop",
            "users.shop.svc",
            "users.shop.svc.cluster.local",
            "users.shop.svc.cluster.local.:80",
        ] {
            let svc = snap
                .service_by_authority(host)
                .unwrap_or_else(|| panic!("{host}"));
            assert_eq!(&*svc.key, "users.shop");
        }
        // Short names only resolve in the sidecar's own namespace.
        assert!(snap.service_by_authority("billing").is_none());
        assert!(snap.service_by_authority("billing.other").is_some());
        assert!(snap.service_by_authority("nobody").is_none());
    }

    #[test]
    fn maps_virtual_addresses_and_local_ports() {
        let snap = build();
        let (svc, proto) = snap
            .service_by_addr("10.96.0.10:80".parse().unwrap())
            .unwrap();
        assert_eq!((&*svc.key, *proto), ("users.shop", Some(Protocol::Http)));
        assert!(snap
            .service_by_addr("10.96.0.10:81".parse().unwrap())
            .is_none());
        assert_eq!(snap.local_ports, vec![(18081, Arc::from("users.shop"))]);
    }

    #[test]
    fn round_robins_endpoints() {
        let snap = build();
        let svc = snap.service("users.shop").unwrap();
        let picks: Vec<_> = (0..4).map(|_| svc.pick().unwrap().addr.port()).collect();
        assert_eq!(picks, [9001, 9002, 9001, 9002]);
    }

    #[test]
    fn reload_keeps_endpoint_pools_and_bumps_version() {
        let metrics = Metrics::new();
        let first = Snapshot::build("t", CONFIG, &Overrides::default(), None, &metrics).unwrap();
        let second =
            Snapshot::build("t", CONFIG, &Overrides::default(), Some(&first), &metrics).unwrap();
        assert_eq!(second.version, 2);
        let a = &first.service("users.shop").unwrap().endpoints[0].conns;
        let b = &second.service("users.shop").unwrap().endpoints[0].conns;
        assert!(Arc::ptr_eq(a, b));
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            app: Some("127.0.0.1:8080".parse().unwrap()),
            inbound: Some("127.0.0.1:7000".parse().unwrap()),
            ..Overrides::default()
        };
        let snap = Snapshot::build("t", CONFIG, &o, None, &Metrics::new()).unwrap();
        let inbound = snap.sidecar.inbound.as_ref().unwrap();
        assert_eq!((inbound.listen.port(), inbound.app.port()), (7000, 8080));

        let o = Overrides {
            inbound: o.inbound,
            ..Overrides::default()
        };
        assert!(matches!(
            Snapshot::build("t", CONFIG, &o, None, &Metrics::new()),
            Err(BuildError::Conflict(_))
        ));
    }
}
