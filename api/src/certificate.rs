//! Reading the SPIFFE identity a certificate carries: its one URI SAN
//! (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`), as linkerd's
//! `meshtls/verifier` and ztunnel's `tls/workload.rs` do with x509-parser. Sidecars read their
//! peers' and their own; the control plane reads a sidecar's client certificate.
//!
//! The chain has already been verified (by rustls) when this runs; this only reads a field.

use x509_parser::extensions::GeneralName;

use crate::identity::{SpiffeId, SpiffeIdError};

/// Why a certificate does not name a mesh identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate has no URI subject alternative name (a mesh certificate carries its SPIFFE ID there)")]
    NoUriSan,
    #[error("the certificate has {0} URI subject alternative names; a SPIFFE certificate has exactly one")]
    SeveralUriSans(usize),
    #[error("the certificate's URI SAN is not a mesh identity: {0}")]
    NotSpiffe(#[from] SpiffeIdError),
}

/// The SPIFFE ID in `cert`'s single URI SAN (SPIFFE X.509-SVID §2: exactly one).
pub fn spiffe_id(cert_der: &[u8]) -> Result<SpiffeId, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?
        .ok_or(IdentityError::NoUriSan)?;
    let mut uris = san.value.general_names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let uri = uris.next().ok_or(IdentityError::NoUriSan)?;
    let more = uris.count();
    if more > 0 {
        return Err(IdentityError::SeveralUriSans(more + 1));
    }
    Ok(uri.parse()?)
}
