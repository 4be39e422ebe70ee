//! The status listener (`--status`; in a pod `0.0.0.0:15021`): what the kubelet reaches on the
//! pod IP. `GET /ready` and `GET /live` answer as the admin listener does; `GET
//! /app-health/<container>/<liveness|readiness|startup>` forwards the app's own probe
//! ([`crate::upstream::app_probe`], as `PILOTFISH_APP_PROBES` maps it) and answers with the
//! app's status. Every other path is 404 and every other method 405: nothing here changes state
//! or shows configuration (`/shutdown` and `/config` stay on the loopback admin listener).
//!
//! It is open to the pod's network, so it is bounded: a few connections at a time (more wait in
//! the kernel's backlog), requests of at most 8 KiB (larger headers get 431), and a deadline
//! for each request's headers, which also closes idle keep-alive connections.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pilotfish_api::app_probe::{AppProbes, APP_HEALTH_PREFIX};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::state::Shared;
use crate::upstream::app_probe::{AppProber, Outcome};

/// The kubelet probes a few containers every few seconds; more at once is not a kubelet.
const MAX_CONNECTIONS: usize = 64;
/// hyper's smallest read buffer: far more than a probe's request line and headers.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// The kubelet sends its request at once; a client that holds connections open without one is
/// cut off soon, so that it cannot keep the kubelet's probes (1 s timeout by default) waiting
/// for long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// What the status listener answers from.
pub struct Status {
    pub shared: Arc<Shared>,
    pub probes: AppProbes,
    pub prober: AppProber,
}

/// Serves until the process exits (through the drain too: the kubelet keeps probing, and
/// `/ready` says 503).
pub async fn serve(status: Status, listener: TcpListener) {
    let status = Arc::new(status);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE: back off rather than spin.
                tracing::warn!(error = %e, "status accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let status = status.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let status = status.clone();
                async move { Ok::<_, Infallible>(status.route(req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Status {
    async fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let known = matches!(path, "/ready" | "/live") || path.starts_with(APP_HEALTH_PREFIX);
        if !known {
            return reply(
                StatusCode::NOT_FOUND,
                "not found: this port serves GET /ready, /live and /app-health/<container>/<probe>\n",
            );
        }
        if req.method() != Method::GET {
            let mut res = reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            res.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
            return res;
        }
        match path {
            "/live" => reply(StatusCode::OK, "live\n"),
            "/ready" => match self.shared.not_ready() {
                None => reply(StatusCode::OK, "ready\n"),
                Some(why) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            _ => match self.probes.get(path) {
                None => {
                    reply(StatusCode::NOT_FOUND, format!("no app probe at {path} (PILOTFISH_APP_PROBES)\n"))
                }
                Some(probe) => match self.prober.probe(probe, req.headers()).await {
                    Outcome::Answered(status) => reply(status, format!("the app answered {status}\n")),
                    Outcome::Unreachable(why) => {
                        tracing::debug!(path, %why, "app probe failed");
                        reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("the app did not answer the probe: {why}\n"),
                        )
                    }
                },
            },
        }
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}
