//! [`MeshCa`]: the CA as the mesh sees it at a point of the log — the CA opened at start plus
//! what root rotations did (`model::CaLog`): which roots the bundle holds and which issuer
//! signs. The roots come from the log itself (certificates are public); only the issuer that
//! signs needs its key, loaded from the [`Keystore`] when a rotation activates it.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use pilotfish_api::SpiffeId;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::authority::{cert_pem, Ca, Root};
use super::keystore::Keystore;
use crate::core::sha256_hex;
use crate::model::CaLog;

/// The CA opened at start and the view the log gives of it now.
pub struct MeshCa {
    initial: Arc<Ca>,
    view: RwLock<Arc<View>>,
    /// The version of the log's CA record the view fully follows (`None`: not yet, or the
    /// last attempt could not load the issuer it activated, so the next one tries again).
    followed: RwLock<Option<u64>>,
}

/// The roots trusted and the issuer signing, at one point of the log.
pub struct View {
    pub issuer: Arc<Ca>,
    /// In the order they were added, the oldest first.
    pub roots: Vec<TrustedRoot>,
    /// PEM of every root.
    pub bundle_pem: String,
    /// Verifies client certificates against these roots; made at first use.
    clients: OnceLock<Option<Arc<dyn ClientCertVerifier>>>,
}

/// A root of the trust bundle.
pub struct TrustedRoot {
    pub fingerprint: String,
    pub der: Vec<u8>,
    pub not_after: SystemTime,
    /// Whether the issuer signing now chains to it.
    pub active: bool,
}

impl MeshCa {
    pub fn new(ca: Ca) -> Self {
        let initial = Arc::new(ca);
        let view = View::of(initial.clone(), vec![(initial.fingerprint(), initial.roots[0].clone())]);
        Self { initial, view: RwLock::new(Arc::new(view)), followed: RwLock::new(None) }
    }

    /// The view in force.
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the view fully follows version `version` of the log's CA record.
    pub fn follows(&self, version: u64) -> bool {
        *self.followed.read().unwrap_or_else(|p| p.into_inner()) == Some(version)
    }

    /// Where rotations keep the CAs they make.
    pub fn keystore(&self) -> &Keystore {
        self.initial.keystore()
    }

    /// Follows `log` (at once when it is the version already followed): the bundle becomes the CA opened at start's root plus the roots rotations
    /// added, less those retired; the issuer, the one the log last activated. An issuer that
    /// cannot be loaded (its keys missing from the keystore) leaves the one in force, and a root
    /// that cannot be read is left out, each with an error in the log.
    pub async fn follow(&self, log: &CaLog) {
        if self.follows(log.version) {
            return;
        }
        let current = self.view();
        let mut complete = true;
        let issuer = match &log.active {
            None => self.initial.clone(),
            Some(fp) if *fp == current.issuer.fingerprint() => current.issuer.clone(),
            Some(fp) if *fp == self.initial.fingerprint() => self.initial.clone(),
            Some(fp) => match self.keystore().load(fp).await {
                Ok(ca) => Arc::new(ca),
                Err(e) => {
                    tracing::error!(root = %fp, "cannot load the issuer a root rotation activated; the current one keeps signing until it can: {e}");
                    complete = false;
                    current.issuer.clone()
                }
            },
        };
        let mut roots = vec![(self.initial.fingerprint(), self.initial.roots[0].clone())];
        for added in &log.added {
            if roots.iter().any(|(fp, _)| *fp == added.fingerprint) {
                continue;
            }
            // The fingerprint is the DER's, whatever the event says.
            match pem::parse(&added.root_pem) {
                Ok(der) if sha256_hex(der.contents()) == added.fingerprint => {
                    roots.push((added.fingerprint.clone(), der.contents().to_vec()));
                }
                Ok(_) => {
                    tracing::error!(root = %added.fingerprint, "a root in the log is not the certificate its fingerprint names; left out")
                }
                Err(e) => tracing::error!(root = %added.fingerprint, "a root in the log cannot be read: {e}"),
            }
        }
        // The issuer's own root is never dropped, whatever the log says.
        let active = issuer.fingerprint();
        roots.retain(|(fp, _)| !log.retired.contains(fp) || *fp == active);
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(View::of(issuer, roots));
        *self.followed.write().unwrap_or_else(|p| p.into_inner()) = complete.then_some(log.version);
    }
}

impl View {
    fn of(issuer: Arc<Ca>, roots: Vec<(String, Vec<u8>)>) -> Self {
        let active = issuer.fingerprint();
        let roots: Vec<TrustedRoot> = roots
            .into_iter()
            .map(|(fingerprint, der)| TrustedRoot {
                active: fingerprint == active,
                not_after: not_after(&der),
                fingerprint,
                der,
            })
            .collect();
        let bundle_pem = roots.iter().map(|r| cert_pem(&r.der)).collect();
        Self { issuer, roots, bundle_pem, clients: OnceLock::new() }
    }

    /// The mesh identity `chain` (a client certificate, then the CAs above it) proves at `now`:
    /// the leaf's SPIFFE ID, when the chain verifies up to one of these roots, unexpired, for
    /// client authentication.
    pub fn verify_client(&self, chain: &[CertificateDer<'_>], now: SystemTime) -> Option<SpiffeId> {
        let verifier = self.clients.get_or_init(|| self.client_verifier()).as_ref()?;
        let (leaf, intermediates) = chain.split_first()?;
        let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).ok()?);
        verifier.verify_client_cert(leaf, intermediates, now).ok()?;
        pilotfish_api::certificate::spiffe_id(leaf).ok()
    }

    fn client_verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        let mut roots = RootCertStore::empty();
        for root in &self.roots {
            if let Err(e) = roots.add(CertificateDer::from(root.der.clone())) {
                tracing::error!(root = %root.fingerprint, "a root cannot verify client certificates: {e}");
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .inspect_err(|e| tracing::error!("the mesh's roots cannot verify client certificates: {e}"))
            .ok()
    }

    /// Every trusted root: its fingerprint and when it expires.
    pub fn roots(&self) -> Vec<Root> {
        self.roots
            .iter()
            .map(|r| Root { fingerprint: r.fingerprint.clone(), not_after: r.not_after })
            .collect()
    }

    /// Whether `fingerprint` is the root the issuer chains to.
    pub fn is_active(&self, fingerprint: &str) -> bool {
        self.roots.iter().any(|r| r.active && r.fingerprint == fingerprint)
    }
}

fn not_after(der: &[u8]) -> SystemTime {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert.validity().not_after.to_datetime().into())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
