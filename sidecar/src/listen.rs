//! Accept loops: one per listener, bounded by a connection limit (a semaphore permit per
//! connection; at the limit, new connections wait in the kernel's backlog), with accept errors
//! backed off, and every connection task tracked so drain can wait for it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Direction;
use crate::state::Shared;

pub async fn accept_loop<F, Fut>(
    shared: Arc<Shared>,
    listener: TcpListener,
    direction: Direction,
    stop: CancellationToken,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = shared.snapshot.load().sidecar.limits.max_connections;
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
        let open = OpenConnection::new(gauge.clone());
        let conn = handle(stream, peer);
        shared.tracker.spawn(async move {
            conn.await;
            drop(open);
            drop(permit);
        });
    }
}

/// Counts a connection in `pilotfish_open_connections` for as long as it lives.
struct OpenConnection(IntGauge);

impl OpenConnection {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
