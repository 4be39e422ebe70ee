//! What a sidecar proves and what it trusts: its own identity (leaf chain and private key) and
//! the trust bundle (one or more roots; two while a root rotation overlaps).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// A certificate chain (leaf first, then the intermediate) and the leaf's private key.
#[derive(Debug)]
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Why credentials or a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no certificate in the PEM: expected the leaf, then its intermediate")]
    NoCertificate,
    #[error("the trust bundle holds no root certificate")]
    EmptyBundle,
    #[error("bad PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("trust bundle root #{index} is not a usable CA certificate: {source}")]
    BadRoot { index: usize, source: rustls::Error },
}

impl Credentials {
    /// Reads a PEM chain (leaf first) and a PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Credentials, CredentialsError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem).collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err(CredentialsError::NoCertificate);
        }
        Ok(Credentials { chain, key: PrivateKeyDer::from_pem_slice(key_pem)? })
    }

    /// The leaf: the certificate that names this sidecar.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }
}

/// The roots a peer's chain must lead to. Built once per bundle and shared by the inbound and
/// outbound verifiers; webpki's path building tries every root, so an overlap just works.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    roots: Arc<RootCertStore>,
}

impl TrustBundle {
    /// A bundle of DER roots; every one must parse as a trust anchor.
    pub fn from_der(roots: Vec<CertificateDer<'static>>) -> Result<TrustBundle, CredentialsError> {
        if roots.is_empty() {
            return Err(CredentialsError::EmptyBundle);
        }
        let mut store = RootCertStore::empty();
        for (index, root) in roots.into_iter().enumerate() {
            store.add(root).map_err(|source| CredentialsError::BadRoot { index, source })?;
        }
        Ok(TrustBundle { roots: Arc::new(store) })
    }

    /// A bundle from concatenated PEM roots.
    pub fn from_pem(pem: &[u8]) -> Result<TrustBundle, CredentialsError> {
        TrustBundle::from_der(CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?)
    }

    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }
}
