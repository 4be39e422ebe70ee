//! Managed mode's identity: a key made in memory, a CSR sent to the control plane's CA, the
//! certificate it answers with put in force, and renewed before it expires (timing in
//! [`super::schedule`]).
//!
//! What can go wrong, and what the loop does (as linkerd's `identity-client/certify.rs`):
//! - the CA is unreachable or refuses: the still-valid certificate stays in force, the failure
//!   is counted, and the attempt is retried with backoff;
//! - the CA answers with a certificate that has already expired, does not chain to the bundle
//!   or names another identity than it says: refused like a failure, never installed;
//! - the push stream brings a new trust bundle: the configurations are rebuilt around the same
//!   certificate (and the certificate renewed at once if the new bundle no longer trusts it);
//! - the push stream's `renewBefore` is later than this certificate's arrival: the CA switched
//!   issuers, so the certificate is renewed now (each `renewBefore` value is acted on once).
//!
//! A new key is made for every attempt: it costs microseconds, and a key never outlives its
//! certificate. The CA is reached through [`Certify`], so unit tests can answer with
//! certificates they sign themselves.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use pilotfish_api::wire::{CertifyResponse, MeshSettings};
use rcgen::{CertificateParams, KeyPair};
use rustls::crypto::CryptoProvider;
use tokio::sync::watch;
use tokio::time::Instant;

use super::material::{self, Built, MaterialError};
use super::publish;
use super::schedule::{renew_after, retry_after, MIN_SPACING};
use super::status::Mode;
use crate::state::Shared;
use crate::tls::Credentials;

/// The CA, as the renew loop sees it: a CSR (PEM) in, a certificate chain and bundle out.
pub trait Certify {
    type Error: std::fmt::Display;

    fn certify(&self, csr_pem: String) -> impl Future<Output = Result<CertifyResponse, Self::Error>> + Send;
}

/// The wall clock; tests move it with tokio's paused clock.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Why a renewal attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("cannot make a key and CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("the CA did not certify: {0}")]
    Ca(String),
    #[error("the CA's certificate is refused: {0}")]
    Refused(#[from] MaterialError),
    #[error("the CA said it certified {said}, but the certificate names {named}")]
    WrongIdentity { said: String, named: String },
}

/// The certificate in force and what it was installed with.
struct Held {
    credentials: Credentials,
    bundle_pem: String,
    /// When it arrived (by the wall clock): the lifetime and `renewBefore` count from here.
    received: SystemTime,
    not_after: SystemTime,
}

/// Where the loop stands between attempts.
struct State {
    held: Option<Held>,
    /// Failed attempts in a row.
    failures: u32,
    /// When the next attempt is due.
    due: Instant,
    last_attempt: Option<Instant>,
    /// The last `renewBefore` acted on.
    acted_on: Option<String>,
}

/// Keeps this sidecar's identity: certifies at once, then renews until the sidecar shuts down.
pub struct Renewer<C> {
    pub ca: C,
    pub shared: Arc<Shared>,
    pub provider: Arc<CryptoProvider>,
    pub clock: Clock,
}

impl<C: Certify> Renewer<C> {
    /// Runs until shutdown, following the mesh settings of the push stream. A control plane
    /// without a CA sends none: there is nothing to ask until it does, and the sidecar serves
    /// plaintext meanwhile.
    pub async fn run(self, mut mesh: watch::Receiver<Option<MeshSettings>>) {
        while mesh.borrow_and_update().is_none() {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                changed = mesh.changed() => if changed.is_err() { return },
            }
        }
        self.shared.identity_status.set_mode(Mode::ControlPlane);
        let mut state = State {
            held: None,
            failures: 0,
            due: Instant::now(),
            last_attempt: None,
            // The first certificate is asked for now, so a renewBefore already known is met.
            acted_on: mesh.borrow().as_ref().and_then(|m| m.renew_before.clone()),
        };
        let mut mesh_open = true;
        loop {
            self.shared.identity_status.next_renewal(Some(self.wall(state.due)));
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(state.due) => self.renew(&mut state).await,
                changed = mesh.changed(), if mesh_open => match changed {
                    Ok(()) => {
                        let settings = mesh.borrow_and_update().clone();
                        if let Some(settings) = settings {
                            self.follow(&mut state, settings);
                        }
                    }
                    Err(_) => mesh_open = false,
                },
            }
        }
    }

    /// An attempt, and what it changes: the identity in force, the metrics and status, and
    /// when the next attempt is due.
    async fn renew(&self, state: &mut State) {
        state.last_attempt = Some(Instant::now());
        let result = self.attempt().await;
        let now = (self.clock)();
        self.shared.metrics.identity.renewed(result.is_ok());
        match result {
            Ok((new, built)) => {
                state.failures = 0;
                let lifetime = new.not_after.duration_since(now).unwrap_or_default();
                state.due = Instant::now() + renew_after(lifetime);
                tracing::info!(
                    id = %built.identity.id,
                    not_after = %humantime::format_rfc3339_seconds(new.not_after),
                    "mesh certificate from the control plane's CA in force"
                );
                self.shared.identity_status.renewed(now, None);
                publish::install(&self.shared, built);
                state.held = Some(new);
            }
            Err(e) => {
                state.failures += 1;
                let remaining = state.held.as_ref().and_then(|h| h.not_after.duration_since(now).ok());
                let retry = retry_after(state.failures, remaining);
                state.due = Instant::now() + retry;
                let failures = state.failures;
                match remaining {
                    Some(left) => tracing::warn!(
                        failures,
                        ?retry,
                        "certificate renewal failed; the current one stays in force ({}s left): {e}",
                        left.as_secs()
                    ),
                    None => tracing::warn!(failures, ?retry, "no mesh certificate: {e}"),
                }
                self.shared.identity_status.renewed(now, Some(e.to_string()));
            }
        }
    }

    /// New mesh settings from the push stream: a changed bundle, a `renewBefore`.
    fn follow(&self, state: &mut State, settings: MeshSettings) {
        let Some(held) = state.held.as_mut() else {
            // The first certificate is on its way and comes with the CA's own bundle.
            state.acted_on = settings.renew_before;
            return;
        };
        let now = Instant::now();
        let soon = state.last_attempt.map_or(now, |t| t + MIN_SPACING).max(now);
        if held.bundle_pem != settings.trust_bundle_pem && self.rebundle(held, settings.trust_bundle_pem) {
            state.due = state.due.min(soon);
        }
        if settings.renew_before.is_some() && settings.renew_before != state.acted_on {
            state.acted_on = settings.renew_before;
            let before = state.acted_on.as_deref().unwrap_or_default();
            if renews(held.received, before) {
                tracing::info!("the CA asks for certificates issued before {before} to be renewed; renewing");
                state.due = state.due.min(soon);
            }
        }
    }

    /// One certify round trip, checked.
    async fn attempt(&self) -> Result<(Held, Built), RenewError> {
        let key = KeyPair::generate()?;
        let csr = CertificateParams::default().serialize_request(&key)?.pem()?;
        let answer = self.ca.certify(csr).await.map_err(|e| RenewError::Ca(e.to_string()))?;
        let credentials = Credentials::from_pem(answer.chain_pem.as_bytes(), key.serialize_pem().as_bytes())
            .map_err(MaterialError::from)?;
        let bundle = answer.trust_bundle_pem.as_bytes();
        let now = (self.clock)();
        material::check(&credentials, bundle, now, &self.provider)?;
        let built = material::build(&credentials, bundle, now, &self.provider)?;
        if built.identity.id != answer.identity {
            let (said, named) = (answer.identity.to_string(), built.identity.id.to_string());
            return Err(RenewError::WrongIdentity { said, named });
        }
        let held = Held {
            credentials,
            bundle_pem: answer.trust_bundle_pem,
            received: now,
            not_after: built.identity.not_after,
        };
        Ok((held, built))
    }

    /// Puts a new bundle in force around the certificate held; whether the certificate must be
    /// renewed now because the new bundle does not trust it.
    fn rebundle(&self, held: &mut Held, bundle_pem: String) -> bool {
        let now = (self.clock)();
        let built = match material::build(&held.credentials, bundle_pem.as_bytes(), now, &self.provider) {
            Ok(built) => built,
            Err(e) => {
                tracing::error!("the pushed trust bundle is unusable, the current one stays: {e}");
                return false;
            }
        };
        let trusted = material::check(&held.credentials, bundle_pem.as_bytes(), now, &self.provider);
        tracing::info!(roots = built.roots.len(), "new trust bundle in force");
        publish::install(&self.shared, built);
        held.bundle_pem = bundle_pem;
        if let Err(e) = &trusted {
            tracing::warn!("the new trust bundle does not trust this sidecar's certificate; renewing: {e}");
        }
        trusted.is_err()
    }

    /// `due` on the wall clock, for the status report.
    fn wall(&self, due: Instant) -> SystemTime {
        (self.clock)() + due.saturating_duration_since(Instant::now())
    }
}

/// Whether a certificate that arrived at `received` must be renewed under `renew_before` (RFC
/// 3339; an unparsable value is ignored, with a warning).
fn renews(received: SystemTime, text: &str) -> bool {
    match humantime::parse_rfc3339_weak(text) {
        Ok(before) => received < before,
        Err(e) => {
            tracing::warn!(renew_before = text, "ignoring an unreadable renewBefore: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests;
