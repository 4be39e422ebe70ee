//! Reading an identity and a trust bundle from PEM, as static mode's files hold them.

use super::pki::{handshake, id, provider, Ca, Validity};
use crate::tls::{spiffe_id, Credentials, CredentialsError, MeshAlpn, MeshConfigs, TrustBundle};

#[tokio::test]
async fn pem_files_make_working_configs() {
    let (old, new) = (Ca::new("old"), Ca::new("new"));
    let [leaf, key, intermediate] = old.leaf_pem("api", Validity::FRESH);
    let credentials =
        Credentials::from_pem(format!("{leaf}{intermediate}").as_bytes(), key.as_bytes()).unwrap();
    assert_eq!(credentials.chain.len(), 2);
    assert_eq!(spiffe_id(credentials.leaf()), Ok(id("api")));
    let bundle = TrustBundle::from_pem(format!("{}{}", old.root_pem(), new.root_pem()).as_bytes()).unwrap();
    assert_eq!(bundle.roots().len(), 2);

    let server = MeshConfigs::new(&credentials, &bundle, &provider()).unwrap();
    let client = MeshConfigs::new(&new.leaf("web", Validity::FRESH), &bundle, &provider()).unwrap();
    let (inbound, outbound) = handshake(&server, &client, &id("api"), MeshAlpn::Tcp).await;
    assert_eq!(inbound.unwrap().peer, id("web"));
    assert_eq!(outbound.unwrap().peer, id("api"));
}

#[test]
fn unusable_pem_is_refused_with_a_reason() {
    let ca = Ca::new("mesh");
    let [leaf, key, _] = ca.leaf_pem("api", Validity::FRESH);
    assert!(matches!(Credentials::from_pem(b"", key.as_bytes()), Err(CredentialsError::NoCertificate)));
    assert!(matches!(Credentials::from_pem(leaf.as_bytes(), b""), Err(CredentialsError::Pem(_))));
    assert!(matches!(TrustBundle::from_pem(b""), Err(CredentialsError::EmptyBundle)));
    assert!(matches!(TrustBundle::from_pem(key.as_bytes()), Err(CredentialsError::EmptyBundle)));
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        TrustBundle::from_pem(garbage.as_bytes()),
        Err(CredentialsError::BadRoot { index: 0, .. })
    ));
}
