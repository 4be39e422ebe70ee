//! Serving the API: [`serve`] (plaintext) or [`serve_tls`] is the one way a control plane runs
//! (`pilotfish control-plane` and `pilotfish up` both use it). Every accepted connection gets TCP
//! keepalive and a TCP user timeout, so a peer that vanishes without a reset (host powered off,
//! network partitioned) is noticed in bounded time. Without them the push stream's keepalive
//! lines would sit in the send buffer while the kernel retransmits for about 15 minutes, and the
//! sidecar would stay "connected".

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::{Listener, ListenerExt};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::core::{background, ControlPlane};
use crate::http;
use crate::tls::{TlsListener, TlsPeer};

/// Idle time before the first keepalive probe, and between probes.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Data (a keepalive line or probe) unacknowledged for this long ends the connection.
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the API on `listener`, with the control plane's background work (following the log,
/// expiring leases) beside it, until `shutdown` is cancelled. Then the push streams end first —
/// a graceful shutdown would otherwise wait on them for ever — and requests in flight finish.
pub async fn serve(
    cp: Arc<ControlPlane>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_on(cp, with_keepalive(listener), shutdown).await
}

/// [`serve`] over TLS with `config` ([`crate::tls::transport`] says when).
pub async fn serve_tls(
    cp: Arc<ControlPlane>,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TlsListener::new(with_keepalive(listener), config)?;
    let router = http::router(&cp).into_make_service_with_connect_info::<TlsPeer>();
    axum::serve(listener, router).with_graceful_shutdown(running(cp, shutdown)).await
}

async fn serve_on<L>(cp: Arc<ControlPlane>, listener: L, shutdown: CancellationToken) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let router = http::router(&cp);
    axum::serve(listener, router).with_graceful_shutdown(running(cp, shutdown)).await
}

/// Starts the control plane's background work, until `shutdown`; answers what a graceful
/// shutdown of the server waits for: `shutdown`, after which the push streams end.
fn running(cp: Arc<ControlPlane>, shutdown: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
    tokio::spawn(background::run(cp.clone(), shutdown.clone()));
    tokio::spawn(crate::rollout::driver::run(cp.clone(), shutdown.clone()));
    async move {
        shutdown.cancelled().await;
        cp.stop();
    }
}

/// `listener`, with keepalive and the user timeout set on each connection it accepts.
pub fn with_keepalive(listener: TcpListener) -> impl Listener<Io = TcpStream, Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        let socket = SockRef::from(&*tcp);
        let keepalive = TcpKeepalive::new().with_time(KEEPALIVE).with_interval(KEEPALIVE);
        let set = socket
            .set_tcp_keepalive(&keepalive)
            .and_then(|()| socket.set_tcp_user_timeout(Some(USER_TIMEOUT)));
        // The connection still works; it is only noticed later if its peer vanishes.
        if let Err(e) = set {
            tracing::warn!(error = %e, "cannot set TCP keepalive on an API connection");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_probe_a_silent_peer_and_give_up_on_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = with_keepalive(listener);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        let socket = SockRef::from(&accepted);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE);
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
    }
}
