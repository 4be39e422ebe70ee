//! Push: every sidecar holds one long-lived streaming response (`GET /v1/push`, newline-delimited
//! JSON) on which it receives a full snapshot of its configuration, then a new one after every
//! change. Bursts of writes are coalesced (a sidecar is sent the newest state once the log has
//! been quiet for a moment, never a queue of stale ones), and a slow sidecar holds up no one:
//! each has its own task and a newer snapshot simply replaces an unsent older one. Sidecars ACK
//! or NACK every version; the proxies API shows who is current and why anyone is not.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::model::State;

/// How long the log must be quiet before a change is pushed (coalescing bursts).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// An empty line this often lets both ends notice a dead connection.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// What the control plane knows of each sidecar.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub id: String,
    pub service: String,
    pub namespace: String,
    pub connected: bool,
    pub connected_at: String,
    pub sent_version: u64,
    pub acked_version: u64,
    /// Which connection of this sidecar the status belongs to.
    #[serde(skip)]
    generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<Nack>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Nack {
    pub version: u64,
    pub error: String,
}

#[derive(Default)]
pub struct Proxies {
    by_id: Mutex<HashMap<String, ProxyStatus>>,
    generations: std::sync::atomic::AtomicU64,
    /// Snapshots sent, over all sidecars.
    pub pushes: std::sync::atomic::AtomicU64,
}

impl Proxies {
    /// Records a (re)connection; returns its generation. `resume` is the version the sidecar
    /// says it already has (acknowledged earlier, perhaps to another replica).
    pub async fn connected(&self, id: &str, service: &str, namespace: &str, resume: u64) -> u64 {
        let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let status = ProxyStatus {
            id: id.to_owned(),
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            connected: true,
            connected_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            sent_version: resume,
            acked_version: resume,
            last_nack: None,
            generation,
        };
        let mut by_id = self.by_id.lock().await;
        let previous = by_id.insert(id.to_owned(), status);
        // A reconnecting sidecar keeps what it had acknowledged.
        if let (Some(old), Some(new)) = (previous, by_id.get_mut(id)) {
            new.acked_version = new.acked_version.max(old.acked_version);
            new.last_nack = old.last_nack;
        }
        generation
    }

    pub async fn sent(&self, id: &str, version: u64) {
        self.pushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = self.by_id.lock().await.get_mut(id) {
            p.sent_version = version;
        }
    }

    /// Marks a connection gone, unless a newer connection of the same sidecar replaced it.
    pub async fn disconnected(&self, id: &str, generation: u64) {
        if let Some(p) = self.by_id.lock().await.get_mut(id).filter(|p| p.generation == generation) {
            p.connected = false;
        }
    }

    /// Records an ACK (`error: None`) or a NACK; false if the proxy is unknown.
    pub async fn acknowledged(&self, id: &str, version: u64, error: Option<String>) -> bool {
        let mut by_id = self.by_id.lock().await;
        let Some(p) = by_id.get_mut(id) else { return false };
        match error {
            None => p.acked_version = p.acked_version.max(version),
            Some(error) => p.last_nack = Some(Nack { version, error }),
        }
        true
    }

    /// The service a proxy said it belongs to when it connected.
    pub async fn service_of(&self, id: &str) -> Option<(String, String)> {
        self.by_id.lock().await.get(id).map(|p| (p.service.clone(), p.namespace.clone()))
    }

    pub async fn list(&self) -> Vec<ProxyStatus> {
        let mut all: Vec<_> = self.by_id.lock().await.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}

/// One snapshot line: `{"version": SEQ, "config": "<YAML/JSON document stream>"}`.
pub fn snapshot_line(state: &State) -> Bytes {
    let line = json!({ "version": state.seq, "config": config_for(state) });
    let mut bytes = serde_json::to_vec(&line).expect("JSON serializes");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The configuration a sidecar needs, as a document stream the sidecar parses exactly like a
/// static file: the mesh's routes and policies, and every Service with its registered
/// endpoints merged into `spec.endpoints` (a service known only from registrations gets a
/// Service document of its own).
pub fn config_for(state: &State) -> String {
    let mut registered: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for e in state.endpoints.values() {
        let mut endpoint = json!({ "address": e.address.to_string() });
        if let Some(identity) = &e.identity {
            endpoint["identity"] = json!(identity);
        }
        if !e.labels.is_empty() {
            endpoint["labels"] = json!(e.labels);
        }
        registered.entry((e.service.clone(), e.namespace.clone())).or_default().push(endpoint);
    }
    let mut docs = Vec::new();
    for resource in state.resources.values() {
        let mut doc = resource.document.clone();
        if doc["kind"] == "Service" {
            let key = (
                doc["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                doc["metadata"]["namespace"].as_str().unwrap_or("default").to_owned(),
            );
            if let Some(extra) = registered.remove(&key) {
                let endpoints = doc["spec"]["endpoints"].as_array().cloned().unwrap_or_default();
                let known: Vec<Value> = endpoints.iter().map(|e| e["address"].clone()).collect();
                let merged: Vec<Value> = endpoints
                    .into_iter()
                    .chain(extra.into_iter().filter(|e| !known.contains(&e["address"])))
                    .collect();
                doc["spec"]["endpoints"] = Value::from(merged);
            }
        }
        docs.push(doc);
    }
    for ((name, namespace), endpoints) in registered {
        docs.push(json!({
            "apiVersion": "pilotfish.io/v1alpha1",
            "kind": "Service",
            "metadata": { "name": name, "namespace": namespace },
            "spec": { "endpoints": endpoints },
        }));
    }
    docs.iter()
        .map(|d| serde_json::to_string(d).expect("JSON serializes"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A send that does not complete in this long means the sidecar is gone (or hopelessly slow).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Streams snapshots to one sidecar until it goes away or the control plane stops.
pub async fn stream(
    cp: Arc<crate::server::ControlPlane>,
    id: String,
    generation: u64,
    resume: u64,
    mut tx: http_body_util::channel::Sender<Bytes, Infallible>,
) {
    let mut heads = cp.store().subscribe();
    let stop = cp.stopping();
    // A reconnecting sidecar that already has the current version gets nothing until a change.
    let mut last_sent = (resume != 0).then_some(resume);
    'stream: loop {
        let head = *heads.borrow_and_update();
        match cp.refresh_to(head).await {
            Ok(_) => {
                let (version, line) = cp.snapshot_line().await;
                if last_sent != Some(version) {
                    match tokio::time::timeout(SEND_TIMEOUT, tx.send_data(line)).await {
                        Ok(Ok(())) => {}
                        _ => break 'stream,
                    }
                    cp.proxies().sent(&id, version).await;
                    last_sent = Some(version);
                }
            }
            Err(e) => {
                // Without a readable log this replica cannot serve the sidecar: end the stream so
                // it moves to another replica.
                tracing::error!(proxy = %id, error = %e, "cannot read the event log; closing the push stream");
                break 'stream;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break 'stream,
            changed = heads.changed() => {
                if changed.is_err() {
                    break 'stream;
                }
                tokio::time::sleep(DEBOUNCE).await;
            }
            _ = tokio::time::sleep(KEEPALIVE) => {
                match tokio::time::timeout(SEND_TIMEOUT, tx.send_data(Bytes::from_static(b"\n"))).await {
                    Ok(Ok(())) => {}
                    _ => break 'stream,
                }
            }
        }
    }
    cp.proxies().disconnected(&id, generation).await;
}
