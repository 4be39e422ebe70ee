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
//!   certificate (and the certificate renewed at once if the new bundle no longer trusts it),
//!   even while an attempt waits for the CA; a new certificate goes in force with the newest
//!   pushed bundle, not the (perhaps older) one the CA answered with;
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
use tokio::time::Instant;

use super::material::{self, Built, MaterialError};
use super::mesh_feed::MeshReceiver;
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

/// A certificate the CA answered with, not yet checked against a bundle.
struct Certified {
    credentials: Credentials,
    answer: CertifyResponse,
}

/// Where the loop stands between attempts.
struct State {
    held: Option<Held>,
    /// The newest bundle the push stream brought: what a new certificate goes in force with.
    pushed: Option<String>,
    /// Failed attempts in a row.
    failures: u32,
    /// When the next attempt is due.
    due: Instant,
    last_attempt: Option<Instant>,
    /// The last `renewBefore` acted on.
    acted_on: Option<String>,
    /// A `renewBefore` asked for a renewal while an attempt was on its way, whose answer may
    /// come from the old issuer: renew again once it is in.
    again: bool,
}

/// Keeps this sidecar's identity: certifies at once, then renews until the sidecar shuts down.
pub struct Renewer<C> {
    pub ca: C,
    pub shared: Arc<Shared>,
    pub provider: Arc<CryptoProvider>,
    pub clock: Clock,
}

impl<C: Certify> Renewer<C> {
    /// Runs until shutdown, following the mesh settings of the push stream — also while an
    /// attempt waits for the CA, so a pushed bundle is in force at once (its ACK waits for
    /// it, see [`super::mesh_feed`]). A control plane without a CA sends no settings: there is
    /// nothing to ask until it does, and the sidecar serves plaintext meanwhile.
    pub async fn run(self, mut mesh: MeshReceiver) {
        let first = loop {
            if let Some(settings) = mesh.settings.borrow_and_update().clone() {
                break settings;
            }
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                changed = mesh.settings.changed() => if changed.is_err() { return },
            }
        };
        self.shared.identity_status.set_mode(Mode::ControlPlane);
        // No certificate yet: the first one goes in force with this bundle.
        mesh.settled(&first.trust_bundle_pem);
        let mut state = State {
            held: None,
            pushed: Some(first.trust_bundle_pem),
            failures: 0,
            due: Instant::now(),
            last_attempt: None,
            // The first certificate is asked for now, so a renewBefore already known is met.
            acted_on: first.renew_before,
            again: false,
        };
        let mut attempt = None;
        let mut mesh_open = true;
        loop {
            self.shared.identity_status.next_renewal(Some(self.wall(state.due)));
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(state.due), if attempt.is_none() => {
                    state.last_attempt = Some(Instant::now());
                    attempt = Some(Box::pin(self.attempt()));
                }
                result = async { attempt.as_mut().expect("guarded by the condition").await }, if attempt.is_some() => {
                    attempt = None;
                    self.renewed(&mut state, result);
                }
                changed = mesh.settings.changed(), if mesh_open => match changed {
                    Ok(()) => {
                        let settings = mesh.settings.borrow_and_update().clone();
                        if let Some(settings) = settings {
                            let bundle = settings.trust_bundle_pem.clone();
                            self.follow(&mut state, settings, attempt.is_some());
                            mesh.settled(&bundle);
                        }
                    }
                    Err(_) => mesh_open = false,
                },
            }
        }
    }

    /// What an attempt changes: the identity in force, the metrics and status, and when the
    /// next attempt is due.
    fn renewed(&self, state: &mut State, result: Result<Certified, RenewError>) {
        let now = (self.clock)();
        let result = result.and_then(|certified| self.accept(certified, state.pushed.as_deref(), now));
        self.shared.metrics.identity.renewed(result.is_ok());
        match result {
            Ok((new, built)) => {
                state.failures = 0;
                let lifetime = new.not_after.duration_since(now).unwrap_or_default();
                state.due = Instant::now() + renew_after(lifetime);
                if std::mem::take(&mut state.again) {
                    state.due = state.due.min(soon(state));
                }
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
                // The retry asks the CA anew, after any renewBefore.
                state.again = false;
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
    /// `attempting`: an attempt is on its way to the CA.
    fn follow(&self, state: &mut State, settings: MeshSettings, attempting: bool) {
        let bundle = settings.trust_bundle_pem;
        let new_bundle = state.pushed.as_ref() != Some(&bundle);
        state.pushed = Some(bundle.clone());
        let asap = soon(state);
        let Some(held) = state.held.as_mut() else {
            // The first certificate is on its way, and goes in force with the newest bundle.
            state.acted_on = settings.renew_before;
            return;
        };
        let mut renew = false;
        if new_bundle && held.bundle_pem != bundle {
            renew = self.rebundle(held, bundle);
        }
        if settings.renew_before.is_some() && settings.renew_before != state.acted_on {
            state.acted_on = settings.renew_before;
            let before = state.acted_on.as_deref().unwrap_or_default();
            if renews(held.received, before) {
                tracing::info!("the CA asks for certificates issued before {before} to be renewed; renewing");
                renew = true;
                state.again |= attempting;
            }
        }
        if renew {
            state.due = state.due.min(asap);
        }
    }

    /// One certify round trip: a key, a CSR, the CA's answer.
    async fn attempt(&self) -> Result<Certified, RenewError> {
        let key = KeyPair::generate()?;
        let csr = CertificateParams::default().serialize_request(&key)?.pem()?;
        let answer = self.ca.certify(csr).await.map_err(|e| RenewError::Ca(e.to_string()))?;
        let credentials = Credentials::from_pem(answer.chain_pem.as_bytes(), key.serialize_pem().as_bytes())
            .map_err(MaterialError::from)?;
        Ok(Certified { credentials, answer })
    }

    /// The CA's certificate, checked, with the bundle it goes in force with: the newest pushed
    /// one. The CA's answer names a bundle too, but it may be older than a push that came
    /// meanwhile (a retired root still in it), so it is used only while nothing was pushed, or
    /// when the certificate chains to it and not to the pushed one — the push stream is behind
    /// the CA — until the next push.
    fn accept(
        &self,
        certified: Certified,
        pushed: Option<&str>,
        now: SystemTime,
    ) -> Result<(Held, Built), RenewError> {
        let Certified { credentials, answer } = certified;
        let check = |bundle: &str| material::check(&credentials, bundle.as_bytes(), now, &self.provider);
        let bundle_pem = match pushed {
            None => {
                check(&answer.trust_bundle_pem)?;
                answer.trust_bundle_pem
            }
            Some(pushed) => match check(pushed) {
                Ok(()) => pushed.to_owned(),
                Err(e) => {
                    if check(&answer.trust_bundle_pem).is_err() {
                        return Err(e.into());
                    }
                    tracing::warn!("the new certificate chains to the CA's bundle but not to the pushed one; the CA's is in force until the next push: {e}");
                    answer.trust_bundle_pem
                }
            },
        };
        let built = material::build(&credentials, bundle_pem.as_bytes(), now, &self.provider)?;
        if built.identity.id != answer.identity {
            let (said, named) = (answer.identity.to_string(), built.identity.id.to_string());
            return Err(RenewError::WrongIdentity { said, named });
        }
        let held = Held { credentials, bundle_pem, received: now, not_after: built.identity.not_after };
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

/// The soonest an attempt may start: now, or [`MIN_SPACING`] after the last.
fn soon(state: &State) -> Instant {
    let now = Instant::now();
    state.last_attempt.map_or(now, |t| t + MIN_SPACING).max(now)
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
