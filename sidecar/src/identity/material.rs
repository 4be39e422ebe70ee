//! From certificate material to an [`Identity`]: the SPIFFE ID from the leaf's URI SAN, its
//! validity, the roots' fingerprints, and the rustls configurations. Also the check a new
//! certificate must pass before it is installed — unexpired and chaining to the bundle — as
//! linkerd's credential store validates its own new chain: a certificate the sidecar's peers
//! would refuse is worse than the one it holds.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pilotfish_api::SpiffeId;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ParsedCertificate;
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
}

/// Builds the identity `credentials` prove, trusting the roots in `bundle_pem`. Checks nothing
/// about validity: a new bundle for a certificate already in force goes through here too.
pub fn build(
    credentials: &Credentials,
    bundle_pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Built, MaterialError> {
    let id: SpiffeId = spiffe_id(credentials.leaf())?;
    let (not_before, not_after) = validity(credentials.leaf())?;
    let bundle = TrustBundle::from_pem(bundle_pem)?;
    let roots = CertificateDer::pem_slice_iter(bundle_pem)
        .map(|root| root.map(|der| fingerprint(&der)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CredentialsError::from)?;
    let configs = MeshConfigs::new(credentials, &bundle, provider)?;
    Ok(Built { identity: Identity { id, configs, not_after }, not_before, roots })
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
    let leaf = ParsedCertificate::try_from(credentials.leaf()).map_err(MaterialError::Untrusted)?;
    let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    verify_server_cert_signed_by_trust_anchor(
        &leaf,
        bundle.roots(),
        &credentials.chain[1..],
        UnixTime::since_unix_epoch(seconds),
        provider.signature_verification_algorithms.all,
    )
    .map_err(MaterialError::Untrusted)
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
