//! From certificate material to an [`Identity`]: the SPIFFE ID from the leaf's URI SAN, its
//! validity, the roots' fingerprints, the rustls configurations, and the [`CertificateReport`]
//! the push client sends the control plane (which root of the bundle the chain verifies to,
//! so a root rotation can tell when every sidecar has moved to the new root). Also the check a new
//! certificate must pass before it is installed — unexpired and chaining to the bundle — as
//! linkerd's credential store validates its own new chain: a certificate the sidecar's peers
//! would refuse is worse than the one it holds.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pilotfish_api::wire::CertificateReport;
use pilotfish_api::SpiffeId;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::RootCertStore;
use sha2::{Digest, Sha256};

use super::Identity;
use crate::tls::{
    spiffe_id, ConfigError, Credentials, CredentialsError, IdentityError, MeshConfigs, TrustBundle,
};

/// Why certificate material cannot become this sidecar's identity.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("{0}")]
    Credentials(#[from] CredentialsError),
    #[error("the leaf certificate names no mesh identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("the leaf certificate's validity cannot be read: {0}")]
    Validity(String),
    #[error("the certificate expired at {}", humantime::format_rfc3339_seconds(*.0))]
    Expired(SystemTime),
    #[error("the certificate does not chain to the trust bundle: {0}")]
    Untrusted(rustls::Error),
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// An identity ready to publish, with what the status report and metrics show of it.
#[derive(Debug, Clone)]
pub struct Built {
    pub identity: Identity,
    /// When the leaf became valid (backdated by the CA against clock skew).
    pub not_before: SystemTime,
    /// SHA-256 fingerprints (lowercase hex) of the bundle's roots, as the control plane
    /// reports its own.
    pub roots: Vec<String>,
    /// What the control plane is told of this certificate.
    pub report: CertificateReport,
}

/// Builds the identity `credentials` prove, trusting the roots in `bundle_pem`; `now` only
/// decides which root the report names. Checks nothing about validity: a new bundle for a
/// certificate already in force goes through here too.
pub fn build(
    credentials: &Credentials,
    bundle_pem: &[u8],
    now: SystemTime,
    provider: &Arc<CryptoProvider>,
) -> Result<Built, MaterialError> {
    let id: SpiffeId = spiffe_id(credentials.leaf())?;
    let (not_before, not_after) = validity(credentials.leaf())?;
    let bundle = TrustBundle::from_pem(bundle_pem)?;
    let ders = CertificateDer::pem_slice_iter(bundle_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CredentialsError::from)?;
    let roots: Vec<String> = ders.iter().map(|der| fingerprint(der)).collect();
    // Each root alone as the only anchor: during an overlap the bundle holds two, and the
    // rotation must learn which one this chain needs.
    let root = ders.into_iter().zip(&roots).find_map(|(der, fingerprint)| {
        let mut alone = RootCertStore::empty();
        alone.add(der).ok()?;
        verify(credentials, &alone, now, provider).ok().map(|()| fingerprint.clone())
    });
    let report = CertificateReport {
        identity: id.to_string(),
        not_after: humantime::format_rfc3339_seconds(not_after).to_string(),
        root,
    };
    let configs = MeshConfigs::new(credentials, &bundle, provider)?;
    Ok(Built { identity: Identity { id, configs, not_after }, not_before, roots, report })
}

/// Whether `credentials` may be installed at `now`: unexpired, and its chain leads to a root of
/// `bundle_pem`.
pub fn check(
    credentials: &Credentials,
    bundle_pem: &[u8],
    now: SystemTime,
    provider: &CryptoProvider,
) -> Result<(), MaterialError> {
    let (_, not_after) = validity(credentials.leaf())?;
    if not_after <= now {
        return Err(MaterialError::Expired(not_after));
    }
    let bundle = TrustBundle::from_pem(bundle_pem)?;
    verify(credentials, bundle.roots(), now, provider).map_err(MaterialError::Untrusted)
}

/// Whether the chain of `credentials` leads to one of `roots` at `now`.
fn verify(
    credentials: &Credentials,
    roots: &RootCertStore,
    now: SystemTime,
    provider: &CryptoProvider,
) -> Result<(), rustls::Error> {
    let leaf = ParsedCertificate::try_from(credentials.leaf())?;
    let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    verify_server_cert_signed_by_trust_anchor(
        &leaf,
        roots,
        &credentials.chain[1..],
        UnixTime::since_unix_epoch(seconds),
        provider.signature_verification_algorithms.all,
    )
}

/// A certificate's NotBefore and NotAfter.
fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime), MaterialError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| MaterialError::Validity(e.to_string()))?;
    let time = |t: x509_parser::time::ASN1Time| {
        let seconds = t.timestamp();
        match u64::try_from(seconds) {
            Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
            Err(_) => UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()),
        }
    };
    Ok((time(cert.validity().not_before), time(cert.validity().not_after)))
}

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::pki::{provider, Ca, Validity};

    #[test]
    fn the_report_names_the_one_root_the_chain_verifies_to() {
        let (old, next) = (Ca::new("old"), Ca::new("next"));
        let now = SystemTime::now();
        let report = |credentials: &Credentials, bundle: String| {
            build(credentials, bundle.as_bytes(), now, &provider()).unwrap().report
        };
        let leaf = old.leaf("web", Validity::FRESH);
        let alone = report(&leaf, old.root_pem());
        assert_eq!(alone.identity, "spiffe://pilotfish.local/ns/default/sa/web");
        let (_, not_after) = validity(leaf.leaf()).unwrap();
        assert_eq!(alone.not_after, humantime::format_rfc3339_seconds(not_after).to_string());
        assert_eq!(alone.root, Some(fingerprint(&old.root())));

        // The overlap, in either order: still the old root; a renewed leaf, the new one.
        for overlap in [old.root_pem() + &next.root_pem(), next.root_pem() + &old.root_pem()] {
            assert_eq!(report(&leaf, overlap.clone()), alone);
            let renewed = next.leaf("web", Validity::FRESH);
            assert_eq!(report(&renewed, overlap).root, Some(fingerprint(&next.root())));
        }
        // The old root retired under a certificate that needs it: none.
        assert_eq!(report(&leaf, next.root_pem()).root, None);
        // Nor for an expired one.
        let expired = old.leaf("web", Validity { not_before: -7200, not_after: -3600 });
        assert_eq!(report(&expired, old.root_pem()).root, None);
    }
}
