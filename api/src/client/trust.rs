//! How the client comes to trust a control plane served over https, without ever being told
//! to skip verification: the roots of a CA file (`--ca-file`), or a pinned root — the SHA-256
//! of the mesh CA's root, as a join token carries it (`ID.SECRET.FINGERPRINT`) or
//! `--ca-fingerprint` gives it. The server presents `[leaf, issuer, root]`; the pinned verifier
//! takes the presented certificate whose digest is the pin as the one trust anchor and then
//! verifies the chain and the server's name exactly as webpki does. A forged chain that copies
//! the genuine root cannot verify against that root's key. TLS 1.3 only, with the `ring`
//! provider passed explicitly (no process-wide default needed).
//!
//! A managed sidecar widens its pin with [`SharedRoots`]: the mesh's trust bundle as the push
//! stream last brought it. After a root rotation the control plane's serving certificate
//! chains to the new root, which the join token does not pin; a sidecar that learned the new
//! root from the push stream still trusts a restarted control plane.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name, ResolvesClientCert};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::wire::is_fingerprint;

/// What the client trusts on `https://` URLs.
#[derive(Debug, Clone)]
pub enum Trust {
    /// These roots (a CA file's).
    Roots(Arc<RootCertStore>),
    /// The presented root whose SHA-256 is this (64 lowercase hex digits).
    Pinned(String),
    /// The pinned root, or any root of `roots` as they are when a connection is made.
    PinnedOrRoots { pin: String, roots: SharedRoots },
}

/// A client certificate that changes while a client runs (a sidecar's mesh certificate,
/// renewed): every new connection that is asked for one presents the latest. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct SharedClientCert {
    latest: Arc<RwLock<Option<Arc<CertifiedKey>>>>,
}

impl SharedClientCert {
    /// The certificate new connections present from now on (`None`: none).
    pub fn set(&self, certified: Option<Arc<CertifiedKey>>) {
        *self.latest.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = certified;
    }

    fn latest(&self) -> Option<Arc<CertifiedKey>> {
        self.latest.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl ResolvesClientCert for SharedClientCert {
    fn resolve(&self, _hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.latest().filter(|certified| certified.key.choose_scheme(schemes).is_some())
    }

    fn has_certs(&self) -> bool {
        self.latest().is_some()
    }
}

/// Roots that change while a client runs (the mesh's pushed trust bundle); every new
/// connection verifies against the latest. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct SharedRoots {
    latest: Arc<RwLock<Latest>>,
}

#[derive(Debug)]
struct Latest {
    pem: String,
    roots: Arc<RootCertStore>,
}

impl Default for Latest {
    fn default() -> Self {
        Latest { pem: String::new(), roots: Arc::new(RootCertStore::empty()) }
    }
}

impl SharedRoots {
    /// Replaces the roots with the certificates of `pem` (unchanged PEM: nothing to do);
    /// blocks that are not usable roots are skipped. How many roots are trusted now.
    pub fn set_pem(&self, pem: &str) -> usize {
        let mut latest = self.latest.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if latest.pem != pem {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem.as_bytes()).flatten());
            *latest = Latest { pem: pem.to_owned(), roots: Arc::new(roots) };
        }
        latest.roots.len()
    }

    /// How many roots are trusted now.
    pub fn len(&self) -> usize {
        self.roots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn roots(&self) -> Arc<RootCertStore> {
        self.latest.read().unwrap_or_else(|poisoned| poisoned.into_inner()).roots.clone()
    }
}

/// A CA file or fingerprint that cannot be trusted as given.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("reading the CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("the CA fingerprint must be 64 hex digits (the SHA-256 of the root's DER), not {0:?}")]
    Fingerprint(String),
}

impl Trust {
    /// The certificates of the PEM file at `path` as roots.
    pub fn ca_file(path: &Path) -> Result<Self, TrustError> {
        let error = |reason: String| TrustError::CaFile { path: path.display().to_string(), reason };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(error("it holds no usable CERTIFICATE block".into()));
        }
        Ok(Self::Roots(Arc::new(roots)))
    }

    /// The root whose SHA-256 is `fingerprint` (hex; colons, as openssl prints them, and
    /// upper case are accepted).
    pub fn pinned(fingerprint: &str) -> Result<Self, TrustError> {
        let normal = fingerprint.replace(':', "").to_ascii_lowercase();
        if !is_fingerprint(&normal) {
            return Err(TrustError::Fingerprint(fingerprint.to_owned()));
        }
        Ok(Self::Pinned(normal))
    }

    /// The root a token pins (`ID.SECRET.FINGERPRINT`); `None` for a token that pins none.
    pub fn from_token(token: &str) -> Option<Self> {
        let parts = crate::wire::TokenParts::parse(token)?;
        Some(Self::Pinned(parts.fingerprint?.to_owned()))
    }

    /// A pin widened to any root of `roots` too; the roots of a CA file stay as they are (they
    /// are what the operator chose to trust).
    pub fn or_roots(self, roots: SharedRoots) -> Self {
        match self {
            Self::Pinned(pin) | Self::PinnedOrRoots { pin, .. } => Self::PinnedOrRoots { pin, roots },
            Self::Roots(roots) => Self::Roots(roots),
        }
    }

    /// The rustls configuration of a client with this trust: TLS 1.3, `h2` or `http/1.1`.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_with(None)
    }

    /// [`Trust::client_config`], presenting the certificate `client_cert` resolves when the
    /// server asks for one (a sidecar's mesh certificate: the control plane takes it as the
    /// sidecar's credential once its join token expired).
    pub fn client_config_with(&self, client_cert: Option<Arc<dyn ResolvesClientCert>>) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3");
        let verified = match self {
            Self::Roots(roots) => builder.with_root_certificates(roots.clone()),
            Self::Pinned(pin) => builder.dangerous().with_custom_certificate_verifier(Arc::new(PinnedRoot {
                pin: pin.clone(),
                provider,
                or: None,
            })),
            Self::PinnedOrRoots { pin, roots } => {
                let verifier = PinnedRoot { pin: pin.clone(), provider, or: Some(roots.clone()) };
                builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
            }
        };
        let mut config = match client_cert {
            Some(resolver) => {
                let mut config = verified.with_client_cert_resolver(resolver);
                // Every handshake presents the certificate as it is now, never a resumed
                // session's.
                config.resumption = rustls::client::Resumption::disabled();
                config
            }
            None => verified.with_no_client_auth(),
        };
        // HTTP/2 where the control plane speaks it, so a sidecar's push stream and its ACKs
        // share one connection (and one handshake); HTTP/1.1 with one that does not.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// Verifies a server's chain against the presented certificate whose SHA-256 is the pin, or
/// else against the roots of `or`.
#[derive(Debug)]
pub(crate) struct PinnedRoot {
    pin: String,
    provider: Arc<CryptoProvider>,
    or: Option<SharedRoots>,
}

impl PinnedRoot {
    /// The chain verified against `roots`, and the server's name.
    fn verify_with(
        &self,
        roots: &RootCertStore,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        let algorithms = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, algorithms)?;
        verify_server_name(&cert, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn pinned(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let root = intermediates.iter().find(|c| sha256_hex(c) == self.pin).ok_or_else(|| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                NoPinnedRoot(self.pin.clone()),
            ))))
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(root.clone().into_owned())?;
        self.verify_with(&roots, end_entity, intermediates, server_name, now)
    }
}

impl ServerCertVerifier for PinnedRoot {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = self.pinned(end_entity, intermediates, server_name, now);
        match &self.or {
            Some(or) if pinned.is_err() => {
                let roots = or.roots();
                if roots.is_empty() {
                    return pinned;
                }
                self.verify_with(&roots, end_entity, intermediates, server_name, now)
            }
            _ => pinned,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The server presented no certificate with the pinned digest: another CA (or an attacker).
#[derive(thiserror::Error)]
#[error("the control plane presented no root with the pinned fingerprint {0} (is the token or --ca-fingerprint from this mesh?)")]
struct NoPinnedRoot(String);

/// As the message: rustls shows a certificate error's cause with `Debug`, and this is what an
/// operator reads.
impl std::fmt::Debug for NoPinnedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
