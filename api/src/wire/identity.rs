//! The mesh CA's messages: a sidecar's certificate signing request and the certificate chain,
//! trust bundle and identity the CA answers with; the CA's status (`GET /v1/ca`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::protocol::{unversioned, Versioned, PROTOCOL_VERSION};
use crate::authz::MeshDefault;
use crate::identity::SpiffeId;
use crate::Duration;

/// `POST /v1/ca/certify` body: a CSR for a key the sidecar made and keeps. The CA takes only
/// the CSR's public key (after checking its signature); the identity comes from the caller's
/// credential, whatever names the CSR asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertifyRequest {
    /// The sender's protocol version.
    #[serde(default = "unversioned")]
    pub protocol: u32,
    /// A PKCS#10 request, PEM (`-----BEGIN CERTIFICATE REQUEST-----`).
    pub csr: String,
}

impl CertifyRequest {
    pub fn new(csr_pem: String) -> Self {
        Self { protocol: PROTOCOL_VERSION, csr: csr_pem }
    }
}

impl Versioned for CertifyRequest {
    fn protocol(&self) -> u32 {
        self.protocol
    }
}

/// `POST /v1/ca/certify` answer: the new leaf and what a sidecar needs to verify its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertifyResponse {
    /// PEM certificates, the leaf first, then the intermediate that signed it: what a sidecar
    /// presents in its handshakes.
    pub chain_pem: String,
    /// PEM certificates of every root the mesh trusts now (two during a root rotation).
    pub trust_bundle_pem: String,
    /// When the leaf expires, RFC 3339 (UTC).
    #[schema(example = "2026-01-02T03:04:05Z")]
    pub not_after: String,
    /// The identity written in the leaf's URI SAN.
    #[schema(value_type = String, example = "spiffe://pilotfish.local/ns/default/sa/web")]
    pub identity: SpiffeId,
}

/// `GET /v1/ca` answer: what the mesh CA issues, and when its certificates expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaStatus {
    /// The trust domain of every identity it issues.
    #[schema(example = "pilotfish.local")]
    pub trust_domain: String,
    /// How long the leaves it issues live (at most until the issuer expires).
    pub cert_ttl_seconds: u64,
    /// What applies to a call to a service no ALLOW policy targets, pushed to every sidecar.
    pub authz_default: MeshDefault,
    /// Every root the mesh trusts now (two during a root rotation).
    pub roots: Vec<CaRoot>,
    /// When the issuer that signs the leaves expires, RFC 3339 (UTC).
    #[schema(example = "2027-01-02T03:04:05Z")]
    pub issuer_not_after: String,
    /// The root rotation under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<CaRotation>,
}

/// A root of the trust bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaRoot {
    /// SHA-256 of the root's DER, lowercase hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub fingerprint: String,
    /// When it expires, RFC 3339 (UTC).
    #[schema(example = "2036-01-02T03:04:05Z")]
    pub not_after: String,
    /// Whether the issuer signing new leaves chains to this root.
    #[serde(default)]
    pub active: bool,
}

/// Where a root rotation stands. It moves through three phases, each an event in the log:
/// the new root is added to the bundle (`CaRootAdded`) and the control plane waits until every
/// connected sidecar reports it among the roots it trusts (`trustedRoots` of its ACKs; a sidecar
/// that reports none: until it acknowledged a configuration carrying it); the new issuer signs
/// from then on (`CaIssuerActivated`) and sidecars renew at once (`renewBefore`); once every
/// connected sidecar holds a certificate under the new root and the overlap has passed, the old
/// roots leave the bundle (`CaRootRetired`) and the rotation is over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaRotation {
    pub phase: RotationPhase,
    /// SHA-256 of the new root's DER, lowercase hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub new_root: String,
    /// The roots it replaces (retired at the end).
    pub old_roots: Vec<String>,
    /// How long both roots stay trusted once every sidecar renewed.
    pub overlap_seconds: u64,
    /// When the rotation started, RFC 3339 (UTC).
    pub started_at: String,
    /// When the current phase began, RFC 3339 (UTC).
    pub phase_since: String,
    /// What the rotation waits for before its next phase, in words.
    pub waiting_for: String,
}

/// A root rotation's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum RotationPhase {
    /// The new root is in the bundle; sidecars are being told to trust it.
    Distributing,
    /// The new issuer signs; sidecars are renewing under it, then the overlap runs.
    Renewing,
}

/// `POST /v1/ca/rotate` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotateRequest {
    /// How long both roots stay trusted after the switch of issuer, at least (e.g. `10m`;
    /// default 1m): the old root is retired once this has passed and every connected sidecar
    /// renewed under the new one. A margin for sidecars that were disconnected meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Duration>,
}

/// What a sidecar reports of the certificate it holds (with every ACK, and again after each
/// renewal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateReport {
    /// The SPIFFE ID in its leaf.
    #[schema(max_length = 2048)]
    pub identity: String,
    /// When the leaf expires, RFC 3339 (UTC).
    #[schema(example = "2026-01-02T03:04:05Z", max_length = 64)]
    pub not_after: String,
    /// SHA-256 (lowercase hex) of the bundle root its chain verifies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub root: Option<String>,
}

impl CertificateReport {
    /// Whether it keeps within what the schema says (the proxies view stores it as sent).
    pub fn check(&self) -> Result<(), String> {
        if self.identity.chars().count() > 2048 || self.not_after.chars().count() > 64 {
            return Err("certificate: identity is at most 2048 characters and notAfter at most 64".into());
        }
        match &self.root {
            Some(root) if !super::is_fingerprint(root) => {
                Err("certificate.root must be 64 lowercase hex digits (a SHA-256)".into())
            }
            _ => Ok(()),
        }
    }
}

/// Roots a sidecar reports trusting at most (`trustedRoots`): a bundle holds one root, two
/// during a rotation.
pub const MAX_TRUSTED_ROOTS: usize = 16;

/// Whether a sidecar's `trustedRoots` keeps within what the schema says (the proxies view
/// stores it as sent, and a root rotation reads it).
pub fn check_trusted_roots(roots: &[String]) -> Result<(), String> {
    if roots.len() > MAX_TRUSTED_ROOTS {
        return Err(format!(
            "trustedRoots holds at most {MAX_TRUSTED_ROOTS} fingerprints, not {}",
            roots.len()
        ));
    }
    match roots.iter().all(|root| super::is_fingerprint(root)) {
        true => Ok(()),
        false => Err("trustedRoots must be 64 lowercase hex digits each (SHA-256s)".into()),
    }
}

/// The schema of `trustedRoots`: SHA-256 fingerprints, at most [`MAX_TRUSTED_ROOTS`].
pub(super) fn trusted_roots_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let fingerprint = ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9a-f]{64}$"));
    ArrayBuilder::new()
        .items(fingerprint)
        .max_items(Some(MAX_TRUSTED_ROOTS))
        .description(Some(
            "SHA-256 fingerprints (lowercase hex of the DER) of the roots the sidecar trusts in mesh handshakes now",
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::round_trip;

    #[test]
    fn trusted_roots_are_a_few_fingerprints() {
        assert_eq!(check_trusted_roots(&[]), Ok(()));
        assert_eq!(check_trusted_roots(&["ab".repeat(32), "cd".repeat(32)]), Ok(()));
        for bad in ["AB".repeat(32), "ab".repeat(31), "zz".repeat(32), String::new()] {
            let err = check_trusted_roots(&[bad]).unwrap_err();
            assert!(err.contains("64 lowercase hex digits"), "{err}");
        }
        let many = vec!["ab".repeat(32); MAX_TRUSTED_ROOTS + 1];
        assert!(check_trusted_roots(&many).unwrap_err().contains("at most 16"));
    }

    #[test]
    fn certify_requests_and_answers_round_trip() {
        let request = round_trip::<CertifyRequest>(
            json!({ "protocol": 1, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nMII=\n-----END CERTIFICATE REQUEST-----\n" }),
        );
        assert_eq!(request.check_protocol(), Ok(()));
        let old: CertifyRequest = serde_json::from_value(json!({ "csr": "x" })).unwrap();
        assert_eq!(old.protocol, crate::wire::UNVERSIONED_PROTOCOL);
        let answer = round_trip::<CertifyResponse>(json!({
            "chainPem": "-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n",
            "trustBundlePem": "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n",
            "notAfter": "2026-01-02T03:04:05Z",
            "identity": "spiffe://pilotfish.local/ns/shop/sa/web",
        }));
        assert_eq!(answer.identity.service_account(), "web");
    }

    #[test]
    fn a_status_round_trips() {
        let status = round_trip::<CaStatus>(json!({
            "trustDomain": "pilotfish.local",
            "certTtlSeconds": 86400,
            "authzDefault": "authenticated",
            "roots": [{ "fingerprint": "ab".repeat(32), "notAfter": "2036-01-02T03:04:05Z", "active": true }],
            "issuerNotAfter": "2027-01-02T03:04:05Z",
        }));
        assert_eq!((status.authz_default, status.roots.len()), (MeshDefault::Authenticated, 1));
        let rotating = round_trip::<CaStatus>(json!({
            "trustDomain": "pilotfish.local",
            "certTtlSeconds": 86400,
            "authzDefault": "authenticated",
            "roots": [
                { "fingerprint": "ab".repeat(32), "notAfter": "2036-01-02T03:04:05Z", "active": false },
                { "fingerprint": "cd".repeat(32), "notAfter": "2036-06-02T03:04:05Z", "active": true },
            ],
            "issuerNotAfter": "2027-01-02T03:04:05Z",
            "rotation": {
                "phase": "renewing", "newRoot": "cd".repeat(32), "oldRoots": ["ab".repeat(32)],
                "overlapSeconds": 60, "startedAt": "2026-12-02T03:04:05Z",
                "phaseSince": "2026-12-02T03:04:06Z", "waitingFor": "2 of 3 sidecars to renew",
            },
        }));
        assert_eq!(rotating.rotation.map(|r| r.phase), Some(RotationPhase::Renewing));
        let rotate: RotateRequest = serde_json::from_value(json!({ "overlap": "10m" })).unwrap();
        assert_eq!(rotate.overlap.map(std::time::Duration::from), Some(std::time::Duration::from_secs(600)));
    }

    #[test]
    fn an_answer_with_a_malformed_identity_is_refused() {
        let err = serde_json::from_value::<CertifyResponse>(json!({
            "chainPem": "", "trustBundlePem": "", "notAfter": "",
            "identity": "spiffe://pilotfish.local/ns/shop/sa/admin/extra",
        }))
        .unwrap_err();
        assert!(err.to_string().contains("/ns/<namespace>/sa/<service-account>"), "{err}");
    }

    #[test]
    fn the_schema_shows_the_identity_as_a_string() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(CertifyResponse::schema()).unwrap();
        assert_eq!(schema["properties"]["identity"]["type"], "string", "{schema}");
        assert_eq!(schema["properties"]["chainPem"]["type"], "string", "{schema}");
    }
}
