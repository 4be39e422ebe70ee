//! The client's connector: plain TCP for `http://` URLs, and TLS over it (tokio-rustls, with
//! the [`Trust`](super::Trust) the client was given) for `https://` ones. Written here rather
//! than taken from hyper-rustls, whose default features pull the aws-lc-rs provider in. Public
//! for the sidecar's other https client, its trace exporter.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::Scheme;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens connections for a pooled hyper-util client.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    /// `None`: the client was given nothing to trust, so `https://` URLs cannot be reached.
    tls: Option<TlsConnector>,
}

impl Connector {
    /// Connects with `http`, and over TLS with `tls` for `https://` URLs (`None`: those fail).
    pub fn new(mut http: HttpConnector, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        http.enforce_http(false);
        Self { http, tls: tls.map(TlsConnector::from) }
    }
}

/// An `https://` URL with nothing to verify its certificate against.
#[derive(Debug, thiserror::Error)]
#[error(
    "the control plane is https but nothing says which CA to trust: pass --ca-file FILE (env PILOTFISH_CA_FILE), \
     --ca-fingerprint SHA256, or a token that carries the fingerprint (pilotfish token create)"
)]
struct NoTrust;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (mut http, tls) = (self.http.clone(), self.tls.clone());
        Box::pin(async move {
            let https = uri.scheme() == Some(&Scheme::HTTPS);
            let tls = match (https, tls) {
                (false, _) => None,
                (true, None) => return Err(NoTrust.into()),
                (true, Some(tls)) => Some(tls),
            };
            let tcp = tower::Service::call(&mut http, uri.clone()).await?.into_inner();
            let Some(tls) = tls else {
                return Ok(TokioIo::new(Stream::Plain(tcp)));
            };
            // The name the certificate must carry: the URL's host (an IP address or DNS name).
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
        })
    }
}

/// A connection to the control plane (or a collector), plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(tcp) => tcp.connected(),
            Self::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                let connected = tcp.connected();
                // The server chose HTTP/2 (see `Trust::client_config`): every call to it then
                // shares this one connection, push stream and ACKs alike.
                match session.alpn_protocol() {
                    Some(b"h2") => connected.negotiated_h2(),
                    _ => connected,
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
