//! The admin listener: `GET /live`, `GET /ready`, `GET /metrics` (Prometheus text 0.0.4),
//! `GET /config` (the version and resources in force, JSON), `GET /identity` (the mesh identity,
//! its roots and renewals, JSON) and `POST /shutdown` (drain, exit).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::state::Shared;

/// Serves until the process exits (it stays up while the sidecar drains, answering `/ready` 503).
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // Drain starts once the reply to `POST /shutdown` is written and the connection
            // closed, so the caller always hears back.
            let shutdown = Arc::new(AtomicBool::new(false));
            let (conn_shared, requested) = (shared.clone(), shutdown.clone());
            let service = service_fn(move |req| {
                let reply = route(&conn_shared, peer, &requested, req);
                async move { Ok::<_, Infallible>(reply) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if shutdown.load(Ordering::Acquire) {
                shared.shutdown.cancel();
            }
        });
    }
}

fn route(
    shared: &Shared,
    peer: SocketAddr,
    shutdown: &AtomicBool,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/live") => reply(StatusCode::OK, text, "live\n"),
        (&Method::GET | &Method::HEAD, "/ready") => match shared.not_ready() {
            None => reply(StatusCode::OK, text, "ready\n"),
            Some(why) => reply(StatusCode::SERVICE_UNAVAILABLE, text, format!("{why}\n")),
        },
        (&Method::GET | &Method::HEAD, "/metrics") => {
            reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", shared.metrics.encode())
        }
        (&Method::GET | &Method::HEAD, "/config") => {
            let body = serde_json::to_vec_pretty(&shared.snapshot.load().to_json())
                .expect("config serializes to JSON");
            reply(StatusCode::OK, "application/json", body)
        }
        (&Method::GET | &Method::HEAD, "/identity") => {
            let report = shared.identity_status.report(shared.identity.load().as_deref());
            let body = serde_json::to_vec_pretty(&report).expect("the identity report serializes to JSON");
            reply(StatusCode::OK, "application/json", body)
        }
        (&Method::POST, "/shutdown") if !peer.ip().is_loopback() => reply(
            StatusCode::FORBIDDEN,
            text,
            "shutdown is only accepted from the local host (a preStop hook or the app itself)\n",
        ),
        (&Method::POST, "/shutdown") => {
            tracing::info!("shutdown requested on the admin endpoint");
            shutdown.store(true, Ordering::Release);
            let mut res = reply(StatusCode::OK, text, "draining\n");
            res.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            res
        }
        (_, "/live" | "/ready" | "/metrics" | "/config" | "/identity") => {
            let mut res = reply(StatusCode::METHOD_NOT_ALLOWED, text, "use GET\n");
            res.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            res
        }
        (_, "/shutdown") => {
            let mut res = reply(StatusCode::METHOD_NOT_ALLOWED, text, "use POST\n");
            res.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
            res
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /live, /ready, /metrics, /config, /identity or POST /shutdown\n",
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}
