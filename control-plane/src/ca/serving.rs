//! The control plane's own TLS certificate, issued by the mesh CA at start-up for the names
//! clients reach it by (`--tls-san`): DNS names and IP addresses, server auth only — unlike a
//! workload leaf it carries no SPIFFE ID, and no workload leaf carries a DNS or IP name, so no
//! sidecar's certificate can pose as the control plane. Its key is made here and never leaves
//! the process. It lives as long as the issuer: a new issuer (`ca rotate`, new files) comes with
//! a restart that issues a new one.

use std::net::IpAddr;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::OffsetDateTime;

use super::authority::Ca;
use super::error::CaError;
use super::params::LEAF_BACKDATE;

/// A serving certificate and its key.
pub struct Serving {
    /// DER: the leaf, the issuer (and any CA below the root), then the root, so a client that
    /// pins the root's fingerprint finds it in what is presented.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub key: Vec<u8>,
}

impl Ca {
    /// A certificate for `names` (each an IP address or a DNS name), valid until the issuer
    /// expires.
    pub fn serving(&self, names: &[String]) -> Result<Serving, CaError> {
        let now = OffsetDateTime::now_utc();
        if self.issuer_not_after <= now {
            return Err(CaError::IssuerExpired(self.issuer_not_after.to_string()));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "Pilotfish control plane");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()
            .map_err(CaError::Sign)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = self.issuer_not_after;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let leaf = params.signed_by(&key, &self.issuer).map_err(CaError::Sign)?;
        let presented = pem::parse_many(&self.presented_pem).expect("the CA's own PEM parses");
        let mut chain = vec![leaf.der().to_vec()];
        chain.extend(presented.iter().map(|p| p.contents().to_vec()));
        chain.push(self.roots[0].clone());
        Ok(Serving { chain, key: key.serialize_der() })
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;

    use super::*;
    use crate::core::sha256_hex;

    #[test]
    fn the_serving_chain_names_the_addresses_and_ends_with_the_pinned_root() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::open(&dir.path().join("ca")).unwrap();
        let names = ["127.0.0.1".to_owned(), "localhost".to_owned(), "cp.example".to_owned()];
        let serving = ca.serving(&names).unwrap();
        assert_eq!(serving.chain.len(), 3, "leaf, issuer, root");
        assert_eq!(sha256_hex(&serving.chain[2]), ca.fingerprint());
        let (_, leaf) = x509_parser::parse_x509_certificate(&serving.chain[0]).unwrap();
        let sans = leaf.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
        assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])), "{sans:?}");
        assert!(sans.contains(&GeneralName::DNSName("cp.example")), "{sans:?}");
        assert!(!sans.iter().any(|n| matches!(n, GeneralName::URI(_))), "no SPIFFE ID: {sans:?}");
        assert!(ca.serving(&["ünïcode.example".to_owned()]).is_err(), "a DNS name is ASCII");
    }
}
