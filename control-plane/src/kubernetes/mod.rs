//! `--kubernetes`: the cluster as the registry's source and the sidecars' credential check.
//!
//! - [`translate`]: Services, EndpointSlices and Pods into the registry's services (which
//!   port, which endpoints, which identity).
//! - [`discovery`]: the watches that keep the registry current.
//! - [`review`]: TokenReview, checking a sidecar's ServiceAccount token.
//! - [`namespaces`]: the namespace reflector (annotations for the injection webhook, labels
//!   for the trust bundle).
//! - [`trust`]: the trust-bundle ConfigMaps and the injector webhook's `caBundle`.
//!
//! What it needs of the API server (RBAC): list/watch services, endpointslices
//! (discovery.k8s.io), pods and namespaces; create tokenreviews (authentication.k8s.io);
//! get/create/patch configmaps; get/update the one MutatingWebhookConfiguration.

pub mod discovery;
pub mod namespaces;
pub mod review;
pub mod translate;
pub mod trust;

use std::sync::Arc;

use kube::runtime::reflector;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::core::ControlPlane;

/// The injector's MutatingWebhookConfiguration when none is named.
pub const DEFAULT_WEBHOOK_CONFIG: &str = "pilotfish-injector";

/// How the control plane uses the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// The MutatingWebhookConfiguration whose `caBundle` is set to the mesh CA's roots.
    pub webhook_config: String,
}

/// The cluster cannot be reached with the configuration found.
#[derive(Debug, thiserror::Error)]
#[error("cannot use Kubernetes (in-cluster service account, or KUBECONFIG): {0}")]
pub struct KubernetesError(#[from] kube::Error);

/// Connects to the cluster (in-cluster config, or KUBECONFIG) and starts using it for `cp`:
/// its services and endpoints feed the registry, its TokenReview checks sidecars' tokens, and
/// the trust bundle is kept in the labelled namespaces, until `stop`.
pub async fn start(
    cp: Arc<ControlPlane>,
    options: Options,
    stop: CancellationToken,
) -> Result<(), KubernetesError> {
    let client = Client::try_default().await?;
    cp.discovered().enable();
    cp.review_tokens_with(Arc::new(review::TokenReviewer::new(client.clone())));
    let (store, writer) = reflector::store();
    let namespaces = Arc::new(namespaces::Namespaces(store));
    cp.read_namespaces_with(namespaces.clone());
    tokio::spawn(discovery::run(client.clone(), cp.clone(), stop.clone()));
    tokio::spawn(trust::run(client, cp, namespaces, writer, options.webhook_config, stop));
    Ok(())
}
