//! Pooled connections to one endpoint: idle HTTP/1.1 connections kept for reuse, and one shared,
//! multiplexed HTTP/2 connection.
//!
//! Why not hyper-util's legacy `Client`: its pool is keyed by the request URI's authority and it
//! sends that authority on the wire, but a mesh must keep the caller's `Host`/`:authority` while
//! choosing the endpoint itself. Built on hyper's connection API instead, the pool is keyed by
//! endpoint and the request keeps its authority.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::body::RequestBody;
use crate::resilience::limit::{Claim, OwnedClaim};
use crate::transport;

/// Idle HTTP/1.1 connections older than this are closed rather than reused: servers commonly drop
/// idle keep-alive connections after a minute or two, and a request sent on one would be lost.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_IDLE_PER_ENDPOINT: usize = 128;
/// How long a released connection may take to become ready for its next request (hyper finishes
/// the previous exchange on the connection's own task) before it is closed instead of pooled.
const READY_WAIT: Duration = Duration::from_secs(5);

/// The HTTP version spoken to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// How to open a connection: its timeout, and the service limits a new connection counts against.
pub struct Connect<'a> {
    pub timeout: Duration,
    /// Connections the service has open, bounded by `maxConnections`.
    pub open: &'a Arc<AtomicUsize>,
    pub max_open: usize,
    /// Requests waiting for a new connection, bounded by `maxPendingRequests`.
    pub pending: &'a AtomicUsize,
    pub max_pending: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A service limit refused a new connection (the limit's name).
    #[error("the service is at its {0} limit")]
    Overflow(&'static str),
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake { addr: SocketAddr, source: hyper::Error },
    #[error("request to {addr} failed: {source}")]
    Request { addr: SocketAddr, source: hyper::Error },
}

/// Connections to one endpoint. Shared by every snapshot that lists the endpoint, so a config
/// reload keeps warm connections.
pub struct EndpointConns {
    addr: SocketAddr,
    idle: Mutex<Vec<(http1::SendRequest<RequestBody>, Instant)>>,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    h2_connecting: tokio::sync::Mutex<()>,
}

/// A checked-out HTTP/1.1 connection; give it back with [`Reusable::release`] once the response
/// body has been read to the end.
pub struct Reusable {
    conns: Arc<EndpointConns>,
    sender: http1::SendRequest<RequestBody>,
}

impl Reusable {
    /// Returns the connection to the pool once hyper has finished the previous exchange on it.
    pub fn release(self) {
        let Self { conns, mut sender } = self;
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            conns.push_idle(sender);
            return;
        }
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                conns.push_idle(sender);
            }
        });
    }
}

impl EndpointConns {
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `req` and returns the response; for HTTP/1.1, also the connection to release once
    /// the response body is done (`None` for HTTP/2, and for upgraded or closing connections).
    pub async fn send(
        self: &Arc<Self>,
        version: Version,
        req: Request<RequestBody>,
        connect: &Connect<'_>,
    ) -> Result<(Response<Incoming>, Option<Reusable>), UpstreamError> {
        match version {
            Version::Http1 => self.send_h1(req, connect).await,
            Version::Http2 => Ok((self.send_h2(req, connect).await?, None)),
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        connect: &Connect<'_>,
    ) -> Result<(Response<Incoming>, Option<Reusable>), UpstreamError> {
        // A pooled connection may have been closed by the server just now; a request that was
        // never written comes back and goes out on the next connection.
        while let Some(mut sender) = self.checkout_idle() {
            match sender.try_send_request(req).await {
                Ok(res) => return Ok((res, Some(Reusable { conns: self.clone(), sender }))),
                Err(e) => req = self.unsent(e)?,
            }
        }
        let mut sender = self.connect_h1(connect).await?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|source| UpstreamError::Request { addr: self.addr, source })?;
        Ok((res, Some(Reusable { conns: self.clone(), sender })))
    }

    /// The most recently used idle connection (LIFO keeps the set of warm connections small).
    /// The request back from a connection that could not take it (it never went out), or the
    /// error if it did go out.
    fn unsent(
        &self,
        mut e: TrySendError<Request<RequestBody>>,
    ) -> Result<Request<RequestBody>, UpstreamError> {
        e.take_message().ok_or_else(|| UpstreamError::Request { addr: self.addr, source: e.into_error() })
    }

    fn checkout_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().expect("pool lock poisoned");
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn push_idle(&self, sender: http1::SendRequest<RequestBody>) {
        let mut idle = self.idle.lock().expect("pool lock poisoned");
        // The oldest entries sit at the bottom of the stack: reap the expired ones.
        let expired = idle.iter().take_while(|(_, since)| since.elapsed() >= IDLE_TIMEOUT).count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push((sender, Instant::now()));
        }
    }

    async fn connect_h1(
        &self,
        connect: &Connect<'_>,
    ) -> Result<http1::SendRequest<RequestBody>, UpstreamError> {
        let _pending = Claim::take(connect.pending, connect.max_pending)
            .ok_or(UpstreamError::Overflow("maxPendingRequests"))?;
        let open = OwnedClaim::take(connect.open, connect.max_open)
            .ok_or(UpstreamError::Overflow("maxConnections"))?;
        let stream = transport::connect(self.addr, connect.timeout).await.map_err(UpstreamError::Connect)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr: self.addr, source })?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "HTTP/1.1 connection to endpoint ended");
            }
            drop(open);
        });
        Ok(sender)
    }

    async fn send_h2(
        &self,
        mut req: Request<RequestBody>,
        connect: &Connect<'_>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        if let Some(mut sender) = self.shared_h2() {
            match sender.try_send_request(req).await {
                Ok(res) => return Ok(res),
                Err(e) => req = self.unsent(e)?,
            }
        }
        let mut sender = self.connect_h2(connect).await?;
        sender.send_request(req).await.map_err(|source| UpstreamError::Request { addr: self.addr, source })
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let h2 = self.h2.lock().expect("pool lock poisoned");
        h2.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_h2(
        &self,
        connect: &Connect<'_>,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        // Waiting for the connection counts as pending, so the queue behind it is bounded too.
        let _pending = Claim::take(connect.pending, connect.max_pending)
            .ok_or(UpstreamError::Overflow("maxPendingRequests"))?;
        // One connection attempt at a time: concurrent requests wait for it and share it.
        let _connecting = self.h2_connecting.lock().await;
        if let Some(sender) = self.shared_h2() {
            return Ok(sender);
        }
        let open = OwnedClaim::take(connect.open, connect.max_open)
            .ok_or(UpstreamError::Overflow("maxConnections"))?;
        let stream = transport::connect(self.addr, connect.timeout).await.map_err(UpstreamError::Connect)?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr: self.addr, source })?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "HTTP/2 connection to endpoint ended");
            }
            drop(open);
        });
        *self.h2.lock().expect("pool lock poisoned") = Some(sender.clone());
        Ok(sender)
    }
}
