//! The snapshot a sidecar is pushed: the configuration in force as one line of the push stream,
//! built from typed documents and endpoint records, and cached so every stream shares the one
//! line built per version.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use pilotfish_api::document::PILOTFISH_V1ALPHA1;
use pilotfish_api::{Endpoint, Metadata, ServiceSpec};
use serde::{Deserialize, Serialize};

use pilotfish_api::wire::PushLine;

use crate::model::{EndpointRecord, State};

/// The newest snapshot line, shared by every push stream.
#[derive(Default)]
pub struct SnapshotCache(Mutex<Option<(u64, Bytes)>>);

impl SnapshotCache {
    /// The line for `state`: the cached one when it is of the same version, else built anew.
    pub fn line(&self, state: &State) -> (u64, Bytes) {
        let mut cached = self.0.lock().expect("snapshot cache lock poisoned");
        match &*cached {
            Some((seq, line)) if *seq == state.seq => (*seq, line.clone()),
            _ => {
                let line = snapshot_line(state);
                *cached = Some((state.seq, line.clone()));
                (state.seq, line)
            }
        }
    }
}

/// One snapshot line: a [`PushLine`] as JSON, and a newline.
fn snapshot_line(state: &State) -> Bytes {
    let line = PushLine::new(state.seq, config_for(state));
    let mut bytes = serde_json::to_vec(&line).expect("JSON serializes");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// A stored Service document, typed: the one kind the snapshot changes.
#[derive(Serialize, Deserialize)]
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
        let service = (resource.document["kind"] == "Service")
            .then(|| serde_json::from_value::<ServiceDocument>(resource.document.clone()).ok())
            .flatten();
        let Some(mut service) = service else {
            docs.push(resource.document.to_string());
            continue;
        };
        let key = (service.metadata.name.clone(), service.metadata.namespace.clone());
        if let Some(extra) = registered.remove(&key) {
            let spec = &mut service.spec;
            let known: Vec<_> = spec.endpoints.iter().map(|e| e.address).collect();
            spec.endpoints.extend(extra.into_iter().filter(|e| !known.contains(&e.address)));
        }
        docs.push(serde_json::to_string(&service).expect("JSON serializes"));
    }
    for ((name, namespace), endpoints) in registered {
        let service = ServiceDocument {
            api_version: PILOTFISH_V1ALPHA1.to_owned(),
            kind: "Service".to_owned(),
            metadata: Metadata { name, namespace, labels: BTreeMap::new(), annotations: BTreeMap::new() },
            spec: ServiceSpec { ports: Vec::new(), addresses: Vec::new(), endpoints, local_port: None },
        };
        docs.push(serde_json::to_string(&service).expect("JSON serializes"));
    }
    docs.join("\n---\n")
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
            identity: Some(format!("spiffe://mesh/{service}")),
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
        assert_eq!(services["billing"].endpoints[0].identity.as_deref(), Some("spiffe://mesh/billing"));
    }
}
