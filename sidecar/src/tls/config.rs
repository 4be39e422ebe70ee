//! rustls configurations built from an identity and a trust bundle: one server config for the
//! inbound port and one client config per mesh ALPN. They are rebuilt whenever the certificate
//! or the bundle changes and published as a whole, so a connection sees one consistent set.
//!
//! Every builder gets the crypto provider explicitly (never the process default: a library
//! test, or a dependency that brings another provider, must not change what the mesh uses).
//! TLS 1.3 only. Session resumption is off on both sides: a resumed session would skip
//! re-verifying the peer against a bundle that has since retired a root, and pooled HTTP/2
//! connections already amortise handshakes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::time_provider::{DefaultTimeProvider, TimeProvider};
use rustls::{ClientConfig, ServerConfig};

use super::alpn::MeshAlpn;
use super::credentials::{Credentials, TrustBundle};
use super::verify::MeshServerVerifier;

/// Why configurations could not be built from an identity and a bundle.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the client certificate verifier cannot be built from the trust bundle: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the identity's certificate chain or key is unusable: {0}")]
    Identity(#[from] rustls::Error),
}

/// The server config for the inbound port and a client config per mesh ALPN.
#[derive(Debug, Clone)]
pub struct MeshConfigs {
    server: Arc<ServerConfig>,
    http2: Arc<ClientConfig>,
    tcp: Arc<ClientConfig>,
    /// The certificate and key as a client presents them (to an https control plane).
    certified: Arc<CertifiedKey>,
}

impl MeshConfigs {
    /// Configurations that read the system clock.
    pub fn new(
        credentials: &Credentials,
        bundle: &TrustBundle,
        provider: &Arc<CryptoProvider>,
    ) -> Result<MeshConfigs, ConfigError> {
        MeshConfigs::with_clock(credentials, bundle, provider, Arc::new(DefaultTimeProvider))
    }

    /// Configurations that validate certificates against `clock` (tests skew it).
    pub fn with_clock(
        credentials: &Credentials,
        bundle: &TrustBundle,
        provider: &Arc<CryptoProvider>,
        clock: Arc<dyn TimeProvider>,
    ) -> Result<MeshConfigs, ConfigError> {
        let client = |alpn| client_config(credentials, bundle, provider, clock.clone(), alpn);
        Ok(MeshConfigs {
            server: Arc::new(server_config(credentials, bundle, provider, clock.clone())?),
            http2: Arc::new(client(MeshAlpn::Http2)?),
            tcp: Arc::new(client(MeshAlpn::Tcp)?),
            certified: Arc::new(CertifiedKey::from_der(
                credentials.chain.clone(),
                credentials.key.clone_key(),
                provider,
            )?),
        })
    }

    /// The certificate chain and key, for clients that present them (the control plane's).
    pub fn certified(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// Terminates mesh mTLS: client certificates are required and verified against the bundle.
    pub fn server(&self) -> &Arc<ServerConfig> {
        &self.server
    }

    /// Dials a sidecar offering exactly `alpn`.
    pub fn client(&self, alpn: MeshAlpn) -> &Arc<ClientConfig> {
        match alpn {
            MeshAlpn::Http2 => &self.http2,
            MeshAlpn::Tcp => &self.tcp,
        }
    }
}

/// The name handed to rustls when dialling. SNI is off and resumption too, so it is never sent
/// nor used as a cache key; the peer is judged by its SPIFFE ID instead.
pub(crate) fn unused_server_name() -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into())
}

fn server_config(
    credentials: &Credentials,
    bundle: &TrustBundle,
    provider: &Arc<CryptoProvider>,
    clock: Arc<dyn TimeProvider>,
) -> Result<ServerConfig, ConfigError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(bundle.roots().clone(), provider.clone()).build()?;
    let mut config = ServerConfig::builder_with_details(provider.clone(), clock)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(credentials.chain.clone(), credentials.key.clone_key())?;
    config.alpn_protocols = MeshAlpn::ALL.iter().map(|alpn| alpn.as_bytes().to_vec()).collect();
    config.send_tls13_tickets = 0;
    Ok(config)
}

fn client_config(
    credentials: &Credentials,
    bundle: &TrustBundle,
    provider: &Arc<CryptoProvider>,
    clock: Arc<dyn TimeProvider>,
    alpn: MeshAlpn,
) -> Result<ClientConfig, ConfigError> {
    let verifier =
        MeshServerVerifier::new(bundle.roots().clone(), provider.signature_verification_algorithms);
    let mut config = ClientConfig::builder_with_details(provider.clone(), clock)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(credentials.chain.clone(), credentials.key.clone_key())?;
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    Ok(config)
}
