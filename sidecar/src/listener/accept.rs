//! Accept loops: one per listener, bounded by a connection limit (a semaphore permit per
//! connection; at the limit, new connections wait in the kernel's backlog), with accept errors
//! backed off, and every connection task tracked so drain can wait for it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::state::Shared;
use crate::telemetry::metrics::Direction;

pub async fn accept_loop<F, Fut>(
    shared: Arc<Shared>,
    listener: TcpListener,
    direction: Direction,
    stop: CancellationToken,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Arc<ConnSlot>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Validation bounds the limit far below tokio's maximum, over which `Semaphore::new` panics.
    let limit = shared.snapshot.load().sidecar.limits.max_connections.min(Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(limit));
    let gauge = shared.metrics.open_connections(direction);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let slot = Arc::new(ConnSlot::new(permit, gauge.clone()));
        shared.tracker.spawn(handle(stream, peer, slot));
    }
}

/// A connection's claim on its listener: a connection-limit permit and its place in
/// `pilotfish_open_connections`. Held for as long as anything serves the connection, including
/// an upgraded (WebSocket) tunnel that outlives the HTTP exchange.
pub struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    _open: OpenConnection,
}

/// Counts a connection in `pilotfish_open_connections` for as long as it lives.
struct OpenConnection(IntGauge);

impl OpenConnection {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl ConnSlot {
    pub fn new(permit: OwnedSemaphorePermit, open_connections: IntGauge) -> Self {
        Self { _permit: permit, _open: OpenConnection::new(open_connections) }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
