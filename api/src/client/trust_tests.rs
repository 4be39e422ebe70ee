//! The pinned-root verifier against real chains: the genuine one verifies, and a wrong pin, a
//! forged chain that copies the genuine root, a name the certificate lacks, and a mesh leaf
//! with only a SPIFFE ID are each refused. A pin widened by pushed roots, against the
//! verifier and against an https server on a real socket.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use super::*;

/// A root, an issuer under it, and a server leaf for `localhost` and 127.0.0.1 under that.
struct Chain {
    root: CertificateDer<'static>,
    root_pem: String,
    issuer: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    leaf_key: KeyPair,
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
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer_ca).unwrap();
    Chain {
        root: root.der().clone(),
        root_pem: root.pem(),
        issuer: issuer.der().clone(),
        leaf: leaf.der().clone(),
        leaf_key,
        issuer_ca,
    }
}

fn verifier(pin: &str) -> PinnedRoot {
    PinnedRoot { pin: pin.to_owned(), provider: Arc::new(rustls::crypto::ring::default_provider()), or: None }
}

/// A leaf of `c`'s issuer naming only a sidecar's SPIFFE ID.
fn mesh_leaf(c: &Chain) -> CertificateDer<'static> {
    let mut params = CertificateParams::default();
    params.subject_alt_names =
        vec![SanType::URI("spiffe://pilotfish.local/ns/default/sa/web".try_into().unwrap())];
    params.signed_by(&KeyPair::generate().unwrap(), &c.issuer_ca).unwrap().der().clone()
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
    let v = verifier(&sha256_hex(&c.root));
    let err = verify(&v, &mesh_leaf(&c), &[c.issuer.clone(), c.root.clone()], "127.0.0.1").unwrap_err();
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

#[test]
fn a_pin_widened_by_pushed_roots_trusts_the_latest_of_them_too() {
    let (pinned, rotated, later) = (chain(), chain(), chain());
    let roots = SharedRoots::default();
    let v = PinnedRoot { or: Some(roots.clone()), ..verifier(&sha256_hex(&pinned.root)) };
    // Nothing pushed yet: the pin alone.
    verify(&v, &pinned.leaf, &[pinned.issuer.clone(), pinned.root.clone()], "localhost").unwrap();
    assert!(verify(&v, &rotated.leaf, &[rotated.issuer.clone(), rotated.root.clone()], "localhost").is_err());

    // A rotation's bundle: a control plane serving from the new root verifies, root presented or not.
    assert_eq!(roots.set_pem(&format!("{}{}", pinned.root_pem, rotated.root_pem)), 2);
    verify(&v, &rotated.leaf, &[rotated.issuer.clone(), rotated.root.clone()], "localhost").unwrap();
    verify(&v, &rotated.leaf, std::slice::from_ref(&rotated.issuer), "127.0.0.1").unwrap();
    // Its name still counts, and a sidecar's leaf still cannot pose as the control plane.
    assert!(verify(&v, &rotated.leaf, std::slice::from_ref(&rotated.issuer), "elsewhere.example").is_err());
    assert!(verify(&v, &mesh_leaf(&rotated), std::slice::from_ref(&rotated.issuer), "127.0.0.1").is_err());

    // The next push is what counts: a root it dropped is no longer trusted; the pin still is.
    assert_eq!(roots.set_pem(&later.root_pem), 1);
    assert!(verify(&v, &rotated.leaf, std::slice::from_ref(&rotated.issuer), "localhost").is_err());
    verify(&v, &pinned.leaf, &[pinned.issuer.clone(), pinned.root.clone()], "localhost").unwrap();
    // Only a pin is widened: a CA file's roots stay what the operator chose.
    assert!(matches!(
        Trust::pinned(&"ab".repeat(32)).unwrap().or_roots(roots.clone()),
        Trust::PinnedOrRoots { .. }
    ));
    let file = Trust::Roots(Arc::new(RootCertStore::empty())).or_roots(roots);
    assert!(matches!(file, Trust::Roots(_)));
}

/// An https server on a real socket presenting `c`'s leaf and issuer and offering `alpn`; it
/// answers 200 to all, with the HTTP version the request came in, and counts its connections.
async fn serve_tls(c: &Chain, alpn: &[&[u8]]) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivatePkcs8KeyDer::from(c.leaf_key.serialize_der()).into();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![c.leaf.clone(), c.issuer.clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else { return };
                let ok = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
                    let version = bytes::Bytes::from(format!("{:?}", req.version()));
                    std::future::ready(Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(version),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), ok)
                    .await;
            });
        }
    });
    (url, connections)
}

#[tokio::test]
async fn calls_share_one_http2_connection_where_the_server_offers_h2_and_use_http1_where_not() {
    use crate::client::transport::Call;

    let c = chain();
    let trust = || {
        let mut roots = RootCertStore::empty();
        roots.add(c.root.clone()).unwrap();
        Some(Trust::Roots(Arc::new(roots)))
    };
    let version = async |client: &crate::client::Client| {
        client.text(Call::new(http::Method::GET, "/".into())).await.unwrap()
    };
    let (url, connections) = serve_tls(&c, &[b"h2", b"http/1.1"]).await;
    let client = crate::client::Client::builder(&url).trust(trust()).build();
    assert_eq!(version(&client).await, "HTTP/2.0");
    // Calls side by side, as a sidecar's ACK beside its push stream: over the same connection.
    let (a, b) = tokio::join!(version(&client), version(&client));
    assert_eq!((a.as_str(), b.as_str()), ("HTTP/2.0", "HTTP/2.0"));
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A control plane from before HTTP/2 offers only `http/1.1`.
    let (url, _) = serve_tls(&c, &[b"http/1.1"]).await;
    let client = crate::client::Client::builder(&url).trust(trust()).build();
    assert_eq!(version(&client).await, "HTTP/1.1");
}

#[tokio::test]
async fn a_control_plane_restarted_on_the_new_root_is_reached_once_the_root_was_pushed() {
    let (pinned, rotated) = (chain(), chain());
    let (url, _) = serve_tls(&rotated, &[]).await;
    let roots = SharedRoots::default();
    let trust = Trust::pinned(&sha256_hex(&pinned.root)).unwrap().or_roots(roots.clone());
    let client = crate::client::Client::builder(&url).trust(Some(trust)).build();
    let refused = client.readyz().await.unwrap_err();
    assert!(format!("{refused:?}").contains("pinned fingerprint"), "{refused:?}");
    roots.set_pem(&format!("{}{}", pinned.root_pem, rotated.root_pem));
    client.readyz().await.unwrap();
}
