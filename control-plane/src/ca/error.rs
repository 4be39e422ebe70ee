//! What can go wrong opening the mesh CA or issuing from it, each case saying what to do.

use std::path::PathBuf;

/// An error of the mesh CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The supplied or stored CA certificates and key cannot serve as an issuer.
    #[error("the CA in {origin} cannot be used: {reason}")]
    Invalid { origin: String, reason: String },
    #[error("could not make the CA's keys or certificates: {0}")]
    Generate(rcgen::Error),
    /// A caller's certificate signing request was refused; the message is for that caller.
    #[error("the certificate signing request was refused: {0}")]
    Csr(String),
    #[error("the CA's issuer expired at {0}: supply a new --ca-cert/--ca-key or rotate the CA")]
    IssuerExpired(String),
    #[error("could not sign the certificate: {0}")]
    Sign(rcgen::Error),
    #[error("--ca-seal-key (PILOTFISH_CA_SEAL_KEY) cannot be used: {0}")]
    SealKey(String),
    /// The CA shared through etcd cannot be opened with the seal key given.
    #[error("the mesh CA stored in etcd cannot be opened: {0}")]
    Unseal(String),
    #[error("the mesh CA stored in etcd: {0}")]
    Store(#[from] crate::store::StoreError),
    /// An operator-supplied CA (`--ca-cert/--ca-key`) is the operator's to replace.
    #[error(
        "the CA was supplied with --ca-cert/--ca-key, so the control plane cannot make its next root: \
         supply the new CA's files to every replica instead (or run without --ca-cert/--ca-key and let \
         the control plane keep its own CA)"
    )]
    Supplied,
    /// A CA a rotation made is not where it was stored.
    #[error("the CA under root {fingerprint} is missing from {origin}")]
    Missing { fingerprint: String, origin: String },
}

impl CaError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
