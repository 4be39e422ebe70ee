//! Pooled connections to one endpoint: idle HTTP/1.1 connections kept for reuse, and one shared,
//! multiplexed HTTP/2 connection.
//!
//! A burst must not become a connection storm. A request that finds no idle HTTP/1.1 connection
//! waits — counted against `maxPendingRequests` — for whichever comes first: a connection another
//! request releases, or one of the connection attempts the pool makes for the queue (Envoy's
//! pending queue). New connections ramp up like TCP slow start: connections that have not yet
//! answered a request (attempts in flight included) are at most [`INITIAL_WINDOW`], or as many as
//! the endpoint's connections that have answered. A connection the kernel completed but the app
//! has not accepted yet is unanswered, so the initial window stays under a listen backlog of 5
//! and a burst does not overflow it (a dropped SYN costs a one-second retransmit); an endpoint
//! that answers gets connections as fast as it proves it can take them. When an attempt fails and
//! the endpoint has no open connection, the requests its other attempts do not cover fail with it
//! (to be retried elsewhere) instead of each waiting out an attempt of its own.
//! A request that never went out (no connection, or one that closed before taking it) is handed
//! back to the caller, so that it can be retried elsewhere whatever its method or body.
//!
//! Why not hyper-util's legacy `Client`: its pool is keyed by the request URI's authority and it
//! sends that authority on the wire, but a mesh must keep the caller's `Host`/`:authority` while
//! choosing the endpoint itself. Built on hyper's connection API instead, the pool is keyed by
//! endpoint and the request keeps its authority.

mod dial;
mod error;
mod h2;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pilotfish_api::SpiffeId;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::either::Either;

pub use self::error::{SendError, UpstreamError};
use super::request_body::RequestBody;
use crate::resilience::limit::{Claim, Limit, OwnedClaim};
use crate::upstream::mesh::MeshClient;

/// Idle HTTP/1.1 connections older than this are closed rather than reused: servers commonly drop
/// idle keep-alive connections after a minute or two, and a request sent on one would be lost.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_IDLE_PER_ENDPOINT: usize = 128;
/// How long a released connection may take to become ready for its next request (hyper finishes
/// the previous exchange on the connection's own task) before it is closed instead of pooled.
const READY_WAIT: Duration = Duration::from_secs(5);
/// New connections to one endpoint that may await their first answer at once, before any has
/// answered: below the smallest listen backlogs in common use (Python's `http.server` has 5).
pub const INITIAL_WINDOW: usize = 4;

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
    /// Requests waiting for a connection, bounded by `maxPendingRequests`.
    pub pending: &'a AtomicUsize,
    pub max_pending: usize,
    /// This sidecar's identity and mesh settings, for an endpoint reached over mesh mTLS.
    pub mesh: Option<&'a MeshClient>,
}

/// Connections to one endpoint. Shared by every snapshot that lists the endpoint, so a config
/// reload keeps warm connections.
pub struct EndpointConns {
    addr: SocketAddr,
    /// The identity the registry holds for the endpoint: it is reached over mesh mTLS (HTTP/2
    /// on `pilotfish.io/h2`; HTTP/1.1 only for upgrades, on `pilotfish.io/tcp`).
    identity: Option<Arc<SpiffeId>>,
    h1: Mutex<Http1Pool>,
    /// The shared HTTP/2 connection, with when it was opened (a mesh connection has a max age).
    h2: Mutex<Option<(http2::SendRequest<RequestBody>, Instant)>>,
    h2_connecting: tokio::sync::Mutex<()>,
    /// HTTP/2 connection attempts made, and the number of the last one that failed: requests
    /// that queued behind a failed attempt fail with it instead of each trying in turn.
    h2_attempts: AtomicU64,
    h2_failed: Mutex<Option<(u64, H2Failure)>>,
}

/// Why the last HTTP/2 connection attempt failed, for the requests that queued behind it.
#[derive(Clone)]
enum H2Failure {
    Overflow(Limit),
    Connect(String),
}

/// Idle HTTP/1.1 connections, the requests waiting for one, and the slow-start window.
#[derive(Default)]
struct Http1Pool {
    idle: Vec<(Conn, Instant)>,
    waiters: VecDeque<(u64, oneshot::Sender<Delivery>)>,
    next_waiter: u64,
    /// Connection attempts in flight.
    connecting: usize,
    /// Attempts in flight plus open connections that have not answered yet.
    unanswered: usize,
    /// Open connections that have answered at least once.
    answered: usize,
}

impl Http1Pool {
    /// Whether the queue needs another connection attempt and the window has room for it.
    fn wants_attempt(&self) -> bool {
        self.connecting < self.waiters.len() && self.unanswered < INITIAL_WINDOW.max(self.answered)
    }

    /// Connections open to the endpoint (attempts in flight not included).
    fn open(&self) -> usize {
        self.answered + self.unanswered - self.connecting
    }
}

/// Where one connection stands in the slow-start window, shared by the connection's task and
/// whoever holds the connection; it changes only under the pool's lock.
struct ConnState(AtomicU8);

impl ConnState {
    fn is_unanswered(&self) -> bool {
        self.0.load(Ordering::Acquire) == UNANSWERED
    }
}

/// An HTTP/1.1 connection as the pool hands it out.
type Conn = (http1::SendRequest<RequestBody>, Arc<ConnState>);

const UNANSWERED: u8 = 0;
const ANSWERED: u8 = 1;
const CLOSED: u8 = 2;

/// A checked-out HTTP/1.1 connection; give it back with [`Reusable::release`] once the response
/// body has been read to the end.
pub struct Reusable {
    conns: Arc<EndpointConns>,
    sender: http1::SendRequest<RequestBody>,
    state: Arc<ConnState>,
}

impl Reusable {
    /// Returns the connection to the pool — to the first waiting request, or idle — once hyper
    /// has finished the previous exchange on it.
    pub fn release(self) {
        let Self { conns, mut sender, state } = self;
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            conns.deliver(Ok((sender, state)));
            return;
        }
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                conns.deliver(Ok((sender, state)));
            }
        });
    }
}

/// What a request waiting for an HTTP/1.1 connection gets: a connection, or the failure of a
/// connection attempt.
type Delivery = Result<Conn, UpstreamError>;

/// A request's place in the queue for an HTTP/1.1 connection; leaving it (with or without a
/// connection) passes on a connection handed over in the meantime.
struct Waiter<'a> {
    conns: &'a EndpointConns,
    id: u64,
    rx: oneshot::Receiver<Delivery>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(Ok(connection)) = self.rx.try_recv() {
            self.conns.deliver(Ok(connection));
        }
        self.conns.lock_h1().waiters.retain(|(id, _)| *id != self.id);
    }
}

/// How to open new connections, owned by the attempts that outlive the request that started
/// them.
#[derive(Clone)]
struct Dial {
    timeout: Duration,
    open: Arc<AtomicUsize>,
    max_open: usize,
    mesh: Option<MeshClient>,
}

impl From<&Connect<'_>> for Dial {
    fn from(c: &Connect<'_>) -> Self {
        Self { timeout: c.timeout, open: c.open.clone(), max_open: c.max_open, mesh: c.mesh.cloned() }
    }
}

impl EndpointConns {
    /// A pool for the endpoint at `addr`; with `identity`, reached over mesh mTLS.
    pub fn new(addr: SocketAddr, identity: Option<Arc<SpiffeId>>) -> Arc<Self> {
        Arc::new(Self {
            addr,
            identity,
            h1: Mutex::default(),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            h2_attempts: AtomicU64::new(0),
            h2_failed: Mutex::new(None),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The identity the endpoint must prove, when it is meshed.
    pub fn identity(&self) -> Option<&Arc<SpiffeId>> {
        self.identity.as_ref()
    }

    /// Sends `req` and returns the response; for HTTP/1.1, also the connection to release once
    /// the response body is done (`None` for HTTP/2, and for upgraded or closing connections).
    ///
    /// Not an `async fn`, and the request boxed: this future sits inside every stage of the
    /// request path and is moved with each, so it holds neither the request's fields nor an
    /// extra layer around the version's own future.
    pub fn send<'a>(
        self: &'a Arc<Self>,
        version: Version,
        req: Box<Request<RequestBody>>,
        connect: &'a Connect<'_>,
    ) -> impl Future<Output = Result<(Response<Incoming>, Option<Reusable>), SendError>> + 'a {
        match version {
            Version::Http1 => Either::Left(self.send_h1(req, connect)),
            Version::Http2 => Either::Right(self.send_h2(req, connect)),
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Box<Request<RequestBody>>,
        connect: &Connect<'_>,
    ) -> Result<(Response<Incoming>, Option<Reusable>), SendError> {
        loop {
            let (mut sender, state) = match self.checkout_h1(connect).await {
                Ok(checked_out) => checked_out,
                Err(error) => return Err(SendError { error, unsent: Some(req) }),
            };
            let fresh = state.is_unanswered();
            match sender.try_send_request(*req).await {
                Ok(res) => {
                    if fresh {
                        self.first_answer(&state, &Dial::from(connect));
                    }
                    return Ok((res, Some(Reusable { conns: self.clone(), sender, state })));
                }
                // A pooled connection may have been closed by the server just now; a request
                // that was never written comes back and goes out on the next connection. A new
                // connection that cannot take it is the endpoint's failure.
                Err(e) => match self.unsent(e)? {
                    back if fresh => {
                        let error = UpstreamError::ClosedBeforeSend { addr: self.addr };
                        return Err(SendError::unsent(error, back));
                    }
                    back => req = Box::new(back),
                },
            }
        }
    }

    /// The request back from a connection that could not take it (it never went out), or the
    /// error if it did go out.
    fn unsent(&self, mut e: TrySendError<Request<RequestBody>>) -> Result<Request<RequestBody>, SendError> {
        e.take_message().ok_or_else(|| SendError {
            error: UpstreamError::Request { addr: self.addr, source: e.into_error() },
            unsent: None,
        })
    }

    /// An HTTP/1.1 connection for one request: an idle one, or whichever comes first while it
    /// waits — one another request releases, or one of the connection attempts in flight.
    async fn checkout_h1(self: &Arc<Self>, connect: &Connect<'_>) -> Result<Conn, UpstreamError> {
        if let Some(conn) = self.lock_h1().pop_idle() {
            return Ok(conn);
        }
        let _pending = Claim::take(connect.pending, connect.max_pending)
            .ok_or(UpstreamError::Overflow(Limit::MaxPendingRequests))?;
        let dial = Dial::from(connect);
        let mut waiter = {
            let mut pool = self.lock_h1();
            if let Some(conn) = pool.pop_idle() {
                return Ok(conn);
            }
            let (tx, rx) = oneshot::channel();
            let id = pool.next_waiter;
            pool.next_waiter += 1;
            pool.waiters.push_back((id, tx));
            let started = self.start_connecting(&mut pool, &dial);
            let waiter = Waiter { conns: self, id, rx };
            if let Err(e) = started {
                drop(pool);
                return Err(e);
            }
            waiter
        };
        match (&mut waiter.rx).await {
            Ok(delivery) => delivery,
            Err(_) => Err(UpstreamError::Connect(std::io::Error::other("the connection pool went away"))),
        }
    }

    /// Starts connection attempts while the queue needs them and the slow-start window has
    /// room; fails when `maxConnections` stops one that was needed.
    fn start_connecting(self: &Arc<Self>, pool: &mut Http1Pool, dial: &Dial) -> Result<(), UpstreamError> {
        while pool.wants_attempt() {
            let open = OwnedClaim::take(&dial.open, dial.max_open)
                .ok_or(UpstreamError::Overflow(Limit::MaxConnections))?;
            pool.connecting += 1;
            pool.unanswered += 1;
            tokio::spawn(self.clone().dial_h1(open, dial.clone()));
        }
        Ok(())
    }

    /// One connection attempt: its connection (or its failure) goes to the oldest waiting
    /// request, and the queue gets more attempts if it still needs them.
    async fn dial_h1(self: Arc<Self>, open: OwnedClaim, dial: Dial) {
        let connected = self.connect_h1(open, &dial).await;
        let mut pool = self.lock_h1();
        pool.connecting -= 1;
        match connected {
            Ok(conn) => pool.deliver(Ok(conn)),
            Err(error) => {
                pool.unanswered -= 1;
                let reason = error.to_string();
                pool.deliver(Err(error));
                // With no connection open, nothing will be released: the requests that the
                // attempts still in flight do not cover fail now, to be retried elsewhere.
                if pool.open() == 0 {
                    while pool.waiters.len() > pool.connecting {
                        let Some((_, waiter)) = pool.waiters.pop_back() else { break };
                        let queued = UpstreamError::QueuedBehind { addr: self.addr, reason: reason.clone() };
                        let _ = waiter.send(Err(queued));
                    }
                }
            }
        }
        self.keep_connecting(&mut pool, &dial);
    }

    /// A new connection answered its first request: it leaves the unanswered and widens the
    /// window by one.
    fn first_answer(self: &Arc<Self>, state: &ConnState, dial: &Dial) {
        let mut pool = self.lock_h1();
        if state.0.compare_exchange(UNANSWERED, ANSWERED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            pool.unanswered -= 1;
            pool.answered += 1;
            self.keep_connecting(&mut pool, dial);
        }
    }

    /// After an attempt ended or a connection answered or closed: requests still waiting get new
    /// attempts (if `maxConnections` stops them, they wait for a connection to be released or
    /// to close).
    fn keep_connecting(self: &Arc<Self>, pool: &mut Http1Pool, dial: &Dial) {
        if let Err(e) = self.start_connecting(pool, dial) {
            tracing::debug!(addr = %self.addr, error = %e, "queued requests wait for a connection");
        }
    }

    /// Gives a connection to the oldest waiting request, or keeps it idle.
    fn deliver(&self, delivery: Delivery) {
        self.lock_h1().deliver(delivery);
    }

    fn lock_h1(&self) -> std::sync::MutexGuard<'_, Http1Pool> {
        // Every step under this lock is await-free and leaves the pool consistent, so a panic
        // elsewhere while it was held leaves nothing half-done.
        self.h1.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn connect_h1(self: &Arc<Self>, open: OwnedClaim, dial: &Dial) -> Result<Conn, UpstreamError> {
        let stream = self.open_stream(dial.timeout, dial.mesh.as_ref(), Version::Http1).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr: self.addr, source })?;
        let state = Arc::new(ConnState(AtomicU8::new(UNANSWERED)));
        let (conns, dial, closing) = (self.clone(), dial.clone(), state.clone());
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(addr = %conns.addr, error = %e, "HTTP/1.1 connection to endpoint ended");
            }
            drop(open);
            let mut pool = conns.lock_h1();
            match closing.0.swap(CLOSED, Ordering::AcqRel) {
                UNANSWERED => pool.unanswered -= 1,
                ANSWERED => pool.answered -= 1,
                _ => {}
            }
            // Its places in the window and under maxConnections are free: a queue that waits
            // for them can make progress.
            conns.keep_connecting(&mut pool, &dial);
        });
        Ok((sender, state))
    }
}

impl Http1Pool {
    /// The most recently used idle connection (LIFO keeps the set of warm connections small).
    fn pop_idle(&mut self) -> Option<Conn> {
        while let Some((conn, since)) = self.idle.pop() {
            if !conn.0.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Gives a connection (or an attempt's failure) to the oldest waiting request; a connection
    /// nobody waits for is kept idle.
    fn deliver(&mut self, mut delivery: Delivery) {
        while let Some((_, waiter)) = self.waiters.pop_front() {
            match waiter.send(delivery) {
                Ok(()) => return,
                Err(back) => delivery = back,
            }
        }
        if let Ok(conn) = delivery {
            self.push_idle(conn);
        }
    }

    fn push_idle(&mut self, conn: Conn) {
        // The oldest entries sit at the bottom of the stack: reap the expired ones.
        let expired = self.idle.iter().take_while(|(_, since)| since.elapsed() >= IDLE_TIMEOUT).count();
        self.idle.drain(..expired);
        if self.idle.len() < MAX_IDLE_PER_ENDPOINT {
            self.idle.push((conn, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests;
