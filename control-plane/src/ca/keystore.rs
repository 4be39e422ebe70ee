//! Where the CA keeps the roots and issuers a rotation makes, so they outlive the process and
//! reach every replica: beside the CA opened at start, named by their root's fingerprint.
//! - `Dir`: `<data-dir>/ca/roots/<fingerprint>/`, the same four files as `<data-dir>/ca/`,
//!   written whole and atomically ([`super::files`]).
//! - `Etcd`: `<prefix>ca/<fingerprint>`, sealed under the replicas' seal key as `<prefix>ca` is
//!   ([`super::shared`]); any replica can then activate it.
//! - `Supplied`: `--ca-cert/--ca-key`; the operator's CA, which the control plane cannot extend.

use std::path::{Path, PathBuf};

use super::authority::Ca;
use super::error::CaError;
use super::seal::SealKey;
use super::{chain, files, generate, shared};
use crate::core::sha256_hex;
use crate::store::Etcd;

#[derive(Clone)]
pub enum Keystore {
    Dir(PathBuf),
    Etcd { store: Etcd, key: SealKey },
    Supplied,
}

impl Keystore {
    /// A new root and issuer, stored; answers the CA they make.
    pub async fn create(&self) -> Result<Ca, CaError> {
        if matches!(self, Self::Supplied) {
            return Err(CaError::Supplied);
        }
        let new = generate::generate()?;
        let root = pem::parse(&new.root_cert)
            .map_err(|e| CaError::Invalid { origin: "a new root".into(), reason: e.to_string() })?;
        let fingerprint = sha256_hex(root.contents());
        match self {
            Self::Dir(dir) => {
                files::write_new(&rotated(dir, &fingerprint), &new)?;
            }
            Self::Etcd { store, key } => {
                store.create_rotated_ca(&fingerprint, shared::sealed(&new, key)?).await?;
            }
            Self::Supplied => unreachable!("refused above"),
        }
        tracing::info!(root = %fingerprint, "stored a new mesh CA for a root rotation");
        self.load(&fingerprint).await
    }

    /// The CA a rotation made under the root `fingerprint`.
    pub async fn load(&self, fingerprint: &str) -> Result<Ca, CaError> {
        match self {
            Self::Dir(dir) => {
                let at = rotated(dir, fingerprint);
                let missing = || CaError::Missing {
                    fingerprint: fingerprint.to_owned(),
                    origin: at.display().to_string(),
                };
                let stored = files::read(&at)?.ok_or_else(missing)?;
                let checked = chain::check(&at.display().to_string(), &stored.chain, &stored.key)?;
                Ok(Ca::from_chain(checked, self.clone()))
            }
            Self::Etcd { store, .. } => {
                let origin = format!("etcd key {}", store.rotated_ca_key(fingerprint));
                let stored = store.rotated_ca(fingerprint).await?.ok_or_else(|| CaError::Missing {
                    fingerprint: fingerprint.to_owned(),
                    origin: origin.clone(),
                })?;
                shared::opened(&origin, &stored, self.clone())
            }
            Self::Supplied => Err(CaError::Supplied),
        }
    }
}

fn rotated(dir: &Path, fingerprint: &str) -> PathBuf {
    dir.join("roots").join(fingerprint)
}
