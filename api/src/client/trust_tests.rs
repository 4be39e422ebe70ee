//! The pinned-root verifier against real chains: the genuine one verifies, and a wrong pin, a
//! forged chain that copies the genuine root, a name the certificate lacks, and a mesh leaf
//! with only a SPIFFE ID are each refused.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

/// A root, an issuer under it, and a server leaf for `localhost` and 127.0.0.1 under that.
struct Chain {
    root: CertificateDer<'static>,
    issuer: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    issuer_ca: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str, constraints: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(constraints);
    params
}

/// Both chains carry the same names, so only the keys tell them apart.
fn chain() -> Chain {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("Pilotfish mesh root", BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let root_ca = Issuer::new(root_params, root_key);
    let issuer_key = KeyPair::generate().unwrap();
    let issuer_params = ca_params("Pilotfish mesh issuer", BasicConstraints::Constrained(0));
    let issuer = issuer_params.signed_by(&issuer_key, &root_ca).unwrap();
    let issuer_ca = Issuer::new(issuer_params, issuer_key);
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&KeyPair::generate().unwrap(), &issuer_ca).unwrap();
    Chain { root: root.der().clone(), issuer: issuer.der().clone(), leaf: leaf.der().clone(), issuer_ca }
}

fn verifier(pin: &str) -> PinnedRoot {
    PinnedRoot { pin: pin.to_owned(), provider: Arc::new(rustls::crypto::ring::default_provider()) }
}

fn verify(
    v: &PinnedRoot,
    leaf: &CertificateDer<'_>,
    rest: &[CertificateDer<'_>],
    name: &str,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    v.verify_server_cert(leaf, rest, &name, &[], UnixTime::now()).map(drop)
}

#[test]
fn the_genuine_chain_verifies_against_its_pinned_root() {
    let c = chain();
    let v = verifier(&sha256_hex(&c.root));
    verify(&v, &c.leaf, &[c.issuer.clone(), c.root.clone()], "localhost").unwrap();
    verify(&v, &c.leaf, &[c.issuer.clone(), c.root.clone()], "127.0.0.1").unwrap();
    let err = verify(&v, &c.leaf, &[c.issuer.clone(), c.root.clone()], "elsewhere.example").unwrap_err();
    assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
}

#[test]
fn another_root_or_a_forged_chain_copying_the_pinned_root_is_refused() {
    let (genuine, forged) = (chain(), chain());
    let v = verifier(&sha256_hex(&genuine.root));
    let err =
        verify(&v, &forged.leaf, &[forged.issuer.clone(), forged.root.clone()], "localhost").unwrap_err();
    assert!(err.to_string().contains("pinned fingerprint"), "{err}");
    // The attacker presents the genuine root, but its own issuer and leaf.
    let err =
        verify(&v, &forged.leaf, &[forged.issuer.clone(), genuine.root.clone()], "localhost").unwrap_err();
    assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
    // A pin that is no presented certificate's: even the genuine chain fails.
    let wrong = verifier(&"0".repeat(64));
    assert!(
        verify(&wrong, &genuine.leaf, &[genuine.issuer.clone(), genuine.root.clone()], "localhost").is_err()
    );
}

#[test]
fn a_mesh_leaf_of_the_same_ca_cannot_pose_as_the_control_plane() {
    let c = chain();
    let mut params = CertificateParams::default();
    params.subject_alt_names =
        vec![SanType::URI("spiffe://pilotfish.local/ns/default/sa/web".try_into().unwrap())];
    let sidecar = params.signed_by(&KeyPair::generate().unwrap(), &c.issuer_ca).unwrap();
    let v = verifier(&sha256_hex(&c.root));
    let err = verify(&v, sidecar.der(), &[c.issuer.clone(), c.root.clone()], "127.0.0.1").unwrap_err();
    assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
}

#[test]
fn fingerprints_are_read_as_openssl_prints_them_and_bad_ones_refused() {
    let hex = "AB:".repeat(31) + "AB";
    assert!(matches!(Trust::pinned(&hex), Ok(Trust::Pinned(p)) if p == "ab".repeat(32)));
    assert!(Trust::pinned("abc").is_err());
    let pin = "cd".repeat(32);
    assert!(matches!(Trust::from_token(&format!("id.secret.{pin}")), Some(Trust::Pinned(p)) if p == pin));
    assert!(Trust::from_token("id.secret").is_none() && Trust::from_token("an-admin-token").is_none());
    let dir = std::env::temp_dir().join(format!("pilotfish-trust-{}", std::process::id()));
    std::fs::write(&dir, "not a certificate").unwrap();
    let err = Trust::ca_file(&dir).unwrap_err();
    assert!(err.to_string().contains("no usable CERTIFICATE"), "{err}");
    std::fs::remove_file(&dir).unwrap();
}
