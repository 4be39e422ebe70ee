//! Checking CA certificates and a key before they sign anything, whether supplied by the
//! operator (`--ca-cert/--ca-key`) or read back from the CA's directory: the key belongs to
//! the first certificate, which is a CA; each certificate is signed by the next; the last is
//! a self-signed root; none has expired. Each failure says how to fix the files.

use rcgen::{Issuer, KeyPair};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use super::error::CaError;

/// A checked issuer, ready to sign, and the certificates from it up to the root.
pub struct CheckedChain {
    pub issuer: Issuer<'static, KeyPair>,
    /// DER, the issuer first, the root last (one certificate when the issuer is the root).
    pub certs: Vec<Vec<u8>>,
    pub not_after: OffsetDateTime,
}

impl CheckedChain {
    /// The certificates a leaf is presented with: all but the root, which peers already hold.
    pub fn presented(&self) -> &[Vec<u8>] {
        &self.certs[..self.certs.len() - 1]
    }

    pub fn root(&self) -> &[u8] {
        &self.certs[self.certs.len() - 1]
    }
}

/// Checks `chain_pem` (the issuer's certificate, then each CA above it up to the root) and
/// `key_pem` (the issuer's PKCS#8 key); `origin` names the files in errors.
pub fn check(origin: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<CheckedChain, CaError> {
    let invalid = |reason: String| CaError::Invalid { origin: origin.to_owned(), reason };
    let certs: Vec<Vec<u8>> = pem::parse_many(chain_pem)
        .map_err(|e| invalid(format!("the certificate file is not PEM ({e})")))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.contents().to_vec())
        .collect();
    if certs.is_empty() {
        return Err(invalid("the certificate file holds no CERTIFICATE block".into()));
    }
    let parsed = certs
        .iter()
        .enumerate()
        .map(|(i, der)| {
            x509_parser::parse_x509_certificate(der)
                .map(|(_, cert)| cert)
                .map_err(|e| invalid(format!("certificate {} is not X.509: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key = KeyPair::from_pem(&String::from_utf8_lossy(key_pem)).map_err(|e| {
        invalid(format!(
            "the key is not a PKCS#8 PEM private key ({e}); convert one with `openssl pkcs8 -topk8 -nocrypt`"
        ))
    })?;
    let issuer = &parsed[0];
    if rcgen::PublicKeyData::subject_public_key_info(&key) != issuer.public_key().raw {
        return Err(invalid(
            "the key does not belong to the first certificate: give the issuer's own key".into(),
        ));
    }
    if !is_signing_ca(issuer) {
        return Err(invalid(
            "the first certificate is not a CA allowed to sign certificates (basicConstraints CA:TRUE, keyUsage keyCertSign)"
                .into(),
        ));
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        let signed = pair[0].issuer() == pair[1].subject()
            && pair[0].verify_signature(Some(pair[1].public_key())).is_ok();
        if !signed {
            return Err(invalid(format!(
                "certificate {} is not signed by certificate {}: list the issuer first, then each CA up to the root",
                i + 1,
                i + 2
            )));
        }
    }
    let root = &parsed[parsed.len() - 1];
    if root.subject() != root.issuer() || root.verify_signature(None).is_err() {
        return Err(invalid(
            "the last certificate is not a self-signed root: append the root's certificate to the file"
                .into(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    for (i, cert) in parsed.iter().enumerate() {
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= now {
            return Err(invalid(format!("certificate {} expired at {not_after}", i + 1)));
        }
    }
    let not_after = issuer.validity().not_after.to_datetime();
    let issuer = Issuer::from_ca_cert_der(&certs[0].clone().into(), key)
        .map_err(|e| invalid(format!("the issuer's certificate cannot sign: {e}")))?;
    Ok(CheckedChain { issuer, certs, not_after })
}

fn is_signing_ca(cert: &X509Certificate<'_>) -> bool {
    let ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let may_sign = match cert.key_usage() {
        Ok(Some(usage)) => usage.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    ca && may_sign
}
