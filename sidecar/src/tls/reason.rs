//! Why a connection was refused mesh mTLS, as a small closed set fit for a metric label
//! (`pilotfish_inbound_tls_refused_total{reason}`): rustls' errors are many and carry data, a
//! label must not.

use std::io;

use rustls::{AlertDescription, CertificateError, Error};

/// A bounded reason for a refused or failed mesh handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The connection did not start with TLS.
    Plaintext,
    /// The client presented no certificate.
    NoClientCert,
    /// The peer's chain does not lead to a root of the bundle (another CA, or a bad signature).
    UnknownCa,
    /// The peer's certificate is past its NotAfter.
    Expired,
    /// The peer's certificate is before its NotBefore (usually clock skew beyond the backdate).
    NotYetValid,
    /// The chain is trusted but names the wrong identity, or none.
    BadIdentity,
    /// TLS, but not the mesh's: no mesh ALPN, or a TLS version or feature the mesh does not speak.
    NonMeshTls,
    /// This sidecar has no identity yet, so a strict port cannot terminate mesh mTLS.
    NoLocalIdentity,
    /// Anything else: the peer reset or closed mid-handshake, a malformed message.
    Other,
}

impl FailureReason {
    /// Every reason, in the order of their labels' handles.
    pub const ALL: [FailureReason; 9] = [
        FailureReason::Plaintext,
        FailureReason::NoClientCert,
        FailureReason::UnknownCa,
        FailureReason::Expired,
        FailureReason::NotYetValid,
        FailureReason::BadIdentity,
        FailureReason::NonMeshTls,
        FailureReason::NoLocalIdentity,
        FailureReason::Other,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Plaintext => "plaintext",
            FailureReason::NoClientCert => "no_client_cert",
            FailureReason::UnknownCa => "unknown_ca",
            FailureReason::Expired => "expired",
            FailureReason::NotYetValid => "not_yet_valid",
            FailureReason::BadIdentity => "bad_identity",
            FailureReason::NonMeshTls => "non_mesh_tls",
            FailureReason::NoLocalIdentity => "no_local_identity",
            FailureReason::Other => "other",
        }
    }

    /// The reason for a handshake that failed with this I/O error (tokio-rustls wraps rustls'
    /// error in it).
    pub fn of_io(err: &io::Error) -> FailureReason {
        match err.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
            Some(tls) => FailureReason::of_tls(tls),
            None => FailureReason::Other,
        }
    }

    /// The reason for a rustls error: a local verdict on the peer's certificate, or the alert
    /// the peer sent about ours.
    pub fn of_tls(err: &Error) -> FailureReason {
        match err {
            Error::NoCertificatesPresented => FailureReason::NoClientCert,
            Error::InvalidCertificate(cert) => of_certificate(cert),
            Error::NoApplicationProtocol | Error::PeerIncompatible(_) => FailureReason::NonMeshTls,
            Error::AlertReceived(alert) => of_alert(*alert),
            _ => FailureReason::Other,
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn of_certificate(err: &CertificateError) -> FailureReason {
    match err {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => FailureReason::UnknownCa,
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => FailureReason::Expired,
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            FailureReason::NotYetValid
        }
        CertificateError::NotValidForName
        | CertificateError::NotValidForNameContext { .. }
        | CertificateError::InvalidPurpose
        | CertificateError::InvalidPurposeContext { .. } => FailureReason::BadIdentity,
        _ => FailureReason::Other,
    }
}

/// rustls sends `unknown_ca` for an untrusted chain, `certificate_expired` for a certificate
/// outside its validity (either end) and `certificate_required` when none came.
fn of_alert(alert: AlertDescription) -> FailureReason {
    match alert {
        AlertDescription::UnknownCA => FailureReason::UnknownCa,
        AlertDescription::CertificateExpired => FailureReason::Expired,
        AlertDescription::CertificateRequired => FailureReason::NoClientCert,
        AlertDescription::NoApplicationProtocol | AlertDescription::ProtocolVersion => {
            FailureReason::NonMeshTls
        }
        _ => FailureReason::Other,
    }
}
