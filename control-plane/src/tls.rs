//! TLS on the API's listener: when it is on, the certificate it serves, and accepting TLS
//! connections.
//!
//! The rule: a control plane listening on loopback only (`pilotfish up`, tests) serves
//! plaintext; anywhere else it serves TLS 1.3 with a certificate from the mesh CA (ring
//! provider, passed explicitly), presenting `[leaf, issuer, root]` so a sidecar that pins the
//! root's fingerprint (its join token's third part) finds the root to verify against. Plaintext
//! on a non-loopback address takes `--insecure`; when the certificate cannot be made, the
//! control plane refuses to start and says both ways out. Client certificates are asked for but
//! optional (the CLI and dashboards use bearer tokens). One that is sent passes the handshake
//! whatever it is (its signature still proves the key) and reaches the handlers as [`TlsPeer`];
//! each request judges it against the mesh's roots in force at that moment (`ca::MeshCa`): a
//! sidecar whose join token expired goes on with its mesh identity, and an expired certificate,
//! or one under a retired root, proves nothing but locks nobody out of the handshake.
//!
//! Handshakes run in tasks of their own, bounded in time, so a client that stalls in one holds
//! up no other.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::ca::{Ca, CaError};

/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the API is served.
pub enum Transport {
    Plain,
    Tls(Arc<ServerConfig>),
}

/// Why TLS could not be set up where it is required.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "{listen} is not a loopback address, so the API is served over TLS, but its certificate cannot be made: \
         {reason}. Fix that (--tls-san NAME for the names clients use, a valid CA), or serve plaintext with \
         --insecure (anyone on the network can then read tokens and configuration)"
    )]
    Refused { listen: SocketAddr, reason: String },
}

/// How the API on `listen` is served: plaintext on loopback or with `insecure`, otherwise TLS
/// with a certificate from `ca` for `names` (empty: [`default_names`]).
pub fn transport(
    listen: SocketAddr,
    insecure: bool,
    names: &[String],
    ca: &Ca,
) -> Result<Transport, TlsError> {
    if listen.ip().to_canonical().is_loopback() {
        return Ok(Transport::Plain);
    }
    if insecure {
        tracing::warn!(%listen, "serving the API in plaintext on a non-loopback address (--insecure)");
        return Ok(Transport::Plain);
    }
    let names = if names.is_empty() { default_names(listen.ip(), hostname()) } else { names.to_vec() };
    let refused = |reason: String| TlsError::Refused { listen, reason };
    let config = server_config(ca, &names).map_err(|e| refused(e.to_string()))?;
    tracing::info!(names = ?names, root = %ca.fingerprint(), "serving the API over TLS");
    Ok(Transport::Tls(config))
}

/// The names the certificate carries when `--tls-san` gives none: the listen address (unless
/// it is the unspecified one), this host's name, `localhost` and 127.0.0.1.
pub fn default_names(listen: IpAddr, hostname: Option<String>) -> Vec<String> {
    let mut names = Vec::new();
    if !listen.is_unspecified() {
        names.push(listen.to_string());
    }
    names.extend(hostname);
    for name in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

/// Certificate and client-certificate verification can each fail in their own crate's way.
#[derive(Debug, thiserror::Error)]
enum ConfigError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("the mesh's root cannot check client signatures: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn server_config(ca: &Ca, names: &[String]) -> Result<Arc<ServerConfig>, ConfigError> {
    let serving = ca.serving(names)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = serving.chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivatePkcs8KeyDer::from(serving.key).into();
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(MeshClients::new(ca, provider.clone())?))
        .with_single_cert(chain, key)?;
    // HTTP/2 for clients that offer it: a sidecar's push stream and its ACKs then share one
    // connection, so 10,000 sidecars are 10,000 connections and an ACK costs no handshake.
    // Clients from before it offer only `http/1.1`, and get it.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No resumption: a resumed session would carry the client certificate of the handshake it
    // resumes — perhaps none, or one since renewed — and the caller is judged by it.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// Optional client certificates, taken at the handshake whatever they chain to: each request
/// judges the certificate against the roots in force then (see the module's documentation). The
/// handshake's signatures are still checked (by webpki's verifier, whose roots are otherwise
/// unused), so the client proves it holds the certificate's key.
#[derive(Debug)]
struct MeshClients {
    signatures: Arc<dyn ClientCertVerifier>,
}

impl MeshClients {
    fn new(ca: &Ca, provider: Arc<CryptoProvider>) -> Result<Self, ConfigError> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.root_der().to_vec()))?;
        let signatures = WebPkiClientVerifier::builder_with_provider(roots.into(), provider).build()?;
        Ok(Self { signatures })
    }
}

impl ClientCertVerifier for MeshClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would go stale with a rotation; clients send their one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// Who is at the other end of a TLS connection to the API: its address, and the certificate
/// chain it presented, if any (not yet judged: each request does, against the roots in force).
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub addr: SocketAddr,
    pub chain: Option<Arc<[CertificateDer<'static>]>>,
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        let chain = session.peer_certificates().filter(|chain| !chain.is_empty()).map(Arc::from);
        Self { addr: *stream.remote_addr(), chain }
    }
}

/// TCP connections from `inner`, each handed on once its TLS handshake completed.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new<L>(mut inner: L, config: Arc<ServerConfig>) -> io::Result<Self>
    where
        L: Listener<Io = TcpStream, Addr = SocketAddr>,
    {
        let local = inner.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, handshaken) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                // Accepting ends with the server (the receiver dropped), releasing the socket.
                let (tcp, peer) = tokio::select! {
                    accepted = inner.accept() => accepted,
                    () = tx.closed() => return,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { handshaken, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // The accepting task only stops once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plaintext_anything_else_tls_unless_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::open(&dir.path().join("ca")).unwrap();
        let plain = |listen: &str, insecure| {
            matches!(transport(listen.parse().unwrap(), insecure, &[], &ca).unwrap(), Transport::Plain)
        };
        assert!(plain("127.0.0.1:15100", false));
        assert!(plain("127.3.4.5:15100", false), "all of 127/8 is loopback");
        assert!(plain("[::1]:15100", false));
        assert!(plain("[::ffff:127.0.0.1]:15100", false));
        assert!(!plain("0.0.0.0:15100", false));
        assert!(!plain("[::]:15100", false));
        assert!(!plain("10.1.2.3:15100", false));
        assert!(plain("0.0.0.0:15100", true));
    }

    #[test]
    fn without_a_certificate_it_refuses_and_names_both_ways_out() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::open(&dir.path().join("ca")).unwrap();
        let bad = ["ünïcode.example".to_owned()];
        let Err(e) = transport("0.0.0.0:15100".parse().unwrap(), false, &bad, &ca) else {
            panic!("a certificate for a name it cannot carry");
        };
        let message = e.to_string();
        assert!(message.contains("--tls-san") && message.contains("--insecure"), "{message}");
    }

    #[test]
    fn default_names_are_the_address_the_host_and_localhost() {
        let names = default_names("10.1.2.3".parse().unwrap(), Some("cp-1".into()));
        assert_eq!(names, ["10.1.2.3", "cp-1", "localhost", "127.0.0.1"]);
        assert_eq!(default_names("0.0.0.0".parse().unwrap(), None), ["localhost", "127.0.0.1"]);
    }
}
