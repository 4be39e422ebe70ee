//! A test CA: a root, an intermediate that issues, and leaves with a SPIFFE URI SAN and a
//! validity relative to now; a skewed clock; a loopback socket pair.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pilotfish_api::identity::SpiffeId;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::time_provider::TimeProvider;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{client, server};

use crate::listener::detect::PrefixedIo;
use crate::tls::{
    accept_mesh, connect_mesh, Credentials, Established, FailureReason, MeshAlpn, MeshConfigs, MeshError,
    TrustBundle,
};

/// The provider every test config is built with, never the process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `spiffe://pilotfish.local/ns/default/sa/<account>`.
pub fn id(account: &str) -> SpiffeId {
    SpiffeId::new("pilotfish.local", "default", account).unwrap()
}

/// A root and the intermediate it signed.
pub struct Ca {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf's validity, in seconds relative to now.
#[derive(Clone, Copy)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// What the mesh CA issues: backdated a minute, valid for a day.
    pub const FRESH: Validity = Validity { not_before: -60, not_after: 24 * 3600 };
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = ca_params(&format!("{name} root"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let mut params = ca_params(&format!("{name} intermediate"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let intermediate = CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &root).unwrap();
        Ca { root, intermediate }
    }

    pub fn root(&self) -> CertificateDer<'static> {
        self.root.der().clone()
    }

    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A bundle of this CA's root alone.
    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::from_der(vec![self.root()]).unwrap()
    }

    /// A leaf for `account`, as the sidecar holds it.
    pub fn leaf(&self, account: &str, validity: Validity) -> Credentials {
        self.leaf_naming(vec![spiffe_san(account)], validity)
    }

    /// A leaf whose subject alternative names are `sans`, as the sidecar holds it.
    pub fn leaf_naming(&self, sans: Vec<SanType>, validity: Validity) -> Credentials {
        let (cert, key) = self.issue(sans, validity);
        Credentials {
            chain: vec![cert.der().clone(), self.intermediate.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    /// A leaf for `account`, its key and the intermediate, in PEM.
    pub fn leaf_pem(&self, account: &str, validity: Validity) -> [String; 3] {
        let (cert, key) = self.issue(vec![spiffe_san(account)], validity);
        [cert.pem(), key.serialize_pem(), self.intermediate.pem()]
    }

    fn issue(&self, sans: Vec<SanType>, validity: Validity) -> (Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        (leaf_params(sans, validity).signed_by(&key, &self.intermediate).unwrap(), key)
    }

    /// Configs for a fresh leaf of `account`, trusting this CA alone, on the real clock.
    pub fn configs(&self, account: &str) -> MeshConfigs {
        MeshConfigs::new(&self.leaf(account, Validity::FRESH), &self.bundle(), &provider()).unwrap()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, Validity { not_before: -3600, not_after: 10 * 365 * 24 * 3600 });
    params
}

/// The SAN the mesh CA writes: `account`'s SPIFFE ID as a URI.
pub fn spiffe_san(account: &str) -> SanType {
    SanType::URI(id(account).to_string().try_into().unwrap())
}

/// What the mesh CA puts in a leaf: the SANs (its SPIFFE ID alone), both EKUs (webpki checks
/// serverAuth on the client side and clientAuth on the server side).
fn leaf_params(sans: Vec<SanType>, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, validity);
    params
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs((now + validity.not_before) as u64);
    params.not_after = epoch + Duration::from_secs((now + validity.not_after) as u64);
}

/// A clock `offset` seconds from the real one (negative: behind).
#[derive(Debug)]
pub struct Skewed(pub i64);

impl TimeProvider for Skewed {
    fn current_time(&self) -> Option<UnixTime> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
        Some(UnixTime::since_unix_epoch(Duration::from_secs((now + self.0) as u64)))
    }
}

/// Configs for `credentials` trusting `bundle`, validating on a clock `skew` seconds off.
pub fn skewed(credentials: &Credentials, bundle: &TrustBundle, skew: i64) -> MeshConfigs {
    MeshConfigs::with_clock(credentials, bundle, &provider(), Arc::new(Skewed(skew))).unwrap()
}

/// A connected loopback TCP pair: (client end, server end).
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (client, server) =
        tokio::join!(TcpStream::connect(listener.local_addr().unwrap()), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

pub type Inbound = Result<Established<server::TlsStream<PrefixedIo<TcpStream>>>, MeshError>;
pub type Outbound = Result<Established<client::TlsStream<TcpStream>>, MeshError>;

/// A client with `client` configs dials a server with `server` configs, expecting `expected`.
pub async fn handshake(
    server: &MeshConfigs,
    client: &MeshConfigs,
    expected: &SpiffeId,
    alpn: MeshAlpn,
) -> (Inbound, Outbound) {
    let (dialled, accepted) = tcp_pair().await;
    tokio::join!(accept_mesh(server, Bytes::new(), accepted), connect_mesh(client, dialled, expected, alpn))
}

/// Why a handshake that should have failed did.
pub fn reason<T>(result: Result<T, MeshError>) -> FailureReason {
    match result {
        Ok(_) => panic!("the handshake should have failed"),
        Err(e) => e.reason(),
    }
}
