//! Kubernetes objects into what the registry holds: the few facts kept of each Service,
//! EndpointSlice and Pod (not the objects: a cluster's pods are many), and the services they
//! make together.
//!
//! - A Service's ClusterIPs are its virtual addresses; a headless one (`clusterIP: None`) has
//!   none and is called at its endpoints' addresses directly. ExternalName services have no
//!   endpoints here and are left out.
//! - Each service port goes to the port its EndpointSlice port of the same name gives (the
//!   EndpointSlice controller resolves named target ports per pod); a numeric `targetPort` is
//!   used when no slice port names it. Pilotfish's endpoints carry one port each, so a Service
//!   with several ports becomes one service per port: the first keeps the name, each other is
//!   `<name>-<port>`.
//! - Endpoints that are `ready` (unset means ready) serve; when none is, those still `serving`
//!   while `terminating` do, as kube-proxy does, so a rollout's last pods drain rather than
//!   refuse.
//! - An endpoint's identity is `spiffe://<trust domain>/ns/<ns>/sa/<serviceAccountName>` of its
//!   pod when the pod has the mesh's sidecar (annotation `pilotfish.io/injected`): callers reach
//!   it over mTLS and require that identity. A pod without a sidecar gets no identity (mTLS to
//!   it would fail); an endpoint whose pod is not known yet waits for it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pilotfish_api::{Endpoint, Protocol, ServicePort, SpiffeId};

use crate::core::DiscoveredService;

/// The annotation the injector puts on the pods it gave a sidecar.
pub const INJECTED: &str = "pilotfish.io/injected";
/// The label naming an EndpointSlice's Service.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// (namespace, name) of an object.
pub type Key = (String, String);

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceFacts {
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<PortFacts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortFacts {
    /// `""` when unnamed, as EndpointSlices name it.
    pub name: String,
    pub port: u16,
    pub target: Option<u16>,
    pub protocol: Option<Protocol>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SliceFacts {
    pub service: String,
    /// Port number by port name (`""`: unnamed).
    pub ports: BTreeMap<String, u16>,
    pub endpoints: Vec<EndpointFacts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointFacts {
    pub addresses: Vec<IpAddr>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The pod behind it, in the slice's namespace.
    pub pod: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    pub service_account: String,
    pub meshed: bool,
}

/// The namespace and name of an object's metadata.
pub fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// What is kept of a Service; `None` for one that has no endpoints to discover (ExternalName).
pub fn service(s: &Service) -> Option<ServiceFacts> {
    let spec = s.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let ips = spec.cluster_ips.clone().unwrap_or_else(|| spec.cluster_ip.iter().cloned().collect());
    // "None" (headless) and "" (not allocated yet) do not parse.
    let addresses = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| {
            Some(PortFacts {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port).ok().filter(|&p| p != 0)?,
                target: match &p.target_port {
                    Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|&p| p != 0),
                    Some(IntOrString::String(_)) => None,
                    // Left out, the target port is the port.
                    None => u16::try_from(p.port).ok(),
                },
                protocol: p.app_protocol.as_deref().and_then(app_protocol),
            })
        })
        .collect();
    Some(ServiceFacts { addresses, ports })
}

/// A port's `appProtocol` as Pilotfish's protocol; anything else is detected per connection.
fn app_protocol(name: &str) -> Option<Protocol> {
    match name {
        "http" => Some(Protocol::Http),
        "kubernetes.io/h2c" | "http2" => Some(Protocol::Http2),
        "grpc" => Some(Protocol::Grpc),
        "tcp" => Some(Protocol::Tcp),
        _ => None,
    }
}

/// What is kept of an EndpointSlice; `None` for one of no Service, or of FQDN addresses.
pub fn slice(s: &EndpointSlice) -> Option<SliceFacts> {
    let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME)?.clone();
    if !matches!(s.address_type.as_str(), "IPv4" | "IPv6") {
        return None;
    }
    let ports = s
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| Some((p.name.clone().unwrap_or_default(), u16::try_from(p.port?).ok()?)))
        .collect();
    let endpoints = s
        .endpoints
        .iter()
        .map(|e| {
            let conditions = e.conditions.clone().unwrap_or_default();
            // The API: an unknown `ready` is ready, an unknown `serving` is `ready`.
            let ready = conditions.ready.unwrap_or(true);
            EndpointFacts {
                addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                ready,
                serving: conditions.serving.unwrap_or(ready),
                terminating: conditions.terminating.unwrap_or(false),
                pod: e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.clone()),
            }
        })
        .collect();
    Some(SliceFacts { service, ports, endpoints })
}

/// What is kept of a Pod.
pub fn pod(p: &Pod) -> PodFacts {
    let account = p.spec.as_ref().and_then(|s| s.service_account_name.clone());
    PodFacts {
        service_account: account.filter(|a| !a.is_empty()).unwrap_or_else(|| "default".to_owned()),
        meshed: p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(INJECTED)),
    }
}

/// What the cluster holds, as the watches last reported it.
#[derive(Debug, Default)]
pub struct Cluster {
    pub services: BTreeMap<Key, ServiceFacts>,
    pub slices: BTreeMap<Key, SliceFacts>,
    pub pods: BTreeMap<Key, PodFacts>,
}

impl Cluster {
    /// Every service the cluster makes, by (name, namespace) as the registry names them.
    pub fn services(&self, trust_domain: &str) -> BTreeMap<(String, String), DiscoveredService> {
        let mut out = BTreeMap::new();
        for ((namespace, name), facts) in &self.services {
            let slices: Vec<&SliceFacts> = self
                .slices
                .range((namespace.clone(), String::new())..)
                .take_while(|((ns, _), _)| ns == namespace)
                .map(|(_, s)| s)
                .filter(|s| &s.service == name)
                .collect();
            for (i, port) in facts.ports.iter().enumerate() {
                let service = match i {
                    0 => name.clone(),
                    _ => format!("{name}-{}", port.port),
                };
                let endpoints = self.endpoints(namespace, port, &slices, trust_domain);
                out.insert(
                    (service, namespace.clone()),
                    DiscoveredService {
                        ports: vec![ServicePort {
                            port: port.port,
                            protocol: port.protocol,
                            name: (!port.name.is_empty()).then(|| port.name.clone()),
                        }],
                        addresses: facts.addresses.clone(),
                        endpoints,
                    },
                );
            }
        }
        out
    }

    /// The endpoints of one service port: ready ones, or (none being ready) terminating ones
    /// still serving; each address once.
    fn endpoints(
        &self,
        namespace: &str,
        port: &PortFacts,
        slices: &[&SliceFacts],
        trust_domain: &str,
    ) -> Vec<Endpoint> {
        let mut ready = Vec::new();
        let mut draining = Vec::new();
        for slice in slices {
            let Some(target) = slice.ports.get(&port.name).copied().or(port.target) else { continue };
            for e in &slice.endpoints {
                let identity = match &e.pod {
                    Some(pod) => match self.pods.get(&(namespace.to_owned(), pod.clone())) {
                        // The pod's account decides its identity: wait until it is known.
                        None => continue,
                        Some(p) if p.meshed => SpiffeId::new(trust_domain, namespace, &p.service_account)
                            .ok()
                            .map(|id| id.to_string()),
                        Some(_) => None,
                    },
                    None => None,
                };
                let into = match (e.ready, e.serving && e.terminating) {
                    (true, _) => &mut ready,
                    (false, true) => &mut draining,
                    (false, false) => continue,
                };
                for ip in &e.addresses {
                    let address = SocketAddr::new(*ip, target);
                    if !into.iter().any(|known: &Endpoint| known.address == address) {
                        into.push(Endpoint { address, identity: identity.clone(), labels: BTreeMap::new() });
                    }
                }
            }
        }
        if ready.is_empty() {
            draining
        } else {
            ready
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_json(v: serde_json::Value) -> ServiceFacts {
        service(&serde_json::from_value(v).unwrap()).unwrap()
    }

    fn slice_json(v: serde_json::Value) -> SliceFacts {
        slice(&serde_json::from_value(v).unwrap()).unwrap()
    }

    fn cluster() -> Cluster {
        let mut c = Cluster::default();
        let web = service_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [
                {"name": "http", "port": 80, "targetPort": "http-alt", "appProtocol": "http"},
                {"name": "metrics", "port": 9090, "targetPort": 9091}
            ]}
        }));
        c.services.insert(("shop".into(), "web".into()), web);
        let slice = slice_json(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "web-1"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true},
                 "targetRef": {"kind": "Pod", "name": "web-2"}},
                {"addresses": ["10.0.0.3"], "targetRef": {"kind": "Pod", "name": "web-3"}}
            ]
        }));
        c.slices.insert(("shop".into(), "web-abc".into()), slice);
        let meshed = PodFacts { service_account: "web-sa".into(), meshed: true };
        c.pods.insert(("shop".into(), "web-1".into()), meshed.clone());
        c.pods.insert(("shop".into(), "web-2".into()), meshed);
        c
    }

    #[test]
    fn ports_resolve_through_the_slice_and_identity_comes_from_the_pods_account() {
        let services = cluster().services("pilotfish.local");
        let web = &services[&("web".to_owned(), "shop".to_owned())];
        assert_eq!(web.addresses, ["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!((web.ports[0].port, web.ports[0].protocol), (80, Some(Protocol::Http)));
        // web-2 is terminating (a ready one exists), web-3's pod is not known yet.
        let eps: Vec<_> = web.endpoints.iter().map(|e| (e.address.to_string(), e.identity.clone())).collect();
        assert_eq!(
            eps,
            [("10.0.0.1:8080".to_owned(), Some("spiffe://pilotfish.local/ns/shop/sa/web-sa".to_owned()))]
        );
        // The second port: no slice port named `metrics`, so its numeric targetPort.
        let metrics = &services[&("web-9090".to_owned(), "shop".to_owned())];
        assert_eq!(metrics.endpoints[0].address.to_string(), "10.0.0.1:9091");
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready_and_unmeshed_pods_have_no_identity() {
        let mut c = cluster();
        c.pods
            .insert(("shop".into(), "web-1".into()), PodFacts { service_account: "x".into(), meshed: false });
        c.pods
            .insert(("shop".into(), "web-3".into()), PodFacts { service_account: "x".into(), meshed: false });
        let web = &c.services("td")[&("web".to_owned(), "shop".to_owned())];
        let eps: Vec<_> = web.endpoints.iter().map(|e| (e.address.port(), e.identity.is_some())).collect();
        assert_eq!(eps, [(8080, false), (8080, false)], "web-1 and web-3 (unset conditions: ready)");
        for (_, s) in c.slices.iter_mut() {
            s.endpoints.retain(|e| !e.ready);
        }
        let web = &c.services("td")[&("web".to_owned(), "shop".to_owned())];
        assert_eq!(
            web.endpoints[0].address.to_string(),
            "10.0.0.2:8080",
            "the draining one, none being ready"
        );
    }

    #[test]
    fn a_headless_service_has_no_virtual_address_and_external_names_are_left_out() {
        let headless = service_json(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        }));
        assert!(headless.addresses.is_empty());
        assert_eq!(headless.ports[0].target, Some(5432), "no targetPort: the port");
        let external: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ext", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "example.org"}
        }))
        .unwrap();
        assert_eq!(service(&external), None);
    }
}
