//! Opening a connection to an endpoint: plain TCP, or mesh mTLS when the registry names the
//! endpoint's identity — HTTP/2 on `pilotfish.io/h2`, and HTTP/1.1 (only ever an upgrade,
//! which needs a connection of its own) as raw bytes on `pilotfish.io/tcp`.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::{EndpointConns, UpstreamError, Version};
use crate::tcp::header::{Carried, TransportHeader};
use crate::tls::MeshAlpn;
use crate::transport;
use crate::upstream::mesh::{self, MeshClient};

/// A connection to an endpoint, as hyper drives it.
pub(super) type Stream = Either<TcpStream, TlsStream<TcpStream>>;

impl EndpointConns {
    /// Connects for requests in `version`; `mesh` is this sidecar's side of a mesh connection
    /// (`None`: it cannot dial one).
    pub(super) async fn open_stream(
        &self,
        timeout: Duration,
        mesh: Option<&MeshClient>,
        version: Version,
    ) -> Result<Stream, UpstreamError> {
        let Some(expected) = &self.identity else {
            let stream = transport::connect(self.addr, timeout).await.map_err(UpstreamError::Connect)?;
            return Ok(Either::Left(stream));
        };
        let (alpn, header) = match version {
            Version::Http2 => (MeshAlpn::Http2, None),
            Version::Http1 => (MeshAlpn::Tcp, Some(TransportHeader { carried: Carried::Http1, port: 0 })),
        };
        let identity = mesh.and_then(|m| m.identity.as_ref());
        let stream = mesh::dial(identity, self.addr, expected, alpn, header, timeout).await;
        if let (Ok(_), Some(mesh)) = (&stream, mesh) {
            mesh.opened.inc();
        }
        stream.map(Either::Right).map_err(UpstreamError::Mesh)
    }

    /// How long the shared HTTP/2 connection serves new requests: a mesh connection's max age
    /// (so renewed certificates and bundles take effect), a plain one's for as long as it lives.
    pub(super) fn max_age(&self, mesh: Option<&MeshClient>) -> Option<Duration> {
        self.identity.as_ref().and(mesh).map(|m| m.max_age)
    }
}
