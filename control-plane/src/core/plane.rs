//! The control plane's state and its upkeep: the event store, the read model folded from it
//! (and kept up with the log), the leases of registered instances, the sidecars' sync status,
//! the push snapshot cache and the mesh CA. The operations on it live beside this file, one file per
//! resource group; none of them knows HTTP.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::RwLock;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use pilotfish_api::authz::MeshDefault;
use pilotfish_api::wire::MeshSettings;

use super::ca_counters::CaCounters;
use super::caller::AdminToken;
use super::discovered::Discovered;
use super::leases::{Lease, Leases};
use super::namespaces::{NamespaceAnnotations, Namespaces};
use super::review::{ReviewTokens, Reviews};
use super::tap::Taps;
use crate::ca::{Ca, MeshCa};
use crate::history::History;
use crate::inject::admission::Injector;
use crate::model::{endpoint_aggregate, State};
use crate::push::{self, Proxies, SnapshotCache};
use crate::store::{EventStore, StoreError};
use crate::telemetry::Telemetry;

/// Events folded between two snapshots of the read model.
const SNAPSHOT_EVERY: u64 = 1000;

/// How a control plane is run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bearer token of admin operations.
    pub admin_token: String,
    /// How long a disconnected proxy stays in `/v1/proxies`.
    pub proxy_retention: Duration,
    /// Connected proxies one service may have (beyond it `GET /v1/push` answers 429).
    pub max_proxies_per_service: usize,
    /// The trust domain of every identity the CA issues (checked by the caller, e.g. the CLI).
    pub trust_domain: String,
    /// How long the leaves the CA issues live.
    pub cert_ttl: Duration,
    /// What applies to a call to a service no ALLOW policy targets, pushed to every sidecar.
    pub authz_default: MeshDefault,
}

/// The trust domain when none is given.
pub const DEFAULT_TRUST_DOMAIN: &str = "pilotfish.local";
/// A leaf's lifetime when none is given.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

impl Settings {
    pub fn new(admin_token: String) -> Self {
        Self {
            admin_token,
            proxy_retention: push::DEFAULT_RETENTION,
            max_proxies_per_service: push::DEFAULT_MAX_PER_SERVICE,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            cert_ttl: DEFAULT_CERT_TTL,
            authz_default: MeshDefault::default(),
        }
    }
}

pub struct ControlPlane {
    pub(super) store: Arc<dyn EventStore>,
    pub(super) state: RwLock<State>,
    /// Leases of registered instances: live state, renewed by heartbeats (which are not events:
    /// they would flood the log).
    pub(super) leases: Leases,
    pub(super) admin_token: AdminToken,
    pub(super) proxies: Proxies,
    /// The configuration at earlier points of the log (diff, rollback).
    pub(super) history: History,
    /// The mesh CA as the log has it (root rotations); its keys never leave it.
    pub(super) ca: MeshCa,
    /// The root the control plane's own serving certificate chains to (the issuer in force
    /// when it started): what the join tokens it makes pin.
    pub(super) serving_root: String,
    pub(super) trust_domain: String,
    pub(super) cert_ttl: Duration,
    pub(super) authz_default: MeshDefault,
    /// What the CA issued and refused, for `/metrics`.
    pub(super) ca_counters: CaCounters,
    /// The sidecars' telemetry reports, in rolling windows (`/v1/stats`).
    pub(super) telemetry: Telemetry,
    /// The taps open on this replica (`/v1/tap`).
    pub(super) taps: Arc<Taps>,
    /// The newest snapshot line, shared by every push stream (built once per version).
    snapshots: SnapshotCache,
    /// Services and endpoints a discovery source (Kubernetes) reports: live, never in the log.
    discovered: Discovered,
    /// Checks Kubernetes ServiceAccount tokens (with `--kubernetes`), with its recent answers.
    pub(super) reviews: Reviews,
    /// Namespaces' annotations (with `--kubernetes`), for the injection webhook.
    namespaces: Namespaces,
    /// Cancelled when the control plane stops: ends the push streams, so a graceful shutdown
    /// does not wait on them forever.
    stopping: CancellationToken,
    /// The admission webhook's injector, set once at start ([`ControlPlane::set_injector`]).
    injector: OnceLock<Injector>,
}

impl ControlPlane {
    /// Loads the read model (latest snapshot plus later events) and the leases of registered
    /// instances, which restart their TTL: the control plane cannot know of heartbeats it missed.
    /// `ca` signs the sidecars' certificates; its roots are pushed to every sidecar.
    pub async fn open(
        store: Arc<dyn EventStore>,
        settings: Settings,
        ca: Ca,
    ) -> Result<Arc<Self>, StoreError> {
        let mut state = match store.latest_snapshot().await? {
            Some((_, snapshot)) => serde_json::from_value(snapshot).unwrap_or_default(),
            None => State::default(),
        };
        catch_up(&*store, &mut state).await?;
        let ca = MeshCa::new(ca);
        ca.follow(&state.ca).await;
        let now = Instant::now();
        let leases = Leases::default();
        {
            let mut held = leases.lock().await;
            let owned = !store.shared();
            for e in state.endpoints.values() {
                let ttl = Duration::from_secs(e.ttl_seconds);
                let version = store.aggregate_version(&endpoint_aggregate(&e.id)).await?;
                held.insert(e.id.clone(), Lease { deadline: now + ttl, ttl, version, owned });
            }
        }
        Ok(Arc::new(Self {
            store,
            state: RwLock::new(state),
            leases,
            admin_token: AdminToken::new(&settings.admin_token),
            proxies: Proxies::new(settings.proxy_retention, settings.max_proxies_per_service),
            history: History::default(),
            snapshots: SnapshotCache::new(MeshSettings {
                trust_domain: settings.trust_domain.clone(),
                trust_bundle_pem: String::new(),
                authz_default: settings.authz_default,
                renew_before: None,
            }),
            serving_root: ca.view().issuer.fingerprint(),
            ca,
            trust_domain: settings.trust_domain,
            cert_ttl: settings.cert_ttl,
            authz_default: settings.authz_default,
            ca_counters: CaCounters::default(),
            discovered: Discovered::default(),
            reviews: Reviews::default(),
            namespaces: Namespaces::default(),
            telemetry: Telemetry::default(),
            taps: Arc::default(),
            stopping: CancellationToken::new(),
            injector: OnceLock::new(),
        }))
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn state(&self) -> &RwLock<State> {
        &self.state
    }

    pub fn proxies(&self) -> &Proxies {
        &self.proxies
    }

    /// The mesh CA issuing now (e.g. to issue the control plane's own serving certificate).
    pub fn ca(&self) -> Arc<Ca> {
        self.ca.view().issuer.clone()
    }

    /// The push line of `state` and the services discovered now, with the trust bundle and
    /// `renewBefore` of its point of the log.
    pub fn snapshot_line(&self, state: &State) -> (u64, bytes::Bytes) {
        self.snapshots.line(state, &self.discovered.current(), &self.ca.view().bundle_pem)
    }

    /// What a discovery source (Kubernetes) reports; it publishes here.
    pub fn discovered(&self) -> &Discovered {
        &self.discovered
    }

    /// Reviews bearer tokens that are none of the control plane's own with `reviewer` from now
    /// on (`--kubernetes`: ServiceAccount tokens); set once at start.
    pub fn review_tokens_with(&self, reviewer: Arc<dyn ReviewTokens>) {
        self.reviews.set(reviewer);
    }

    /// Reads namespaces' annotations from `source` from now on; set once at start.
    pub fn read_namespaces_with(&self, source: Arc<dyn NamespaceAnnotations>) {
        self.namespaces.set(source);
    }

    /// A namespace's annotations (none without `--kubernetes`): the injection webhook's
    /// defaults for the namespace's pods.
    pub fn namespace_annotations(&self) -> &dyn NamespaceAnnotations {
        &self.namespaces
    }

    /// The trust domain of every identity the CA issues.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The admission webhook's injector: the one set with [`ControlPlane::set_injector`], or
    /// the documented defaults without namespace annotations.
    pub fn injector(&self) -> &Injector {
        self.injector.get_or_init(Injector::default)
    }

    /// Sets the webhook's injector (its options, and with `--kubernetes` the lookup of a
    /// namespace's annotations), once, before serving. `false` (and nothing changes) if one is
    /// already in use.
    #[must_use]
    pub fn set_injector(&self, injector: Injector) -> bool {
        self.injector.set(injector).is_ok()
    }

    /// Starts stopping: push streams end (sidecars reconnect elsewhere or later).
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Folds in whatever the log has beyond the read model; returns the head.
    pub async fn refresh(&self) -> Result<u64, StoreError> {
        let head = self.store.head().await?;
        self.refresh_to(head).await
    }

    /// Folds in the log up to at least `head` (known from the head watch, sparing a store read).
    pub async fn refresh_to(&self, head: u64) -> Result<u64, StoreError> {
        // Readers share the read model; only a log that moved ahead takes the write lock.
        {
            let state = self.state.read().await;
            if state.seq >= head {
                return Ok(state.seq);
            }
        }
        let mut state = self.state.write().await;
        let before = state.seq;
        let caught_up = catch_up(&*self.store, &mut state).await;
        // Under the write lock: no push line or certificate of the new point of the log goes
        // out before the CA follows it (also after a page that failed half-way).
        self.ca.follow(&state.ca).await;
        caught_up?;
        if state.seq / SNAPSHOT_EVERY > before / SNAPSHOT_EVERY {
            let snapshot = serde_json::to_value(&*state).expect("the read model serializes");
            // A missed snapshot only makes the next start-up replay more of the log.
            if let Err(e) = self.store.save_snapshot(state.seq, snapshot).await {
                tracing::warn!(seq = state.seq, error = %e, "cannot save a snapshot of the read model");
            }
        }
        Ok(state.seq)
    }

    /// Follows the log's CA record again if the last attempt could not (its keys were not
    /// readable then): called by the background loop.
    pub async fn follow_ca(&self) {
        if self.ca.follows(self.state.read().await.ca.version) {
            return;
        }
        let state = self.state.write().await;
        self.ca.follow(&state.ca).await;
    }

    /// After a committed write: fold it in, but never turn a durable write into an error
    /// (a client would retry and write twice).
    pub(super) async fn settle(&self) {
        if let Err(e) = self.refresh().await {
            tracing::error!(error = %e, "cannot fold a committed write into the read model");
        }
    }
}

async fn catch_up(store: &dyn EventStore, state: &mut State) -> Result<(), StoreError> {
    loop {
        let page = store.events_since(state.seq, 1000).await?;
        if page.is_empty() {
            return Ok(());
        }
        for event in &page {
            state.apply(event)?;
        }
    }
}
