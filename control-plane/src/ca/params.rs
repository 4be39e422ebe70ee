//! The parameters of the three kinds of certificate the mesh CA makes: the root, the issuer
//! (intermediate) under it, and a workload's leaf. Pure functions of the time and inputs, so the
//! rules (lifetimes, backdating, constraints, key usages) live in one place.

use std::time::Duration;

use pilotfish_api::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// A root lives ten years: rotating it is a deliberate operation (`pilotfish ca rotate`).
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The issuer lives a year, and never past its root.
pub const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// CA certificates start an hour early, so a node whose clock is behind still accepts them.
pub const CA_BACKDATE: Duration = Duration::from_secs(3600);
/// A leaf starts a minute early: nodes a few seconds apart broke fresh certificates in Istio
/// before it backdated them.
pub const LEAF_BACKDATE: Duration = Duration::from_secs(60);

/// The self-signed root.
pub fn root(now: OffsetDateTime) -> CertificateParams {
    let mut params = ca_params("Pilotfish mesh root", now, now + ROOT_LIFETIME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
}

/// The issuer: signs leaves only (path length 0), within its root's lifetime.
pub fn issuer(now: OffsetDateTime, root_not_after: OffsetDateTime) -> CertificateParams {
    let mut params = ca_params("Pilotfish mesh issuer", now, root_not_after.min(now + ISSUER_LIFETIME));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.use_authority_key_identifier_extension = true;
    params
}

fn ca_params(name: &str, now: OffsetDateTime, not_after: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Pilotfish");
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = now - CA_BACKDATE;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A workload's leaf: the identity as its only name, usable on both ends of mTLS (webpki
/// checks serverAuth on the client side and clientAuth on the server side), expiring after
/// `ttl` or with its issuer, whichever is first.
pub fn leaf(
    id: &SpiffeId,
    now: OffsetDateTime,
    ttl: Duration,
    issuer_not_after: OffsetDateTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    // No subject: the URI SAN is the identity (rcgen then marks the SAN critical, RFC 5280).
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::ExplicitNoCa;
    params.not_before = now - LEAF_BACKDATE;
    params.not_after = issuer_not_after.min(now + ttl);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// 16 random bytes (RFC 5280 asks for at most 20, positive, and CAs for unpredictable ones).
fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    // Positive and with no leading zero byte, so it encodes in exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_never_outlives_its_issuer_and_starts_a_minute_early() {
        let now = OffsetDateTime::now_utc();
        let id: SpiffeId = "spiffe://td/ns/default/sa/web".parse().unwrap();
        let issuer_end = now + Duration::from_secs(3600);
        let short = leaf(&id, now, Duration::from_secs(600), issuer_end).unwrap();
        assert_eq!(short.not_after, now + Duration::from_secs(600));
        assert_eq!(short.not_before, now - Duration::from_secs(60));
        let long = leaf(&id, now, Duration::from_secs(86_400), issuer_end).unwrap();
        assert_eq!(long.not_after, issuer_end);
    }

    #[test]
    fn the_issuer_ends_with_its_root_at_the_latest() {
        let now = OffsetDateTime::now_utc();
        let root_end = now + Duration::from_secs(30 * 24 * 3600);
        assert_eq!(issuer(now, root_end).not_after, root_end);
        assert_eq!(issuer(now, now + ROOT_LIFETIME).not_after, now + ISSUER_LIFETIME);
    }

    #[test]
    fn serials_are_random_and_positive() {
        let (a, b) = (random_serial(), random_serial());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.to_bytes()[0] & 0x80 == 0 && a.to_bytes()[0] != 0);
    }
}
