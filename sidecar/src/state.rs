//! What every listener and connection of one sidecar shares: the config snapshot in force, the
//! metrics, the span export (when traces are on), the termination and shutdown signals with the
//! tracker that drain waits on, and readiness — which termination or the death of any long-lived task takes away (see
//! [`Shared::supervise`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use pilotfish_api::client::SharedClientCert;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identity::publish::Reported;
use crate::identity::status::Status as IdentityStatus;
use crate::identity::Identity;
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::tap::Tap;
use crate::telemetry::trace::Tracing;

pub struct Shared {
    /// Swapped whole on reload; a connection or request loads it once.
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    /// The span export, set once at start with `--otlp-endpoint`.
    pub tracing: OnceLock<Tracing>,
    /// This sidecar's mesh identity, once it has one; swapped whole on renewal.
    pub identity: ArcSwapOption<Identity>,
    /// Where the identity comes from, its roots and renewals (`GET /identity`).
    pub identity_status: IdentityStatus,
    /// What the control plane is told of the identity in force (its certificate and the roots
    /// it trusts): set with every identity installed, changed only when the report does (the
    /// push client re-ACKs on a change).
    pub reported: watch::Sender<Option<Reported>>,
    /// The certificate presented to an https control plane: the mesh identity's, so the
    /// sidecar goes on after its join token expires.
    pub client_cert: SharedClientCert,
    /// Cancelled when SIGTERM arrives: readiness goes at once, while everything serves on for
    /// the drain delay (`--drain-delay`) before [`Shared::shutdown`].
    pub terminating: CancellationToken,
    /// Cancelled when the sidecar starts draining.
    pub shutdown: CancellationToken,
    /// Every connection task, so that drain can wait for them.
    pub tracker: TaskTracker,
    /// What to record for the operators tapping this sidecar's service (managed mode).
    pub tap: Arc<Tap>,
    ready: AtomicBool,
    /// Why the sidecar can no longer be ready: the first long-lived task that died.
    died: OnceLock<String>,
}

impl Shared {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::with_client_cert(snapshot, metrics, SharedClientCert::default())
    }

    /// [`Shared::new`], putting its identity in force in `client_cert` too (the control-plane
    /// clients made before it present that).
    pub fn with_client_cert(
        snapshot: Snapshot,
        metrics: Arc<Metrics>,
        client_cert: SharedClientCert,
    ) -> Arc<Self> {
        metrics.config_version.set(snapshot.version as i64);
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            tracing: OnceLock::new(),
            identity: ArcSwapOption::empty(),
            identity_status: IdentityStatus::default(),
            reported: watch::Sender::new(None),
            client_cert,
            terminating: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            tap: Arc::default(),
            ready: AtomicBool::new(false),
            died: OnceLock::new(),
        })
    }

    /// Ready once config is loaded, the listeners are bound and (managed mode) the mesh
    /// identity is in hand, until termination starts (SIGTERM, `POST /shutdown`) or a
    /// long-lived task dies.
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why the sidecar is not ready (`/ready`'s answer), or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(died) = self.died() {
            Some(format!("not ready: {died}"))
        } else if self.shutdown.is_cancelled() {
            Some("draining".into())
        } else if self.terminating.is_cancelled() {
            Some("terminating: serving on for the drain delay, then draining".into())
        } else if let Some(pending) = self.identity_pending() {
            Some(format!("not ready: {pending}"))
        } else if !self.ready.load(Ordering::Acquire) {
            Some("not ready: starting".into())
        } else {
            None
        }
    }

    /// Why readiness waits for the mesh identity, if it does.
    pub fn identity_pending(&self) -> Option<String> {
        self.identity_status.waiting(self.identity.load().as_deref())
    }

    /// Which long-lived task died, and how.
    pub fn died(&self) -> Option<&str> {
        self.died.get().map(String::as_str)
    }

    /// Spawns a long-lived task (an accept loop, the admin listener, config reload or the push
    /// follower). None of them should ever panic; if one does anyway, the process keeps serving
    /// what still works but answers `/ready` with 503 from then on, so that an orchestrator
    /// replaces it instead of sending traffic to a listener nobody accepts on, or trusting a
    /// sidecar that no longer receives configuration.
    pub fn supervise(self: &Arc<Self>, task: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(work);
        let shared = self.clone();
        tokio::spawn(async move {
            if let Err(e) = handle.await {
                tracing::error!(task, "a long-lived task died, the sidecar is no longer ready: {e}");
                let _ = shared.died.set(format!("the {task} task died: {e}"));
            }
        });
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Overrides;

    #[tokio::test]
    async fn a_task_that_dies_takes_readiness_with_it() {
        let metrics = Metrics::new();
        let snap = Snapshot::build("t", "", &Overrides::default(), None, &metrics).unwrap();
        let shared = Shared::new(snap, metrics);
        shared.set_ready();
        shared.supervise("quiet", async {});
        shared.supervise("config reload", async { panic!("boom") });
        let dead = async {
            while shared.is_ready() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), dead).await.expect("readiness is gone");
        let died = shared.died().unwrap();
        assert!(died.starts_with("the config reload task died") && died.contains("boom"), "{died}");
    }
}
