//! Static mode's identity: a certificate chain, its private key and a trust bundle read from
//! files (`--tls-cert/--tls-key/--trust-bundle`), loaded at start and reloaded when any of them
//! changes (polled each second, as config reload does). A set of files that does not make a
//! valid identity — unreadable, mismatched key, expired, or not chaining to the bundle —
//! changes nothing: the reason is logged and the identity in force stays.
//!
//! The files are usually replaced one at a time, so a reload may see the new certificate with
//! the old bundle and refuse it; the next poll sees the rest and succeeds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;

use super::material::{self, Built, MaterialError};
use super::publish;
use crate::state::Shared;
use crate::tls::Credentials;

/// Where static mode reads the identity from.
#[derive(Debug, Clone)]
pub struct Files {
    /// PEM: the leaf first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the leaf's private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM: every root the mesh trusts.
    pub bundle: PathBuf,
}

/// Why the files do not make an identity.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{cert} with {key} and trust bundle {bundle}: {source}")]
    Material { cert: PathBuf, key: PathBuf, bundle: PathBuf, source: Box<MaterialError> },
}

impl Files {
    /// Reads and checks the three files.
    pub fn load(&self, provider: &Arc<CryptoProvider>) -> Result<Built, FilesError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| FilesError::Read { path: path.to_owned(), source })
        };
        let (cert, key, bundle) = (read(&self.cert)?, read(&self.key)?, read(&self.bundle)?);
        let material = || -> Result<Built, MaterialError> {
            let credentials = Credentials::from_pem(&cert, &key)?;
            let now = SystemTime::now();
            material::check(&credentials, &bundle, now, provider)?;
            material::build(&credentials, &bundle, now, provider)
        };
        material().map_err(|source| FilesError::Material {
            cert: self.cert.clone(),
            key: self.key.clone(),
            bundle: self.bundle.clone(),
            source: Box::new(source),
        })
    }

    /// What tells a changed file from an unchanged one (modification time and length).
    fn fingerprint(&self) -> [Option<(SystemTime, u64)>; 3] {
        [&self.cert, &self.key, &self.bundle].map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
    }
}

/// Publishes the identity `built` and reloads the files on change until the sidecar shuts
/// down.
pub async fn watch(shared: Arc<Shared>, files: Files, built: Built, provider: Arc<CryptoProvider>) {
    let mut seen = files.fingerprint();
    loaded(&shared, built);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = files.fingerprint();
        if now == seen {
            continue;
        }
        seen = now;
        match files.load(&provider) {
            Ok(built) => loaded(&shared, built),
            Err(e) => {
                shared.identity_status.renewed(SystemTime::now(), Some(e.to_string()));
                let kept = shared.identity.load().as_ref().map(|i| i.id.to_string()).unwrap_or_default();
                tracing::error!(kept, "identity files rejected, the identity in force stays: {e}");
            }
        }
    }
}

fn loaded(shared: &Shared, built: Built) {
    tracing::info!(
        id = %built.identity.id,
        not_after = %humantime::format_rfc3339_seconds(built.identity.not_after),
        roots = built.roots.len(),
        "mesh identity loaded from files"
    );
    shared.identity_status.renewed(SystemTime::now(), None);
    publish::install(shared, built);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Overrides, Snapshot};
    use crate::telemetry::metrics::Metrics;
    use crate::tls::tests::pki::{provider, Ca, Validity};

    #[tokio::test]
    async fn static_files_report_their_certificate_too() {
        let ca = Ca::new("mesh");
        let dir = tempfile::tempdir().unwrap();
        let [leaf, key, intermediate] = ca.leaf_pem("web", Validity::FRESH);
        let files = Files {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
            bundle: dir.path().join("b.pem"),
        };
        std::fs::write(&files.cert, leaf + &intermediate).unwrap();
        std::fs::write(&files.key, key).unwrap();
        std::fs::write(&files.bundle, ca.root_pem()).unwrap();
        let built = files.load(&provider()).unwrap();

        let metrics = Metrics::new();
        let shared =
            Shared::new(Snapshot::build("t", "", &Overrides::default(), None, &metrics).unwrap(), metrics);
        let mut installed = shared.reported.subscribe();
        tokio::spawn(watch(shared.clone(), files, built, provider()));
        tokio::time::timeout(Duration::from_secs(5), installed.changed()).await.unwrap().unwrap();
        let reported = installed.borrow().clone().unwrap();
        let report = reported.certificate;
        assert_eq!(report.identity, "spiffe://pilotfish.local/ns/default/sa/web");
        let status = shared.identity_status.report(shared.identity.load().as_deref());
        assert_eq!(report.root.as_deref(), status["roots"][0].as_str());
        assert!(report.root.is_some());
        assert_eq!(reported.trusted_roots, [report.root.unwrap()]);
    }
}
