//! The outbound side's check of a server certificate: the chain must lead to a root of the
//! trust bundle, and nothing else inside the handshake.
//!
//! rustls' `WebPkiServerVerifier` also insists that the certificate names the host dialled
//! (a DNS or IP SAN); mesh leaves carry only a SPIFFE URI SAN, so that step is left out here, as
//! linkerd's `AnySanVerifier` and ztunnel's `IdentityVerifier` do. The identity is compared
//! with the one the registry holds right after the handshake ([`super::handshake`]).
//!
//! The same verifier, with no chain to check, serves the local app's HTTPS probes
//! ([`crate::upstream::app_probe`]): the kubelet does not verify the app's certificate either.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// Chain verification against the bundle, with the provider's signature algorithms.
#[derive(Debug)]
pub struct MeshServerVerifier {
    chain: Chain,
    algorithms: WebPkiSupportedAlgorithms,
}

/// What the certificate chain must lead to.
#[derive(Debug)]
enum Chain {
    /// A root of the trust bundle: the server is another sidecar.
    Bundle(Arc<RootCertStore>),
    /// Nothing: the server is the local app, answering its own probe.
    Unchecked,
}

impl MeshServerVerifier {
    pub fn new(roots: Arc<RootCertStore>, algorithms: WebPkiSupportedAlgorithms) -> Self {
        MeshServerVerifier { chain: Chain::Bundle(roots), algorithms }
    }

    /// Any certificate, the handshake's signatures still checked: for the app's own HTTPS
    /// probes only.
    pub fn any_certificate(algorithms: WebPkiSupportedAlgorithms) -> Self {
        MeshServerVerifier { chain: Chain::Unchecked, algorithms }
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Chain::Bundle(roots) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algorithms.all)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
