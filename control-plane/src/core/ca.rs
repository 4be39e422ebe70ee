//! The mesh CA's operations: certifying a sidecar's key for the identity its credential gives
//! (never the names its CSR asks for), the trust bundle, the CA's status, and the counters and
//! expiry gauges `/metrics` shows.

use std::time::SystemTime;

use pilotfish_api::wire::{CaRoot, CaStatus, CertifyRequest, CertifyResponse, RotationPhase, Versioned};
use pilotfish_api::SpiffeId;

use super::access::Credentials;
use super::ca_counters::Refusal;
use super::error::{Error, Result};
use super::identity::workload_identity;
use super::plane::ControlPlane;
use crate::ca::{CaError, Issued};

impl ControlPlane {
    /// The workload calling with `bearer`, as the identity its token gives: 401 without a valid
    /// token, 403 for the admin token (which has none). Refusals are counted.
    pub async fn workload(&self, credentials: Credentials<'_>) -> Result<SpiffeId> {
        let caller = self.authenticate(credentials).await.inspect_err(|e| {
            if matches!(e, Error::Unauthorized) {
                self.ca_counters.count_refused(Refusal::Unauthenticated);
            }
        })?;
        workload_identity(&caller, &self.trust_domain)
            .inspect_err(|_| self.ca_counters.count_refused(Refusal::NoIdentity))
    }

    /// A leaf for `identity` (from [`ControlPlane::workload`]) with the key of the request's CSR,
    /// signed by the issuer in force and answered with the bundle in force.
    pub async fn certify(&self, identity: &SpiffeId, req: &CertifyRequest) -> Result<CertifyResponse> {
        // Under the read model's lock, so the issuer is the one of the log's point it holds (a
        // rotation's switch of issuer is followed under the write lock).
        let _state = self.state.read().await;
        let view = self.ca.view();
        let issued = req
            .check_protocol()
            .map_err(Error::from)
            .and_then(|()| {
                view.issuer.issue(&req.csr, identity, self.cert_ttl).map_err(|e| match e {
                    CaError::Csr(_) => Error::BadRequest(e.to_string()),
                    e => Error::Ca(e),
                })
            })
            .map(|issued| Issued { trust_bundle_pem: view.bundle_pem.clone(), ..issued })
            .inspect_err(|e| {
                let reason = if matches!(e, Error::Ca(_)) { Refusal::CaError } else { Refusal::BadRequest };
                self.ca_counters.count_refused(reason);
            })?;
        self.ca_counters.count_issued();
        tracing::info!(%identity, not_after = %rfc3339(issued.not_after), "issued a certificate");
        Ok(issued.into())
    }

    /// PEM of every root the mesh trusts now.
    pub fn ca_bundle(&self) -> String {
        self.ca.view().bundle_pem.clone()
    }

    /// What the CA issues, when its certificates expire, and the rotation under way.
    pub async fn ca_status(&self) -> CaStatus {
        let view = self.ca.view();
        CaStatus {
            trust_domain: self.trust_domain.clone(),
            cert_ttl_seconds: self.cert_ttl.as_secs(),
            authz_default: self.authz_default,
            roots: view
                .roots
                .iter()
                .map(|r| CaRoot {
                    fingerprint: r.fingerprint.clone(),
                    not_after: rfc3339(r.not_after),
                    active: r.active,
                })
                .collect(),
            issuer_not_after: rfc3339(view.issuer.issuer_not_after()),
            rotation: self.rotation_status().await,
        }
    }

    /// The CA's metrics in the Prometheus text format; `rotation`: the phase of the rotation
    /// under way.
    pub(super) fn ca_metrics(&self, rotation: Option<RotationPhase>) -> String {
        let counters = &self.ca_counters;
        let mut text = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                text.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        family(
            "pilotfish_ca_certs_issued_total",
            "counter",
            "Workload certificates the CA issued",
            vec![(String::new(), counters.issued())],
        );
        family(
            "pilotfish_ca_certify_refused_total",
            "counter",
            "Certify requests refused, by reason",
            counters.refusals().map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), n)).collect(),
        );
        family(
            "pilotfish_ca_root_expiry_timestamp_seconds",
            "gauge",
            "When each trusted root expires (Unix time), by the first 16 hex digits of its SHA-256",
            self.ca
                .view()
                .roots()
                .into_iter()
                .map(|r| (format!("{{root=\"{}\"}}", &r.fingerprint[..16]), unix(r.not_after)))
                .collect(),
        );
        family(
            "pilotfish_ca_issuer_expiry_timestamp_seconds",
            "gauge",
            "When the issuer signing workload certificates expires (Unix time)",
            vec![(String::new(), unix(self.ca.view().issuer.issuer_not_after()))],
        );
        let phase = match rotation {
            None => 0,
            Some(RotationPhase::Distributing) => 1,
            Some(RotationPhase::Renewing) => 2,
        };
        family(
            "pilotfish_ca_rotation_phase",
            "gauge",
            "The root rotation under way: 0 none, 1 distributing the new root, 2 renewing under it",
            vec![(String::new(), phase)],
        );
        text
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
