//! The snapshot a sidecar is pushed: the configuration in force as one line of the push stream,
//! built from typed documents and endpoint records, and cached so every stream shares the one
//! line built per version.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use pilotfish_api::document::PILOTFISH_V1ALPHA1;
use pilotfish_api::{Endpoint, Metadata, ServiceSpec};
use serde::Serialize;
use serde_json::Value;

use pilotfish_api::wire::{MeshSettings, PushLine, DEFAULT_NAMESPACE};

use crate::model::{EndpointRecord, State};

/// The newest snapshot line, shared by every push stream, and the mesh settings every line
/// carries.
pub struct SnapshotCache {
    mesh: MeshSettings,
    line: Mutex<Option<(u64, Bytes)>>,
}

impl SnapshotCache {
    pub fn new(mesh: MeshSettings) -> Self {
        Self { mesh, line: Mutex::default() }
    }

    /// The line for `state`, whose trust bundle is `bundle_pem`: the cached one when it is of
    /// the same version (the bundle changes only with events), else built anew.
    pub fn line(&self, state: &State, bundle_pem: &str) -> (u64, Bytes) {
        let mut cached = self.line.lock().expect("snapshot cache lock poisoned");
        match &*cached {
            Some((seq, line)) if *seq == state.seq => (*seq, line.clone()),
            _ => {
                let mesh = MeshSettings {
                    trust_bundle_pem: bundle_pem.to_owned(),
                    renew_before: state.ca.renew_before.clone(),
                    ..self.mesh.clone()
                };
                let line = snapshot_line(state, &mesh);
                *cached = Some((state.seq, line.clone()));
                (state.seq, line)
            }
        }
    }
}

/// One snapshot line: a [`PushLine`] as JSON, and a newline.
fn snapshot_line(state: &State, mesh: &MeshSettings) -> Bytes {
    let line = PushLine { mesh: Some(mesh.clone()), ..PushLine::new(state.seq, config_for(state)) };
    let mut bytes = serde_json::to_vec(&line).expect("JSON serializes");
    bytes.push(b'\n');
    Bytes::from(bytes)
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

/// The configuration a sidecar needs, as a document stream the sidecar parses exactly like a
/// static file: the mesh's routes and policies, and every Service with its registered
/// endpoints added to its own (a service known only from registrations gets a Service
/// document of its own).
fn config_for(state: &State) -> String {
    let mut registered: BTreeMap<(String, String), Vec<Endpoint>> = BTreeMap::new();
    for e in state.endpoints.values() {
        registered.entry((e.service.clone(), e.namespace.clone())).or_default().push(endpoint(e));
    }
    let mut docs: Vec<String> = Vec::new();
    for resource in state.resources.values() {
        let mut document = resource.document.clone();
        if document["kind"] == "Service" {
            if let Some(extra) = service_key(&document).and_then(|key| registered.remove(&key)) {
                add_endpoints(&mut document, extra);
            }
        }
        docs.push(document.to_string());
    }
    for ((name, namespace), endpoints) in registered {
        let service = ServiceDocument {
            api_version: PILOTFISH_V1ALPHA1.to_owned(),
            kind: "Service".to_owned(),
            metadata: Metadata { name, namespace, labels: BTreeMap::new(), annotations: BTreeMap::new() },
            spec: ServiceSpec {
                ports: Vec::new(),
                addresses: Vec::new(),
                endpoints,
                local_port: None,
                mtls: Default::default(),
            },
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

/// Adds the registered `extra` endpoints to a stored Service's `spec.endpoints`, after those
/// already there (an address listed statically stays once). Only that list is touched: fields
/// this build does not know (written by a newer replica sharing the log) reach the sidecars as
/// they were stored.
fn add_endpoints(document: &mut Value, extra: Vec<Endpoint>) {
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
        let config = parse_with("push", &config_for(&state), UnknownFields::Refuse).unwrap();
        let services: BTreeMap<_, _> = config
            .resources
            .into_iter()
            .filter_map(|r| match r {
                Resource::Service(s) => Some((s.metadata.name, s.spec)),
                _ => None,
            })
            .collect();
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
        config_for(&state).split("\n---\n").map(|d| serde_json::from_str(d).unwrap()).collect()
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
