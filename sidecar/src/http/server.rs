//! Serving one downstream HTTP connection (after detection) with the limits that bound bad
//! clients — header size and count (→ 431), a header read timeout, HTTP/2 stream limits — and a
//! graceful end on drain (HTTP/1.1 closes after the current response, HTTP/2 sends GOAWAY).

use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use pilotfish_api::sidecar::SidecarSpec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::pool::Version;
use super::proxy::Proxy;

/// Runs a connection to its end; on drain, asks it to finish gracefully and keeps running it.
/// (A macro: hyper's two connection types share `graceful_shutdown` but no trait that has it.)
macro_rules! drive {
    ($conn:expr, $shutdown:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = $shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
    }};
}

pub async fn serve<I>(io: I, version: Version, proxy: Proxy, spec: &SidecarSpec, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(proxy);
    let io = TokioIo::new(io);
    match version {
        Version::Http1 => {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(spec.timeouts.header_read.get())
                .max_header_size(spec.limits.max_header_bytes)
                .max_headers(spec.limits.max_headers)
                .serve_connection(io, service)
                .with_upgrades();
            drive!(conn, shutdown)
        }
        Version::Http2 => {
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(spec.limits.max_header_bytes as u32)
                .max_concurrent_streams(spec.limits.max_concurrent_streams)
                // Pings find clients that vanished without closing.
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
                .adaptive_window(true)
                .serve_connection(io, service);
            drive!(conn, shutdown)
        }
    }
}
