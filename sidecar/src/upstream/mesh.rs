//! Dialling a meshed endpoint (one whose registry entry names its identity): TCP, then mesh
//! mTLS in which the server must prove exactly that identity, then (on `pilotfish.io/tcp`) the
//! transport header. Shared by the HTTP pools and the opaque TCP path.
//!
//! A sidecar without an identity of its own fails such a dial with a local error rather than
//! fall back to plaintext: the registry says the endpoint speaks mTLS, and a silent downgrade
//! is what an attacker on the path would want.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pilotfish_api::SpiffeId;
use prometheus::IntCounter;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::identity::Identity;
use crate::tcp::header::TransportHeader;
use crate::tls::{connect_mesh, MeshAlpn, MeshError};
use crate::transport;

/// This sidecar's side of the mesh connections it dials: its identity now (none yet: meshed
/// endpoints cannot be reached) and how long a connection may be used for new requests.
#[derive(Clone)]
pub struct MeshClient {
    pub identity: Option<Arc<Identity>>,
    pub max_age: Duration,
    /// `pilotfish_mesh_connections_opened_total{direction="outbound"}`.
    pub opened: IntCounter,
}

/// Why a meshed endpoint could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("this sidecar has no mesh identity yet, and {addr} is a meshed endpoint ({expected}) that is only reached over mTLS")]
    NoLocalIdentity { addr: SocketAddr, expected: Arc<SpiffeId> },
    #[error("{0}")]
    Connect(io::Error),
    #[error("mesh mTLS with {addr}: {source}")]
    Tls { addr: SocketAddr, source: MeshError },
    #[error("mesh mTLS with {addr} timed out after {timeout:?}")]
    TlsTimeout { addr: SocketAddr, timeout: Duration },
    #[error("sending the transport header to {addr}: {source}")]
    Header { addr: SocketAddr, source: io::Error },
}

impl DialError {
    /// The server proved an identity other than the one the registry holds for it.
    pub fn is_identity_mismatch(&self) -> bool {
        matches!(self, DialError::Tls { source: MeshError::IdentityMismatch { .. }, .. })
    }

    /// Whether the endpoint is to blame (not this sidecar's missing identity).
    pub fn blames_endpoint(&self) -> bool {
        !matches!(self, DialError::NoLocalIdentity { .. })
    }
}

/// Connects to `addr`, which must prove `expected`, speaking `alpn`, as `identity` (this
/// sidecar's; `None`: it has none yet); on `pilotfish.io/tcp` `header` goes first. `timeout` bounds the TCP connect and the handshake together.
pub async fn dial(
    identity: Option<&Arc<Identity>>,
    addr: SocketAddr,
    expected: &Arc<SpiffeId>,
    alpn: MeshAlpn,
    header: Option<TransportHeader>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, DialError> {
    let Some(identity) = identity else {
        return Err(DialError::NoLocalIdentity { addr, expected: expected.clone() });
    };
    let started = tokio::time::Instant::now();
    let tcp = transport::connect(addr, timeout).await.map_err(DialError::Connect)?;
    let handshake = connect_mesh(&identity.configs, tcp, expected, alpn);
    let mut established = match tokio::time::timeout_at(started + timeout, handshake).await {
        Ok(Ok(established)) => established,
        Ok(Err(source)) => return Err(DialError::Tls { addr, source }),
        Err(_) => return Err(DialError::TlsTimeout { addr, timeout }),
    };
    if let Some(header) = header {
        let bytes = header.encode();
        established.stream.write_all(&bytes).await.map_err(|source| DialError::Header { addr, source })?;
    }
    Ok(established.stream)
}
