//! The mesh's trust bundle where Kubernetes workloads read it: ConfigMap `pilotfish-ca` (key
//! `ca.pem`) in every namespace labelled `pilotfish.io/inject=enabled`, written at start, when a
//! namespace gets the label, and when the bundle changes (a root rotation); and the `caBundle`
//! of the injector's MutatingWebhookConfiguration, so the API server trusts the webhook's
//! certificate (issued by the mesh CA). Writes that fail are tried again on the next tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::namespaces::Namespaces;
use crate::core::ControlPlane;

/// The ConfigMap's name and key, as injected pods mount it.
pub const CONFIG_MAP: &str = "pilotfish-ca";
pub const KEY: &str = "ca.pem";
/// Server-side apply's field manager.
const MANAGER: &str = "pilotfish-control-plane";
/// How often the bundle is compared with what was written, and failed writes are retried.
const TICK: Duration = Duration::from_secs(2);
/// How often every ConfigMap is written again whatever this replica wrote before: one deleted
/// or edited by hand comes back.
const RESYNC: Duration = Duration::from_secs(300);

/// Keeps the ConfigMaps and the webhook's `caBundle` current until `stop`.
pub async fn run(
    client: Client,
    cp: Arc<ControlPlane>,
    namespaces: Arc<Namespaces>,
    writer: Writer<Namespace>,
    webhook: String,
    stop: CancellationToken,
) {
    let events = reflector::reflector(
        writer,
        watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff();
    tokio::pin!(events);
    // The bundle each namespace's ConfigMap holds, as this replica wrote it.
    let mut written: HashMap<String, String> = HashMap::new();
    let mut webhook_bundle: Option<String> = None;
    // A missing webhook configuration (not deployed yet, or not at all) is said once, not
    // every tick.
    let mut webhook_warned = false;
    let mut tick = tokio::time::interval(TICK);
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => match event {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Kubernetes watch of namespaces failed; retrying");
                    continue;
                }
                // Only a complete view or a change of one namespace is worth a look.
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => {}
            _ = resync.tick() => written.clear(),
        }
        let bundle = cp.ca_bundle();
        if webhook_bundle.as_ref() != Some(&bundle) {
            match patch_webhook(&client, &webhook, &bundle).await {
                Ok(()) => webhook_bundle = Some(bundle.clone()),
                Err(e) if !webhook_warned => {
                    webhook_warned = true;
                    tracing::warn!(webhook = %webhook, error = %e, "cannot set the injector webhook's caBundle; retrying quietly");
                }
                Err(e) => {
                    tracing::debug!(webhook = %webhook, error = %e, "cannot set the injector webhook's caBundle")
                }
            }
        }
        let injected = namespaces.injected();
        written.retain(|ns, _| injected.contains(ns));
        for ns in injected {
            if written.get(&ns) == Some(&bundle) {
                continue;
            }
            match write_config_map(&client, &ns, &bundle).await {
                Ok(()) => {
                    tracing::info!(namespace = %ns, "trust bundle ConfigMap {CONFIG_MAP} written");
                    written.insert(ns, bundle.clone());
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "cannot write ConfigMap {CONFIG_MAP}; retrying")
                }
            }
        }
    }
}

/// Creates or updates `ns`'s ConfigMap (server-side apply: one call either way, and only the
/// fields this control plane owns are touched).
async fn write_config_map(client: &Client, ns: &str, bundle: &str) -> Result<(), kube::Error> {
    let config_map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIG_MAP,
            "namespace": ns,
            "labels": { "app.kubernetes.io/managed-by": "pilotfish" },
        },
        "data": { KEY: bundle },
    });
    let params = PatchParams::apply(MANAGER).force();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(CONFIG_MAP, &params, &Patch::Apply(config_map))
        .await?;
    Ok(())
}

/// Sets the `caBundle` of every webhook of the configuration `name` (a replace with the
/// object's resourceVersion: a concurrent change makes it fail and be tried again).
async fn patch_webhook(client: &Client, name: &str, bundle: &str) -> Result<(), kube::Error> {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let mut config = api.get(name).await?;
    let ca = ByteString(bundle.as_bytes().to_vec());
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&ca) {
            webhook.client_config.ca_bundle = Some(ca.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(name, &PostParams::default(), &config).await?;
        tracing::info!(webhook = %name, "injector webhook's caBundle set to the mesh CA's roots");
    }
    Ok(())
}
