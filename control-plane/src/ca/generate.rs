//! A new CA for a first start: an ECDSA P-256 root and an issuer signed by it, as PEM.

use rcgen::{Issuer, KeyPair};
use time::OffsetDateTime;

use super::error::CaError;
use super::params;

/// A freshly made root and issuer, PEM, ready to be stored.
pub struct NewCa {
    pub root_cert: String,
    pub root_key: String,
    pub issuer_cert: String,
    pub issuer_key: String,
}

pub fn generate() -> Result<NewCa, CaError> {
    let now = OffsetDateTime::now_utc();
    // KeyPair::generate makes ECDSA P-256 keys: what every TLS stack verifies, and fast.
    let root_key = KeyPair::generate().map_err(CaError::Generate)?;
    let root_params = params::root(now);
    let root_cert = root_params.self_signed(&root_key).map_err(CaError::Generate)?;
    let issuer_key = KeyPair::generate().map_err(CaError::Generate)?;
    let issuer_params = params::issuer(now, root_params.not_after);
    let root = Issuer::from_params(&root_params, &root_key);
    let issuer_cert = issuer_params.signed_by(&issuer_key, &root).map_err(CaError::Generate)?;
    Ok(NewCa {
        root_cert: root_cert.pem(),
        root_key: root_key.serialize_pem(),
        issuer_cert: issuer_cert.pem(),
        issuer_key: issuer_key.serialize_pem(),
    })
}
