//! The CA shared by control-plane replicas through etcd (`--store etcd://... --ca-seal-key`): the
//! first replica to start generates it and stores it beside the log (never in it), its keys
//! sealed ([`super::seal`]); every replica, that one included, opens what is stored, so all of
//! them sign under the one issuer. Creation is put-if-absent, so of replicas starting at once
//! exactly one CA is kept.

use serde::{Deserialize, Serialize};

use super::authority::Ca;
use super::error::CaError;
use super::generate::{self, NewCa};
use super::keystore::Keystore;
use super::seal::{seal, unseal, SealKey, Sealed};
use crate::store::Etcd;

/// The CA as stored in etcd: certificates in the clear (they are public), keys sealed, each
/// bound to its certificate.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    root_pem: String,
    issuer_pem: String,
    /// Kept so that a new issuer can be signed under the same root.
    root_key: Sealed,
    issuer_key: Sealed,
}

impl Ca {
    /// The CA shared through `store`, made and stored there by the first replica to start.
    pub async fn shared(store: &Etcd, key: &SealKey) -> Result<Self, CaError> {
        let stored = match store.shared_ca().await? {
            Some(stored) => stored,
            None => {
                let new = sealed(&generate::generate()?, key)?;
                let stored = store.create_shared_ca(new.clone()).await?;
                if stored == new {
                    tracing::info!(key = store.shared_ca_key(), "stored a new mesh CA in etcd");
                }
                stored
            }
        };
        let keystore = Keystore::Etcd { store: store.clone(), key: key.clone() };
        opened(&format!("etcd key {}", store.shared_ca_key()), &stored, keystore)
    }
}

/// The CA stored as `stored` (at `origin`), its issuer key unsealed with the keystore's key.
pub(super) fn opened(origin: &str, stored: &[u8], keystore: Keystore) -> Result<Ca, CaError> {
    let Keystore::Etcd { key, .. } = &keystore else { unreachable!("only etcd keeps sealed CAs") };
    let stored: Stored = serde_json::from_slice(stored).map_err(|e| CaError::Invalid {
        origin: origin.to_owned(),
        reason: format!("it is not a stored CA ({e})"),
    })?;
    let issuer_key = unseal(key, &stored.issuer_key, stored.issuer_pem.as_bytes())?;
    Ca::from_pem(origin, (stored.issuer_pem + &stored.root_pem).as_bytes(), &issuer_key, keystore)
}

/// `ca` as stored: JSON, its keys sealed under `key`.
pub(super) fn sealed(ca: &NewCa, key: &SealKey) -> Result<Vec<u8>, CaError> {
    let stored = Stored {
        root_key: seal(key, ca.root_key.as_bytes(), ca.root_cert.as_bytes())?,
        issuer_key: seal(key, ca.issuer_key.as_bytes(), ca.issuer_cert.as_bytes())?,
        root_pem: ca.root_cert.clone(),
        issuer_pem: ca.issuer_cert.clone(),
    };
    Ok(serde_json::to_vec(&stored).expect("the stored CA serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_holds_no_private_key_in_the_clear() {
        let ca = generate::generate().unwrap();
        let key = SealKey::new("0123456789abcdef0123456789abcdef").unwrap();
        let text = String::from_utf8(sealed(&ca, &key).unwrap()).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        let body = |pem: &str| pem.lines().nth(1).unwrap().to_owned();
        assert!(!text.contains(&body(&ca.issuer_key)) && !text.contains(&body(&ca.root_key)));
        let stored: Stored = serde_json::from_str(&text).unwrap();
        let issuer_key = unseal(&key, &stored.issuer_key, stored.issuer_pem.as_bytes()).unwrap();
        assert_eq!(issuer_key, ca.issuer_key.as_bytes());
        let chain = stored.issuer_pem + &stored.root_pem;
        let opened = Ca::from_pem("test", chain.as_bytes(), &issuer_key, Keystore::Supplied).unwrap();
        let root = pem::parse(&ca.root_cert).unwrap();
        assert_eq!(opened.fingerprint(), crate::core::sha256_hex(root.contents()));
    }
}
