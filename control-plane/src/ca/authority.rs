//! [`Ca`]: the mesh CA at run time — opened from its directory (made there at first start) or
//! from supplied files, it signs workload leaves from CSRs and hands out the trust bundle.

use std::path::Path;
use std::time::{Duration, SystemTime};

use pilotfish_api::wire::CertifyResponse;
use pilotfish_api::SpiffeId;
use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair};
use time::OffsetDateTime;

use super::chain::{self, CheckedChain};
use super::error::CaError;
use super::keystore::Keystore;
use super::{files, generate, params};
use crate::core::sha256_hex;

/// The mesh CA: an issuer key and certificate, the chain above it, and the roots peers trust.
pub struct Ca {
    pub(super) issuer: Issuer<'static, KeyPair>,
    pub(super) issuer_not_after: OffsetDateTime,
    /// PEM of the certificates sent after a leaf (the issuer and any CA below the root).
    pub(super) presented_pem: String,
    /// DER; the first is the issuer's own root.
    pub(super) roots: Vec<Vec<u8>>,
    trust_bundle_pem: String,
    /// Where a rotation keeps the CAs it makes.
    pub(super) keystore: Keystore,
}

/// A leaf the CA issued, with what its holder needs to verify peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// PEM, the leaf first, then the certificates above it except the root.
    pub chain_pem: String,
    pub trust_bundle_pem: String,
    pub not_after: SystemTime,
    pub identity: SpiffeId,
}

impl Ca {
    /// The CA stored in `dir` (`<data-dir>/ca`), generated and stored there the first time.
    pub fn open(dir: &Path) -> Result<Self, CaError> {
        let stored = match files::read(dir)? {
            Some(stored) => stored,
            None => {
                if files::write_new(dir, &generate::generate()?)? {
                    tracing::info!(dir = %dir.display(), "stored a new mesh CA");
                }
                files::read(dir)?.ok_or_else(|| CaError::Invalid {
                    origin: dir.display().to_string(),
                    reason: "the directory was emptied while the CA was being stored".into(),
                })?
            }
        };
        let keystore = Keystore::Dir(dir.to_owned());
        Ok(Self::from_chain(chain::check(&dir.display().to_string(), &stored.chain, &stored.key)?, keystore))
    }

    /// A CA supplied by the operator (`--ca-cert/--ca-key`): `cert` holds the issuer's
    /// certificate then each CA above it up to the root; `key` the issuer's PKCS#8 key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, CaError> {
        let read = |path: &Path| std::fs::read(path).map_err(CaError::io(path));
        let origin = format!("{} and {}", cert.display(), key.display());
        Self::from_pem(&origin, &read(cert)?, &read(key)?, Keystore::Supplied)
    }

    /// A CA from PEM: `chain` as in [`Ca::from_files`], `key` the issuer's; `origin` names where
    /// they came from in errors.
    pub(super) fn from_pem(
        origin: &str,
        chain: &[u8],
        key: &[u8],
        keystore: Keystore,
    ) -> Result<Self, CaError> {
        Ok(Self::from_chain(chain::check(origin, chain, key)?, keystore))
    }

    pub(super) fn from_chain(chain: CheckedChain, keystore: Keystore) -> Self {
        let presented_pem = chain.presented().iter().map(|der| cert_pem(der)).collect();
        let roots = vec![chain.root().to_vec()];
        let trust_bundle_pem = roots.iter().map(|der| cert_pem(der)).collect();
        Self {
            issuer_not_after: chain.not_after,
            presented_pem,
            roots,
            trust_bundle_pem,
            issuer: chain.issuer,
            keystore,
        }
    }

    /// SHA-256 of the issuer's root, hex: the name a rotation knows this CA by.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.roots[0])
    }

    /// The issuer's root, PEM.
    pub fn root_pem(&self) -> String {
        cert_pem(self.root_der())
    }

    /// The issuer's root, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.roots[0]
    }

    /// Where rotations keep the CAs they make.
    pub fn keystore(&self) -> &Keystore {
        &self.keystore
    }

    /// Signs a leaf for `identity` with the public key of `csr_pem`, valid for `ttl` (never
    /// past the issuer). The CSR's signature must verify — proof that the caller holds the
    /// key — and nothing else in it is used: the names it asks for are ignored.
    pub fn issue(&self, csr_pem: &str, identity: &SpiffeId, ttl: Duration) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(csr_error)?;
        let now = OffsetDateTime::now_utc();
        if self.issuer_not_after <= now {
            return Err(CaError::IssuerExpired(self.issuer_not_after.to_string()));
        }
        let params = params::leaf(identity, now, ttl, self.issuer_not_after).map_err(CaError::Sign)?;
        let leaf = params.signed_by(&csr.public_key, &self.issuer).map_err(CaError::Sign)?;
        Ok(Issued {
            chain_pem: leaf.pem() + &self.presented_pem,
            trust_bundle_pem: self.trust_bundle_pem.clone(),
            not_after: params.not_after.into(),
            identity: identity.clone(),
        })
    }

    /// PEM of every root peers should trust now.
    pub fn trust_bundle_pem(&self) -> &str {
        &self.trust_bundle_pem
    }

    /// When the issuer expires: no leaf outlives it.
    pub fn issuer_not_after(&self) -> SystemTime {
        self.issuer_not_after.into()
    }
}

/// A root peers trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// SHA-256 of its DER, hex.
    pub fingerprint: String,
    pub not_after: SystemTime,
}

impl From<Issued> for CertifyResponse {
    fn from(issued: Issued) -> Self {
        CertifyResponse {
            chain_pem: issued.chain_pem,
            trust_bundle_pem: issued.trust_bundle_pem,
            not_after: humantime::format_rfc3339_seconds(issued.not_after).to_string(),
            identity: issued.identity,
        }
    }
}

pub(super) fn cert_pem(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der), config)
}

/// Says what was wrong with a caller's CSR in words the caller can act on.
fn csr_error(e: rcgen::Error) -> CaError {
    CaError::Csr(match e {
        rcgen::Error::InvalidCertificationRequestSignature => {
            "its signature does not verify: sign it with the key it carries".into()
        }
        rcgen::Error::UnsupportedExtension => {
            "it asks for an extension the CA does not read: request no extensions besides subjectAltName, keyUsage and extendedKeyUsage".into()
        }
        rcgen::Error::CouldNotParseCertificationRequest => {
            "it is not a PEM PKCS#10 request (-----BEGIN CERTIFICATE REQUEST-----)".into()
        }
        other => format!("{other}; send a PKCS#10 request for an ECDSA P-256 or Ed25519 key"),
    })
}
