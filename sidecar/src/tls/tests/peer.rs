//! Reading the SPIFFE ID from a certificate, and a trusted peer whose certificate names none.

use rcgen::SanType;

use super::pki::{handshake, id, provider, reason, spiffe_san, Ca, Validity};
use crate::tls::{spiffe_id, FailureReason, IdentityError, MeshAlpn, MeshConfigs, MeshError};

fn uri(uri: &str) -> SanType {
    SanType::URI(uri.try_into().unwrap())
}

#[test]
fn the_spiffe_id_is_the_one_uri_san() {
    let ca = Ca::new("mesh");
    let read = |sans: Vec<SanType>| spiffe_id(ca.leaf_naming(sans, Validity::FRESH).leaf());
    assert_eq!(read(vec![spiffe_san("web")]), Ok(id("web")));
    // Other kinds of SAN beside it do not matter.
    assert_eq!(
        read(vec![SanType::DnsName("web.local".try_into().unwrap()), spiffe_san("web")]),
        Ok(id("web"))
    );
    assert_eq!(read(vec![SanType::DnsName("web.local".try_into().unwrap())]), Err(IdentityError::NoUriSan));
    assert_eq!(read(vec![]), Err(IdentityError::NoUriSan));
    assert_eq!(read(vec![spiffe_san("web"), spiffe_san("admin")]), Err(IdentityError::SeveralUriSans(2)));
    for not_mesh in
        ["https://web.local/", "spiffe://pilotfish.local/web", "spiffe://pilotfish.local/ns/default/sa/web?x"]
    {
        assert!(matches!(read(vec![uri(not_mesh)]), Err(IdentityError::NotSpiffe(_))), "{not_mesh}");
    }
    assert!(matches!(spiffe_id(b"not a certificate"), Err(IdentityError::Unparsable(_))));
}

#[tokio::test]
async fn a_trusted_peer_without_a_spiffe_id_is_a_bad_identity() {
    let ca = Ca::new("mesh");
    let anonymous = ca.leaf_naming(vec![SanType::DnsName("api.local".try_into().unwrap())], Validity::FRESH);
    let anonymous = MeshConfigs::new(&anonymous, &ca.bundle(), &provider()).unwrap();
    let (inbound, outbound) = handshake(&anonymous, &ca.configs("web"), &id("api"), MeshAlpn::Tcp).await;
    assert!(matches!(outbound, Err(MeshError::NoIdentity(IdentityError::NoUriSan))), "{outbound:?}");
    assert_eq!(reason(outbound), FailureReason::BadIdentity);
    drop(inbound);
    let (inbound, _) = handshake(&ca.configs("api"), &anonymous, &id("api"), MeshAlpn::Tcp).await;
    assert_eq!(reason(inbound), FailureReason::BadIdentity);
}
