//! Mesh mTLS handshakes over a connection: dialling a sidecar whose identity the registry
//! knows, and terminating a sidecar's connection on the inbound port. Either way the result
//! names the peer's SPIFFE ID and the mesh protocol agreed on, or says why there is none in a
//! form fit for metrics ([`FailureReason`]).
//!
//! Neither sets a deadline: the caller bounds the handshake with its own connect or detect
//! timeout.

use std::io;

use bytes::Bytes;
use pilotfish_api::identity::SpiffeId;
use rustls::CommonState;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use super::alpn::MeshAlpn;
use super::config::{unused_server_name, MeshConfigs};
use super::peer::{spiffe_id, IdentityError};
use super::reason::FailureReason;
use crate::listener::detect::PrefixedIo;

/// Why a mesh connection was not established.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("mesh TLS handshake failed ({reason}): {source}")]
    Handshake { reason: FailureReason, source: io::Error },
    #[error("the peer is {found}, but the registry says this endpoint is {expected}")]
    IdentityMismatch { expected: Box<SpiffeId>, found: Box<SpiffeId> },
    #[error("the peer's certificate names no mesh identity: {0}")]
    NoIdentity(#[from] IdentityError),
    #[error("the peer did not agree on a mesh protocol (ALPN)")]
    NoMeshAlpn,
    #[error("the peer presented no certificate")]
    NoCertificate,
}

impl MeshError {
    /// The bounded reason, for metrics.
    pub fn reason(&self) -> FailureReason {
        match self {
            MeshError::Handshake { reason, .. } => *reason,
            MeshError::IdentityMismatch { .. } | MeshError::NoIdentity(_) => FailureReason::BadIdentity,
            MeshError::NoMeshAlpn => FailureReason::NonMeshTls,
            MeshError::NoCertificate => FailureReason::NoClientCert,
        }
    }

    fn handshake(source: io::Error) -> MeshError {
        MeshError::Handshake { reason: FailureReason::of_io(&source), source }
    }
}

/// An authenticated mesh connection.
#[derive(Debug)]
pub struct Established<S> {
    pub stream: S,
    /// The peer's verified SPIFFE ID.
    pub peer: SpiffeId,
    pub alpn: MeshAlpn,
}

/// Dials mesh mTLS over `io` (a connected socket) offering `alpn`, and checks that the server
/// is `expected`, not merely someone the bundle trusts.
///
/// In TLS 1.3 the client finishes before the server has judged the client's certificate, so a
/// refusal of ours shows on the first read (as an alert), not here.
pub async fn connect_mesh<IO>(
    configs: &MeshConfigs,
    io: IO,
    expected: &SpiffeId,
    alpn: MeshAlpn,
) -> Result<Established<client::TlsStream<IO>>, MeshError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let connector = TlsConnector::from(configs.client(alpn).clone());
    let stream = connector.connect(unused_server_name(), io).await.map_err(MeshError::handshake)?;
    // rustls refuses a server that picks a protocol we did not offer, so the one agreed on,
    // if any, is `alpn`.
    let (peer, alpn) = authenticated(stream.get_ref().1)?;
    if peer != *expected {
        return Err(MeshError::IdentityMismatch {
            expected: Box::new(expected.clone()),
            found: Box::new(peer),
        });
    }
    Ok(Established { stream, peer, alpn })
}

/// Terminates mesh mTLS on an accepted connection; `prefix` holds the bytes protocol detection
/// already read from `io` (the ClientHello, at least in part) and is replayed first.
pub async fn accept_mesh<IO>(
    configs: &MeshConfigs,
    prefix: Bytes,
    io: IO,
) -> Result<Established<server::TlsStream<PrefixedIo<IO>>>, MeshError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = TlsAcceptor::from(configs.server().clone());
    let stream = acceptor.accept(PrefixedIo::new(prefix, io)).await.map_err(MeshError::handshake)?;
    let (peer, alpn) = authenticated(stream.get_ref().1)?;
    Ok(Established { stream, peer, alpn })
}

/// The peer's identity and the mesh protocol of a completed handshake.
fn authenticated(state: &CommonState) -> Result<(SpiffeId, MeshAlpn), MeshError> {
    let leaf = state.peer_certificates().and_then(|chain| chain.first()).ok_or(MeshError::NoCertificate)?;
    let peer = spiffe_id(leaf)?;
    let alpn = state.alpn_protocol().and_then(MeshAlpn::from_bytes).ok_or(MeshError::NoMeshAlpn)?;
    Ok((peer, alpn))
}
