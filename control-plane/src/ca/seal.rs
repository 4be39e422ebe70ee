//! Sealing the CA's private keys for a store other replicas read (etcd): AES-256-GCM under a key
//! derived with HKDF-SHA256 from the operator's seal key (`--ca-seal-key`), a fresh random salt
//! and nonce per seal. The certificate a key belongs to is the associated data, so a sealed key
//! moved under another certificate fails to open rather than signing under a name it never had.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::error::CaError;

/// HKDF's `info`: names what the derived key is for, so the same seal key used elsewhere derives
/// another key.
const INFO: &[u8] = b"pilotfish mesh CA key seal v1";
/// Bytes of random salt per seal.
const SALT_LEN: usize = 32;
/// The shortest seal key taken: 32 characters, e.g. the 64 of `openssl rand -hex 32`.
pub const MIN_SEAL_KEY: usize = 32;

/// The operator's seal key (`--ca-seal-key`), shared by every replica.
#[derive(Clone)]
pub struct SealKey(Vec<u8>);

impl SealKey {
    pub fn new(secret: &str) -> Result<Self, CaError> {
        let secret = secret.trim();
        if secret.len() < MIN_SEAL_KEY {
            return Err(CaError::SealKey(format!(
                "it has {} characters, fewer than {MIN_SEAL_KEY}: make one with `openssl rand -hex 32`",
                secret.len()
            )));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }

    /// The AES-256-GCM key for one seal, from its salt.
    fn aead_key(&self, salt: &[u8]) -> LessSafeKey {
        let prk = Salt::new(HKDF_SHA256, salt).extract(&self.0);
        let okm = prk
            .expand(&[INFO], &AES_256_GCM)
            .expect("AES-256's key length is within HKDF-SHA256's output limit");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

/// A sealed secret as stored: salt, nonce and ciphertext (with its tag), base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// Seals `secret`, bound to `bound_to` (the certificate it belongs to).
pub fn seal(key: &SealKey, secret: &[u8], bound_to: &[u8]) -> Result<Sealed, CaError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt).and_then(|()| rng.fill(&mut nonce)).map_err(|_| {
        CaError::SealKey("the system's random generator failed while sealing the CA key".into())
    })?;
    let mut in_out = secret.to_vec();
    key.aead_key(&salt)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(bound_to), &mut in_out)
        .map_err(|_| CaError::SealKey("AES-256-GCM could not seal the CA key".into()))?;
    Ok(Sealed { salt: BASE64.encode(salt), nonce: BASE64.encode(nonce), ciphertext: BASE64.encode(in_out) })
}

/// Opens `sealed`: fails when the seal key differs, or anything was changed (the ciphertext, or
/// the certificate it is bound to).
pub fn unseal(key: &SealKey, sealed: &Sealed, bound_to: &[u8]) -> Result<Vec<u8>, CaError> {
    let wrong = || {
        CaError::Unseal(
            "the stored CA key does not open with this --ca-seal-key (another key sealed it, or the \
             stored value was altered): give every replica the seal key the first one used"
                .into(),
        )
    };
    let decode = |field: &str, text: &str| {
        BASE64.decode(text).map_err(|e| CaError::Unseal(format!("the stored {field} is not base64: {e}")))
    };
    let salt = decode("salt", &sealed.salt)?;
    let nonce = Nonce::try_assume_unique_for_key(&decode("nonce", &sealed.nonce)?)
        .map_err(|_| CaError::Unseal(format!("the stored nonce is not {NONCE_LEN} bytes")))?;
    let mut in_out = decode("ciphertext", &sealed.ciphertext)?;
    let plain =
        key.aead_key(&salt).open_in_place(nonce, Aad::from(bound_to), &mut in_out).map_err(|_| wrong())?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_sealed_secret_opens_with_the_same_key_and_certificate_only() {
        let key = SealKey::new(KEY).unwrap();
        let sealed = seal(&key, b"issuer key", b"issuer cert").unwrap();
        assert_eq!(unseal(&key, &sealed, b"issuer cert").unwrap(), b"issuer key");
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains("issuer key"), "{text}");

        let other = SealKey::new(&KEY.replace('0', "1")).unwrap();
        let err = unseal(&other, &sealed, b"issuer cert").unwrap_err();
        assert!(err.to_string().contains("seal key the first one used"), "{err}");
        assert!(unseal(&key, &sealed, b"another cert").is_err(), "bound to its certificate");

        let mut altered = sealed.clone();
        let mut bytes = BASE64.decode(&altered.ciphertext).unwrap();
        bytes[0] ^= 1;
        altered.ciphertext = BASE64.encode(bytes);
        assert!(unseal(&key, &altered, b"issuer cert").is_err(), "tampering is detected");
    }

    #[test]
    fn every_seal_has_its_own_salt_and_nonce() {
        let key = SealKey::new(KEY).unwrap();
        let (a, b) = (seal(&key, b"k", b"c").unwrap(), seal(&key, b"k", b"c").unwrap());
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn a_short_seal_key_is_refused_saying_how_to_make_one() {
        let err = SealKey::new("short").err().unwrap();
        assert!(err.to_string().contains("openssl rand -hex 32"), "{err}");
        assert!(SealKey::new(&format!("  {KEY}\n")).is_ok(), "surrounding whitespace is not counted");
    }
}
