//! The CA with real crypto and real files: chains checked by rustls/webpki and by `openssl
//! verify`, names checked with x509-parser and `openssl x509`, keys on disk checked by mode.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pilotfish_api::SpiffeId;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::RootCertStore;
use x509_parser::extensions::GeneralName;

use super::{Ca, CaError};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn web() -> SpiffeId {
    "spiffe://pilotfish.local/ns/default/sa/web".parse().unwrap()
}

/// A CSR for a fresh key, asking for `names` (DNS names or URIs) and a CN of its choosing.
fn csr(names: &[&str]) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "admin");
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.strip_prefix("dns:") {
            Some(dns) => SanType::DnsName((*dns).try_into().unwrap()),
            None => SanType::URI((*n).try_into().unwrap()),
        })
        .collect();
    params.serialize_request(&KeyPair::generate().unwrap()).unwrap().pem().unwrap()
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().unwrap()
}

/// Verifies `chain_pem` against `bundle_pem` as both ends of mTLS would: the server checking a
/// client certificate, the client checking a server certificate.
fn rustls_verify(chain_pem: &str, bundle_pem: &str) -> Result<(), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for root in certs(bundle_pem) {
        roots.add(root).unwrap();
    }
    let roots = Arc::new(roots);
    let chain = certs(chain_pem);
    let now = UnixTime::now();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build().unwrap();
    verifier.verify_client_cert(&chain[0], &chain[1..], now)?;
    let algorithms = provider.signature_verification_algorithms.all;
    let leaf = ParsedCertificate::try_from(&chain[0])?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(&leaf, &roots, &chain[1..], now, algorithms)
}

/// `openssl <args>` in `dir`: its success and its output.
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_ca_is_stored_with_private_keys_and_a_restart_reloads_the_same() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("ca");
    let ca = Ca::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    for key in ["root.key", "issuer.key"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(data.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["ca"], "no staging directory is left behind");
    let again = Ca::open(&dir).unwrap();
    assert_eq!(again.fingerprint(), ca.fingerprint());
    assert_eq!(again.trust_bundle_pem(), ca.trust_bundle_pem());
    assert_eq!(again.issuer_not_after(), ca.issuer_not_after());
    let issued = again.issue(&csr(&[]), &web(), DAY).unwrap();
    rustls_verify(&issued.chain_pem, ca.trust_bundle_pem())
        .expect("a leaf after a restart chains to the first root");
    let other = tempfile::tempdir().unwrap();
    assert_ne!(Ca::open(&other.path().join("ca")).unwrap().fingerprint(), ca.fingerprint());
}

#[test]
fn processes_starting_at_once_end_up_with_one_ca() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("ca");
    let opened: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| Ca::open(&dir).unwrap().fingerprint())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(opened.windows(2).all(|w| w[0] == w[1]), "{opened:?}");
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 1, "the losers cleaned up");
}

#[test]
fn an_issued_chain_verifies_with_rustls_and_openssl_and_a_foreign_one_does_not() {
    let data = tempfile::tempdir().unwrap();
    let ca = Ca::open(&data.path().join("ca")).unwrap();
    let issued = ca.issue(&csr(&[]), &web(), DAY).unwrap();
    let chain = certs(&issued.chain_pem);
    assert_eq!(chain.len(), 2, "the leaf and the issuer");
    rustls_verify(&issued.chain_pem, ca.trust_bundle_pem()).unwrap();

    let dir = data.path();
    let pem = |der: &CertificateDer| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    std::fs::write(dir.join("root.pem"), ca.trust_bundle_pem()).unwrap();
    std::fs::write(dir.join("issuer.pem"), pem(&chain[1])).unwrap();
    std::fs::write(dir.join("leaf.pem"), pem(&chain[0])).unwrap();
    let verify = ["verify", "-CAfile", "root.pem", "-untrusted", "issuer.pem", "leaf.pem"];
    let (ok, out) = openssl(dir, &verify);
    assert!(ok && out.contains("leaf.pem: OK"), "{out}");
    for purpose in ["sslserver", "sslclient"] {
        let (ok, out) = openssl(dir, &[&verify[..5], &["-purpose", purpose, "leaf.pem"]].concat());
        assert!(ok, "{purpose}: {out}");
    }

    let foreign = Ca::open(&data.path().join("other")).unwrap();
    std::fs::write(dir.join("foreign-root.pem"), foreign.trust_bundle_pem()).unwrap();
    let (ok, out) =
        openssl(dir, &["verify", "-CAfile", "foreign-root.pem", "-untrusted", "issuer.pem", "leaf.pem"]);
    assert!(!ok, "another CA's root must not verify the leaf: {out}");
    let err = rustls_verify(&issued.chain_pem, foreign.trust_bundle_pem()).unwrap_err();
    assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err:?}");
}

#[test]
fn the_leaf_names_only_the_identity_given_whatever_the_csr_asks_for() {
    let data = tempfile::tempdir().unwrap();
    let ca = Ca::open(&data.path().join("ca")).unwrap();
    let greedy = csr(&["spiffe://pilotfish.local/ns/default/sa/admin", "dns:control-plane.example"]);
    let issued = ca.issue(&greedy, &web(), DAY).unwrap();
    assert_eq!(issued.identity, web());
    let chain = certs(&issued.chain_pem);
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().expect("a SAN");
    assert!(san.critical, "the subject is empty, so the SAN is critical");
    assert_eq!(san.value.general_names, [GeneralName::URI("spiffe://pilotfish.local/ns/default/sa/web")]);
    assert_eq!(leaf.subject().iter().count(), 0, "no CN from the CSR: {}", leaf.subject());

    std::fs::write(data.path().join("leaf.pem"), &issued.chain_pem).unwrap();
    let (ok, out) = openssl(data.path(), &["x509", "-in", "leaf.pem", "-noout", "-ext", "subjectAltName"]);
    assert!(ok, "{out}");
    assert!(out.contains("URI:spiffe://pilotfish.local/ns/default/sa/web"), "{out}");
    assert!(!out.contains("admin") && !out.contains("DNS:"), "{out}");
}

#[test]
fn a_leaf_starts_a_minute_early_is_for_mtls_only_and_never_outlives_its_issuer() {
    let data = tempfile::tempdir().unwrap();
    let ca = Ca::open(&data.path().join("ca")).unwrap();
    let before = SystemTime::now();
    let issued = ca.issue(&csr(&[]), &web(), Duration::from_secs(600)).unwrap();
    let chain = certs(&issued.chain_pem);
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let backdate = unix(before) - leaf.validity().not_before.timestamp();
    assert!((59..=61).contains(&backdate), "NotBefore is {backdate} s before issuing");
    assert_eq!(leaf.validity().not_after.timestamp(), unix(issued.not_after));
    assert!((599..=601).contains(&(unix(issued.not_after) - unix(before))));
    assert!(!leaf.is_ca());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any, "{eku:?}");
    let usage = leaf.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && !usage.key_cert_sign(), "{usage:?}");

    let forever = ca.issue(&csr(&[]), &web(), 20 * 365 * DAY).unwrap();
    assert_eq!(forever.not_after, ca.issuer_not_after(), "clamped to the issuer");
    let chain = certs(&forever.chain_pem);
    let (_, issuer) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
    let constraints = issuer.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca && constraints.path_len_constraint == Some(0), "{constraints:?}");
    let response = pilotfish_api::wire::CertifyResponse::from(forever);
    assert_eq!(
        response.not_after.parse::<humantime::Timestamp>().map(SystemTime::from),
        Ok(ca.issuer_not_after())
    );
}

#[test]
fn a_csr_that_does_not_prove_its_key_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let ca = Ca::open(&data.path().join("ca")).unwrap();
    let good = pem::parse(csr(&[])).unwrap();
    let mut der = good.contents().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let forged = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let err = ca.issue(&forged, &web(), DAY).unwrap_err();
    assert!(matches!(err, CaError::Csr(ref m) if m.contains("signature")), "{err}");
    let err = ca.issue("not a csr", &web(), DAY).unwrap_err();
    assert!(matches!(err, CaError::Csr(ref m) if m.contains("PKCS#10")), "{err}");
}

#[test]
fn supplied_files_are_used_when_they_fit_and_refused_clearly_when_not() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap();
        dir.join(name)
    };
    // A root made by openssl, PKCS#8 key: the operator's own CA, signing leaves directly.
    let (ok, out) = openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "own.key",
            "-out",
            "own.pem",
            "-days",
            "30",
            "-subj",
            "/CN=own root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    assert!(ok, "{out}");
    let own = Ca::from_files(&dir.join("own.pem"), &dir.join("own.key")).unwrap();
    let issued = own.issue(&csr(&[]), &web(), DAY).unwrap();
    rustls_verify(&issued.chain_pem, own.trust_bundle_pem()).unwrap();

    let stored = Ca::open(&dir.join("ca")).unwrap();
    let [root, issuer, issuer_key] = ["root.pem", "issuer.pem", "issuer.key"]
        .map(|f| std::fs::read_to_string(dir.join("ca").join(f)).unwrap());
    let chain = write("chain.pem", &(issuer.clone() + &root));
    let supplied = Ca::from_files(&chain, &dir.join("ca/issuer.key")).unwrap();
    assert_eq!(supplied.fingerprint(), stored.fingerprint());

    let refused = |cert: &Path, key: &Path| match Ca::from_files(cert, key) {
        Err(CaError::Invalid { reason, .. }) => reason,
        other => panic!("{:?}", other.map(|ca| ca.fingerprint())),
    };
    let reason = refused(&chain, &dir.join("own.key"));
    assert!(reason.contains("does not belong to the first certificate"), "{reason}");
    let reason = refused(&write("alone.pem", &issuer), &dir.join("ca/issuer.key"));
    assert!(reason.contains("append the root"), "{reason}");
    let reason = refused(&write("reversed.pem", &(root + &issuer)), &dir.join("ca/root.key"));
    assert!(reason.contains("not signed by certificate 2"), "{reason}");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::default().self_signed(&leaf_key).unwrap();
    let reason = refused(&write("leaf.pem", &leaf.pem()), &write("leaf.key", &leaf_key.serialize_pem()));
    assert!(reason.contains("not a CA"), "{reason}");
    let (ok, out) = openssl(dir, &["ec", "-in", "own.key", "-out", "sec1.key"]);
    assert!(ok, "{out}");
    let reason = refused(&dir.join("own.pem"), &dir.join("sec1.key"));
    assert!(reason.contains("openssl pkcs8 -topk8"), "{reason}");
    let err = Ca::from_files(&dir.join("missing.pem"), &write("k", &issuer_key)).err().unwrap();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn an_empty_directory_gets_a_ca_and_a_partial_one_is_refused_naming_the_missing_file() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("ca");
    std::fs::create_dir(&dir).unwrap();
    let ca = Ca::open(&dir).unwrap();
    std::fs::remove_file(dir.join("issuer.key")).unwrap();
    let err = Ca::open(&dir).err().expect("a CA without its issuer key");
    assert!(matches!(err, CaError::Io { ref path, .. } if path.ends_with("issuer.key")), "{err}");
    assert_eq!(ca.fingerprint().len(), 64, "a SHA-256 of its root");
}
