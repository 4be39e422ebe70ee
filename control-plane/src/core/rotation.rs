//! Root rotation, a saga the control plane drives through the log. Each phase is an event, so
//! `history` shows it, a restarted control plane resumes it, and of replicas sharing etcd only
//! the one whose append lands moves it on (each expects the CA aggregate's version):
//! 1. `CaRootAdded` (`POST /v1/ca/rotate`): a new root and issuer are made and stored beside the
//!    CA (keys never enter the log); the root joins the pushed trust bundle. Old certificates
//!    stay valid and new ones are still signed by the old issuer.
//! 2. `CaIssuerActivated`, once every connected sidecar reports the new root among the roots in
//!    force for its handshakes (`trustedRoots`, on every ACK and NACK, and again whenever they
//!    change): the new issuer signs, and the push carries `renewBefore` so every sidecar renews
//!    now, once. An ACK alone proves nothing here — a sidecar may ACK a version whose bundle it
//!    could not use, and one that NACKs an unrelated configuration never ACKs the version
//!    carrying the root — so only a sidecar that reports no roots at all (no mesh identity, or
//!    one that predates the report) is taken at its ACK of a version carrying the new root.
//! 3. `CaRootRetired`, once every connected sidecar reports a certificate under the new root and
//!    the overlap has passed since step 2: the old roots leave the bundle.
//!
//! Nothing is ever trusted by one side and not yet by the other: a sidecar only meets certificates
//! of the new issuer after it trusts the new root, and the old root leaves only after no
//! connected sidecar presents a certificate under it. A sidecar disconnected meanwhile catches
//! up on reconnection (a bundle that no longer trusts its certificate makes it renew at once);
//! the overlap is its margin. With etcd, each replica sees only the sidecars connected to it:
//! give the overlap room for sidecars on other replicas to renew (they renew at once on the push).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pilotfish_api::wire::{CaRotation, CaStatus, ProxyStatus, RotateRequest, RotationPhase};
use serde::Serialize;

use super::caller::Caller;
use super::error::{Error, Result};
use super::plane::ControlPlane;
use crate::ca::CaError;
use crate::model::{kind, IssuerActivated, RootAdded, RootsRetired, Rotation, CA_AGGREGATE};
use crate::store::{AppendRequest, StoreError};

/// How long both roots stay trusted after the switch of issuer, unless the request says.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(60);
/// `renewBefore` is this far after the switch: a sidecar whose clock is ahead of the control
/// plane's by up to this much still renews.
const RENEW_MARGIN: Duration = Duration::from_secs(60);
/// Sidecars named in a rotation's status at most.
const NAMED: usize = 5;

impl ControlPlane {
    /// Starts a root rotation (step 1). 409 while one is under way, or when the CA was
    /// supplied by the operator.
    pub async fn rotate(&self, caller: &Caller, req: RotateRequest) -> Result<CaStatus> {
        let actor = caller.admin()?;
        let overlap: Duration = req.overlap.map_or(DEFAULT_OVERLAP, Into::into);
        let version = {
            let state = self.state.read().await;
            if let Some(rotation) = &state.ca.rotation {
                return Err(Error::Conflict(format!(
                    "a root rotation is under way (to root {}, {}): wait until it ends (`pilotfish ca status`)",
                    short(&rotation.new_root),
                    phase_name(rotation.phase)
                )));
            }
            state.ca.version
        };
        let new = self.ca.keystore().create().await.map_err(|e| match e {
            CaError::Supplied => Error::Conflict(e.to_string()),
            e => Error::Ca(e),
        })?;
        let added = RootAdded {
            fingerprint: new.fingerprint(),
            root_pem: new.root_pem(),
            old_roots: self.ca.view().roots.iter().map(|r| r.fingerprint.clone()).collect(),
            overlap_seconds: overlap.as_secs(),
            at: unix(SystemTime::now()),
        };
        tracing::info!(new_root = %added.fingerprint, overlap = ?overlap, "root rotation started");
        self.append_ca(kind::CA_ROOT_ADDED, &added, version, &actor).await.map_err(|e| match e {
            StoreError::Conflict { .. } => Error::Conflict(
                "another root rotation started at the same moment: see `pilotfish ca status`".into(),
            ),
            e => Error::Store(e),
        })?;
        self.settle().await;
        Ok(self.ca_status().await)
    }

    /// Moves the rotation under way on (steps 2 and 3) when what it waits for has happened.
    /// Called by the background loop; a replica that loses the race to append leaves it to the
    /// winner.
    pub async fn drive_rotation(&self) {
        let (rotation, version) = {
            let state = self.state.read().await;
            (state.ca.rotation.clone(), state.ca.version)
        };
        let Some(rotation) = rotation else { return };
        let now = SystemTime::now();
        if waiting_for(&rotation, &self.proxies.list(0), now).is_some() {
            return;
        }
        let at = unix(now);
        let written = match rotation.phase {
            RotationPhase::Distributing => {
                let renew_before = humantime::format_rfc3339_seconds(now + RENEW_MARGIN).to_string();
                let activated = IssuerActivated { fingerprint: rotation.new_root.clone(), renew_before, at };
                tracing::info!(root = %rotation.new_root, "every sidecar trusts the new root; it issues from now on");
                self.append_ca(kind::CA_ISSUER_ACTIVATED, &activated, version, "control plane").await
            }
            RotationPhase::Renewing => {
                let retired = RootsRetired { fingerprints: rotation.old_roots.clone(), at };
                tracing::info!(roots = ?rotation.old_roots, "every sidecar renewed under the new root; the old roots are retired");
                self.append_ca(kind::CA_ROOT_RETIRED, &retired, version, "control plane").await
            }
        };
        match written {
            Ok(()) => self.settle().await,
            Err(StoreError::Conflict { .. }) => tracing::debug!("another replica moved the rotation on"),
            Err(e) => tracing::warn!("cannot move the root rotation on; retrying: {e}"),
        }
    }

    /// The rotation under way as `GET /v1/ca` shows it.
    pub(super) async fn rotation_status(&self) -> Option<CaRotation> {
        let rotation = self.state.read().await.ca.rotation.clone()?;
        let waiting = waiting_for(&rotation, &self.proxies.list(0), SystemTime::now());
        Some(CaRotation {
            phase: rotation.phase,
            new_root: rotation.new_root,
            old_roots: rotation.old_roots,
            overlap_seconds: rotation.overlap_seconds,
            started_at: rfc3339_unix(rotation.started_at),
            phase_since: rfc3339_unix(rotation.phase_since),
            waiting_for: waiting.unwrap_or_else(|| "nothing: the next phase starts now".into()),
        })
    }

    async fn append_ca(
        &self,
        kind: &str,
        data: &impl Serialize,
        version: u64,
        actor: &str,
    ) -> std::result::Result<(), StoreError> {
        let data = serde_json::to_value(data).expect("CA events serialize");
        let request = AppendRequest::new(CA_AGGREGATE, kind, data, actor).expect_version(version);
        self.store.append(request).await.map(drop)
    }
}

/// What `rotation` waits for before its next phase, in words; `None`: nothing.
fn waiting_for(rotation: &Rotation, proxies: &[ProxyStatus], now: SystemTime) -> Option<String> {
    let connected = proxies.iter().filter(|p| p.connected);
    match rotation.phase {
        RotationPhase::Distributing => {
            let behind: Vec<_> = connected
                .filter(|p| match &p.trusted_roots {
                    Some(roots) => !roots.contains(&rotation.new_root),
                    None => p.acked_version < rotation.phase_seq,
                })
                .collect();
            (!behind.is_empty()).then(|| format!("{} to trust the new root", sidecars(&behind)))
        }
        RotationPhase::Renewing => {
            // A sidecar without a certificate (plaintext, or one that predates the report) has
            // nothing to renew.
            let behind: Vec<_> = connected
                .filter(|p| {
                    p.certificate.as_ref().is_some_and(|c| c.root.as_deref() != Some(&rotation.new_root))
                })
                .collect();
            if !behind.is_empty() {
                return Some(format!("{} to renew under the new root", sidecars(&behind)));
            }
            let end = UNIX_EPOCH
                + Duration::from_secs(rotation.phase_since.saturating_add(rotation.overlap_seconds));
            (now < end).then(|| {
                format!(
                    "the overlap: both roots stay trusted until {}",
                    humantime::format_rfc3339_seconds(end)
                )
            })
        }
    }
}

/// "2 sidecars (web/web-1, web/web-2)", naming a few.
fn sidecars(proxies: &[&ProxyStatus]) -> String {
    let named: Vec<_> = proxies.iter().take(NAMED).map(|p| format!("{}/{}", p.service, p.id)).collect();
    let more =
        if proxies.len() > NAMED { format!(", and {} more", proxies.len() - NAMED) } else { String::new() };
    let noun = if proxies.len() == 1 { "sidecar" } else { "sidecars" };
    format!("{} {noun} ({}{more})", proxies.len(), named.join(", "))
}

fn phase_name(phase: RotationPhase) -> &'static str {
    match phase {
        RotationPhase::Distributing => "distributing the new root",
        RotationPhase::Renewing => "renewing under the new root",
    }
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(16)]
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rfc3339_unix(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use pilotfish_api::wire::CertificateReport;

    use super::*;

    fn rotation(phase: RotationPhase, phase_since: u64) -> Rotation {
        Rotation {
            new_root: "b".repeat(64),
            old_roots: vec!["a".repeat(64)],
            overlap_seconds: 60,
            started_at: 1000,
            phase,
            phase_since,
            phase_seq: 10,
        }
    }

    fn proxy(id: &str, connected: bool, acked: u64, root: Option<&str>) -> ProxyStatus {
        ProxyStatus {
            id: id.into(),
            service: "web".into(),
            namespace: "default".into(),
            connected,
            connected_at: String::new(),
            disconnected_at: None,
            sent_version: acked,
            acked_version: acked,
            current: false,
            last_nack: None,
            certificate: root.map(|root| CertificateReport {
                identity: "spiffe://pilotfish.local/ns/default/sa/web".into(),
                not_after: "2099-01-01T00:00:00Z".into(),
                root: Some(root.into()),
            }),
            certificate_warning: None,
            trusted_roots: None,
        }
    }

    fn trusting(proxy: ProxyStatus, roots: &[&str]) -> ProxyStatus {
        ProxyStatus { trusted_roots: Some(roots.iter().map(|r| r.to_string()).collect()), ..proxy }
    }

    #[test]
    fn a_sidecar_reporting_no_roots_is_taken_at_its_ack_of_the_new_bundle() {
        let distributing = rotation(RotationPhase::Distributing, 1000);
        let now = UNIX_EPOCH + Duration::from_secs(1001);
        let behind = [proxy("web-1", true, 10, None), proxy("web-2", true, 9, None)];
        let waiting = waiting_for(&distributing, &behind, now).unwrap();
        assert_eq!(waiting, "1 sidecar (web/web-2) to trust the new root");
        // A disconnected sidecar does not hold it up: it catches up when it reconnects.
        let caught_up = [proxy("web-1", true, 10, None), proxy("web-2", false, 9, None)];
        assert_eq!(waiting_for(&distributing, &caught_up, now), None);
    }

    #[test]
    fn a_sidecar_that_reports_its_roots_is_judged_by_them_not_by_its_acks() {
        let distributing = rotation(RotationPhase::Distributing, 1000);
        let now = UNIX_EPOCH + Duration::from_secs(1001);
        let (old, new) = ("a".repeat(64), "b".repeat(64));
        // ACKed the version with the new root, but its bundle is not in force: waiting.
        let acked_untrusted = [trusting(proxy("web-1", true, 10, None), &[&old])];
        let waiting = waiting_for(&distributing, &acked_untrusted, now).unwrap();
        assert_eq!(waiting, "1 sidecar (web/web-1) to trust the new root");
        // Trusts the new root, though it NACKed an unrelated configuration since: not waiting.
        let nacked_trusting = [trusting(proxy("web-1", true, 9, None), &[&old, &new])];
        assert_eq!(waiting_for(&distributing, &nacked_trusting, now), None);
        // No roots reported at all (plaintext, or an older sidecar): its ACK is what counts.
        let mixed = [trusting(proxy("web-1", true, 9, None), &[&new]), proxy("plain", true, 9, None)];
        let waiting = waiting_for(&distributing, &mixed, now).unwrap();
        assert_eq!(waiting, "1 sidecar (web/plain) to trust the new root");
        let mixed = [trusting(proxy("web-1", true, 9, None), &[&new]), proxy("plain", true, 10, None)];
        assert_eq!(waiting_for(&distributing, &mixed, now), None);
    }

    #[test]
    fn the_old_root_retires_once_every_sidecar_renewed_and_the_overlap_passed() {
        let (old, new) = ("a".repeat(64), "b".repeat(64));
        let renewing = rotation(RotationPhase::Renewing, 1000);
        let early = UNIX_EPOCH + Duration::from_secs(1010);
        let one_old = [proxy("web-1", true, 11, Some(&new)), proxy("web-2", true, 11, Some(&old))];
        let waiting = waiting_for(&renewing, &one_old, early).unwrap();
        assert!(waiting.contains("web/web-2") && waiting.contains("renew"), "{waiting}");
        // A sidecar without a certificate has nothing to renew.
        let renewed = [proxy("web-1", true, 11, Some(&new)), proxy("plain", true, 11, None)];
        let waiting = waiting_for(&renewing, &renewed, early).unwrap();
        assert!(waiting.contains("overlap") && waiting.contains("1970-01-01T00:17:40Z"), "{waiting}");
        assert_eq!(waiting_for(&renewing, &renewed, UNIX_EPOCH + Duration::from_secs(1060)), None);
    }

    #[test]
    fn many_sidecars_are_counted_and_a_few_named() {
        let all: Vec<_> = (0..8).map(|i| proxy(&format!("web-{i}"), true, 0, None)).collect();
        let refs: Vec<_> = all.iter().collect();
        assert_eq!(
            sidecars(&refs),
            "8 sidecars (web/web-0, web/web-1, web/web-2, web/web-3, web/web-4, and 3 more)"
        );
    }
}
