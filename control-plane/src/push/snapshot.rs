//! The snapshot a sidecar is pushed: the configuration in force as one line of the push stream,
//! built from typed documents, endpoint records and discovered services, and cached so every
//! stream shares the one line built per version and discovery generation.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use bytes::Bytes;
use pilotfish_api::document::PILOTFISH_V1ALPHA1;
use pilotfish_api::{Endpoint, Metadata, ServicePort, ServiceSpec};
use serde::Serialize;
use serde_json::Value;

use pilotfish_api::wire::{MeshSettings, PushLine, DEFAULT_NAMESPACE};

use crate::core::Discovery;
use crate::model::{EndpointRecord, State};

/// The newest snapshot line, shared by every push stream, and the mesh settings every line
/// carries.
pub struct SnapshotCache {
    mesh: MeshSettings,
    /// Keyed by (seq, discovery generation).
    line: Mutex<Option<((u64, u64), Bytes)>>,
}

impl SnapshotCache {
    pub fn new(mesh: MeshSettings) -> Self {
        Self { mesh, line: Mutex::default() }
    }

    /// The line for `state` and `discovery`, whose trust bundle is `bundle_pem`: the cached one
    /// when it is of the same version and generation (the bundle changes only with events), else
    /// built anew.
    pub fn line(&self, state: &State, discovery: &Discovery, bundle_pem: &str) -> (u64, Bytes) {
        let key = (state.seq, discovery.generation);
        let mut cached = self.line.lock().expect("snapshot cache lock poisoned");
        match &*cached {
            Some((at, line)) if *at == key => (state.seq, line.clone()),
            _ => {
                let mesh = MeshSettings {
                    trust_bundle_pem: bundle_pem.to_owned(),
                    renew_before: state.ca.renew_before.clone(),
                    ..self.mesh.clone()
                };
                let line = snapshot_line(state, discovery, &mesh);
                *cached = Some((key, line.clone()));
                (state.seq, line)
            }
        }
    }
}

/// One snapshot line: a [`PushLine`] as JSON, and a newline.
fn snapshot_line(state: &State, discovery: &Discovery, mesh: &MeshSettings) -> Bytes {
    let config = config_for(state, discovery);
    crate::ndjson::line(&PushLine { mesh: Some(mesh.clone()), ..PushLine::new(state.seq, config) })
}

/// A Service document for a service known only from registrations.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceDocument {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: ServiceSpec,
}

/// A registered instance as an endpoint of its Service.
fn endpoint(e: &EndpointRecord) -> Endpoint {
    Endpoint { address: e.address, identity: e.identity.clone(), labels: e.labels.clone() }
}

/// What the registry adds to one service: the instances registered under a lease and those a
/// discovery source reports, with the ports and virtual addresses the source knows.
#[derive(Default)]
struct Live {
    ports: Vec<ServicePort>,
    addresses: Vec<IpAddr>,
    endpoints: Vec<Endpoint>,
}

/// The configuration a sidecar needs, as a document stream the sidecar parses exactly like a
/// static file: the mesh's routes and policies, and every Service with its registered and
/// discovered endpoints added to its own (a service known only from the registry gets a Service
/// document of its own).
fn config_for(state: &State, discovery: &Discovery) -> String {
    let mut live: BTreeMap<(String, String), Live> = BTreeMap::new();
    for (key, s) in &discovery.services {
        let entry = live.entry(key.clone()).or_default();
        entry.ports.clone_from(&s.ports);
        entry.addresses.clone_from(&s.addresses);
        entry.endpoints.extend(s.endpoints.iter().cloned());
    }
    for e in state.endpoints.values() {
        let entry = live.entry((e.service.clone(), e.namespace.clone())).or_default();
        // An address the source reports too is listed once (the source's, with its identity).
        if !entry.endpoints.iter().any(|known| known.address == e.address) {
            entry.endpoints.push(endpoint(e));
        }
    }
    let mut docs: Vec<String> = Vec::new();
    for resource in state.resources.values() {
        // The control plane runs rollouts; sidecars see only the route weights they write.
        if resource.document["kind"] == "Rollout" {
            continue;
        }
        let mut document = resource.document.clone();
        if document["kind"] == "Service" {
            if let Some(extra) = service_key(&document).and_then(|key| live.remove(&key)) {
                add_live(&mut document, extra);
            }
        }
        docs.push(document.to_string());
    }
    for ((name, namespace), Live { ports, addresses, endpoints }) in live {
        let service = ServiceDocument {
            api_version: PILOTFISH_V1ALPHA1.to_owned(),
            kind: "Service".to_owned(),
            metadata: Metadata { name, namespace, labels: BTreeMap::new(), annotations: BTreeMap::new() },
            spec: ServiceSpec { ports, addresses, endpoints, local_port: None, mtls: Default::default() },
        };
        docs.push(serde_json::to_string(&service).expect("JSON serializes"));
    }
    docs.join("\n---\n")
}

/// The (name, namespace) of a stored Service, read as bare JSON: the rest of the document may
/// hold what this build cannot read and still be the Service those instances registered with.
fn service_key(document: &Value) -> Option<(String, String)> {
    let metadata = &document["metadata"];
    let Some(name) = metadata["name"].as_str() else {
        tracing::warn!("a stored Service has no name; pushed as stored");
        return None;
    };
    let namespace = metadata["namespace"].as_str().unwrap_or(DEFAULT_NAMESPACE);
    Some((name.to_owned(), namespace.to_owned()))
}

/// Adds what the registry knows of a stored Service: its endpoints after those already in
/// `spec.endpoints` (an address listed statically stays once), and the source's ports and
/// virtual addresses where the document names none (what the operator wrote wins). Only those
/// fields are touched: fields this build does not know (written by a newer replica sharing the
/// log) reach the sidecars as they were stored.
fn add_live(document: &mut Value, Live { ports, addresses, endpoints: extra }: Live) {
    // A spec or list left out (or null) means the default: none yet.
    let empty = |v: &mut Value, with: Value| {
        if v.is_null() {
            *v = with;
        }
    };
    let Some(service) = document.as_object_mut() else {
        tracing::warn!("a stored Service is not an object; pushed without its registered endpoints");
        return;
    };
    let spec = service.entry("spec").or_insert(Value::Null);
    empty(spec, Value::Object(serde_json::Map::new()));
    let Some(spec) = spec.as_object_mut() else {
        tracing::warn!("a stored Service's spec is not an object; pushed without its registered endpoints");
        return;
    };
    let unnamed = |v: &Value| v.as_array().is_none_or(Vec::is_empty);
    if !ports.is_empty() && spec.get("ports").is_none_or(unnamed) {
        spec.insert("ports".into(), serde_json::to_value(ports).expect("ports serialize"));
    }
    if !addresses.is_empty() && spec.get("addresses").is_none_or(unnamed) {
        spec.insert("addresses".into(), serde_json::to_value(addresses).expect("addresses serialize"));
    }
    let endpoints = spec.entry("endpoints").or_insert(Value::Null);
    empty(endpoints, Value::Array(Vec::new()));
    let Value::Array(endpoints) = endpoints else {
        tracing::warn!(
            "a stored Service's endpoints are not a list; pushed without its registered endpoints"
        );
        return;
    };
    let known: Vec<SocketAddr> =
        endpoints.iter().filter_map(|e| e["address"].as_str()?.parse().ok()).collect();
    endpoints.extend(
        extra
            .into_iter()
            .filter(|e| !known.contains(&e.address))
            .map(|e| serde_json::to_value(e).expect("endpoints serialize")),
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pilotfish_api::{parse_with, Resource, UnknownFields};

    use super::*;
    use crate::model::StoredResource;

    fn registered(service: &str, port: u16) -> EndpointRecord {
        EndpointRecord {
            id: format!("{service}.default-127.0.0.1-{port}"),
            service: service.to_owned(),
            namespace: "default".to_owned(),
            address: format!("127.0.0.1:{port}").parse().unwrap(),
            identity: Some(format!("spiffe://mesh/ns/default/sa/{service}")),
            labels: BTreeMap::new(),
            ttl_seconds: 30,
        }
    }

    /// The Services pushed for `state` and `discovery`, by name, as the sidecar reads them.
    fn pushed_services(state: &State, discovery: &Discovery) -> BTreeMap<String, ServiceSpec> {
        let config = parse_with("push", &config_for(state, discovery), UnknownFields::Refuse).unwrap();
        config
            .resources
            .into_iter()
            .filter_map(|r| match r {
                Resource::Service(s) => Some((s.metadata.name, s.spec)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn registered_endpoints_join_their_service_and_the_sidecar_reads_the_result() {
        let users = pilotfish_api::parse(
            "test",
            "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {name: users}\nspec: {ports: [{port: 80}], endpoints: [{address: 127.0.0.1:9001}]}\n",
        )
        .unwrap()
        .resources
        .remove(0);
        let mut state = State { seq: 7, ..State::default() };
        let stored = StoredResource { version: 1, seq: 1, document: users.to_json() };
        state.resources.insert("Service/default/users".into(), Arc::new(stored));
        for e in [registered("users", 9001), registered("users", 9002), registered("billing", 9100)] {
            state.endpoints.insert(e.id.clone(), e);
        }
        let services = pushed_services(&state, &Discovery::default());
        let addresses =
            |name: &str| services[name].endpoints.iter().map(|e| e.address.port()).collect::<Vec<_>>();
        // The static endpoint stays, once; the registered one beside it; and a service known only
        // from registrations gets a document of its own.
        assert_eq!(addresses("users"), [9001, 9002]);
        assert_eq!(services["users"].ports[0].port, 80);
        assert_eq!(addresses("billing"), [9100]);
        assert_eq!(
            services["billing"].endpoints[0].identity.as_deref(),
            Some("spiffe://mesh/ns/default/sa/billing")
        );
    }

    /// The pushed documents as JSON, and a state holding `stored` as the one resource with a
    /// `users` instance registered at port 9002.
    fn pushed_with(stored: serde_json::Value) -> Vec<Value> {
        let mut state = State { seq: 3, ..State::default() };
        let stored = StoredResource { version: 1, seq: 1, document: stored };
        state.resources.insert("Service/default/users".into(), Arc::new(stored));
        let e = registered("users", 9002);
        state.endpoints.insert(e.id.clone(), e);
        config_for(&state, &Discovery::default())
            .split("\n---\n")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn discovered_services_join_a_stored_one_or_stand_alone_and_the_operators_ports_win() {
        use crate::core::DiscoveredService;
        let found = |port: u16| DiscoveredService {
            ports: vec![ServicePort { port: 80, protocol: None, name: None }],
            addresses: vec![format!("10.96.0.{}", port % 100).parse().unwrap()],
            endpoints: vec![Endpoint {
                address: format!("10.0.0.1:{port}").parse().unwrap(),
                identity: None,
                labels: BTreeMap::new(),
            }],
        };
        let discovery = Discovery {
            generation: 1,
            services: [("users", 8080), ("billing", 9000)]
                .into_iter()
                .map(|(n, p)| ((n.to_owned(), "default".to_owned()), found(p)))
                .collect(),
        };
        let mut state = State { seq: 3, ..State::default() };
        let stored = serde_json::json!({ "apiVersion": "pilotfish.io/v1alpha1", "kind": "Service",
            "metadata": { "name": "users", "namespace": "default" },
            "spec": { "ports": [{ "port": 80, "protocol": "http" }] } });
        state.resources.insert(
            "Service/default/users".into(),
            Arc::new(StoredResource { version: 1, seq: 1, document: stored }),
        );
        let e = registered("users", 9002);
        state.endpoints.insert(e.id.clone(), e);
        let services = pushed_services(&state, &discovery);
        let users = &services["users"];
        assert_eq!(users.ports[0].protocol, Some(pilotfish_api::Protocol::Http), "the stored ports stay");
        assert_eq!(users.addresses, ["10.96.0.80".parse::<IpAddr>().unwrap()], "none stored: the cluster's");
        let ports: Vec<u16> = users.endpoints.iter().map(|e| e.address.port()).collect();
        assert_eq!(ports, [8080, 9002], "discovered and registered endpoints together");
        assert_eq!(services["billing"].endpoints[0].address.port(), 9000, "a service of its own");
    }

    #[test]
    fn fields_this_build_does_not_know_reach_the_sidecars_as_stored() {
        // Written by a newer replica sharing the log, mid-upgrade.
        let stored = serde_json::json!({
            "apiVersion": "pilotfish.io/v1alpha1", "kind": "Service",
            "metadata": { "name": "users", "namespace": "default" },
            "spec": { "ports": [{ "port": 80 }], "endpoints": [{ "address": "127.0.0.1:9001", "zone": "a" }],
                      "futureField": { "x": 1 } },
            "status": { "fromTheFuture": true }
        });
        let docs = pushed_with(stored);
        assert_eq!(docs.len(), 1, "{docs:?}");
        let spec = &docs[0]["spec"];
        assert_eq!(spec["futureField"], serde_json::json!({ "x": 1 }));
        assert_eq!(docs[0]["status"]["fromTheFuture"], true);
        assert_eq!(spec["endpoints"][0], serde_json::json!({ "address": "127.0.0.1:9001", "zone": "a" }));
        assert_eq!(spec["endpoints"][1]["address"], "127.0.0.1:9002");
        assert_eq!(spec["endpoints"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_service_this_build_cannot_read_gets_its_endpoints_and_is_pushed_once() {
        // A port protocol from a later release: not a `ServiceSpec` this build can read.
        let stored = serde_json::json!({
            "apiVersion": "pilotfish.io/v1alpha1", "kind": "Service",
            "metadata": { "name": "users" },
            "spec": { "ports": [{ "port": 80, "protocol": "http3" }] }
        });
        assert!(serde_json::from_value::<ServiceSpec>(stored["spec"].clone()).is_err());
        let docs = pushed_with(stored);
        let users: Vec<_> = docs.iter().filter(|d| d["metadata"]["name"] == "users").collect();
        assert_eq!(users.len(), 1, "the Service is pushed once: {docs:?}");
        assert_eq!(users[0]["spec"]["ports"][0]["protocol"], "http3");
        assert_eq!(users[0]["spec"]["endpoints"][0]["address"], "127.0.0.1:9002");
    }

    #[test]
    fn a_spec_or_endpoint_list_left_out_or_null_still_gets_the_registered_endpoints() {
        let meta = serde_json::json!({ "name": "users" });
        for stored in [
            serde_json::json!({ "apiVersion": "pilotfish.io/v1alpha1", "kind": "Service", "metadata": meta }),
            serde_json::json!({ "apiVersion": "pilotfish.io/v1alpha1", "kind": "Service", "metadata": meta, "spec": null }),
            serde_json::json!({ "apiVersion": "pilotfish.io/v1alpha1", "kind": "Service", "metadata": meta,
                                "spec": { "endpoints": null } }),
        ] {
            let docs = pushed_with(stored.clone());
            assert_eq!(docs.len(), 1, "{docs:?}");
            assert_eq!(docs[0]["spec"]["endpoints"][0]["address"], "127.0.0.1:9002", "{stored}");
        }
    }
}
