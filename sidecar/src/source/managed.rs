//! Managed mode: the configuration comes from the control plane's push stream instead of a
//! file, and this sidecar's app is registered in the control plane's registry under a lease it
//! renews by heartbeat.
//!
//! The sidecar ACKs every version it swaps in and NACKs (with the error) every version it
//! refuses, keeping the last good one. When the control plane is unreachable it keeps serving
//! what it has and reconnects with jittered exponential backoff, trying each control-plane URL
//! in turn, and resumes from the version it has.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use pilotfish_api::UnknownFields;

use super::reload;
use crate::listener::local::LocalListeners;
use crate::state::Shared;
use crate::Overrides;

/// Without even a keepalive line for this long, the stream is presumed dead.
const STREAM_IDLE: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Connecting includes waiting for the response headers of the stream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One snapshot line; a larger one is a broken stream, not a configuration.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// Where the control plane is and who this sidecar is.
#[derive(Debug, Clone)]
pub struct Managed {
    /// Base URLs of the control-plane replicas (`http://host:port`).
    pub servers: Vec<String>,
    pub service: String,
    pub namespace: String,
    pub token: String,
    /// This sidecar's name in the proxies API.
    pub id: String,
    /// How long the registration lease lasts without a heartbeat.
    pub lease_ttl: Duration,
}

impl Managed {
    /// The configuration as the sidecar parses it: its own `Sidecar` document (listeners come
    /// from the command line) followed by what the control plane sent.
    pub fn document_stream(&self, config: &str) -> String {
        let sidecar = serde_json::json!({
            "apiVersion": "pilotfish.io/v1alpha1",
            "kind": "Sidecar",
            "metadata": { "name": self.service, "namespace": self.namespace },
            "spec": {},
        });
        format!("{sidecar}\n---\n{config}")
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The push stream, (re)connected as needed.
pub struct PushClient {
    managed: Managed,
    client: HttpClient,
    server: usize,
    body: Option<Incoming>,
    buf: BytesMut,
    /// The last version swapped in (sent on reconnect so an unchanged config is not resent).
    version: u64,
    failures: u32,
}

impl PushClient {
    pub fn new(managed: Managed) -> Self {
        Self {
            managed,
            client: http_client(),
            server: 0,
            body: None,
            buf: BytesMut::new(),
            version: 0,
            failures: 0,
        }
    }

    pub fn managed(&self) -> &Managed {
        &self.managed
    }

    /// The next snapshot: `(version, document stream)`.
    pub async fn next(&mut self) -> (u64, String) {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<serde_json::Value>(&line) {
                    Ok(v) => {
                        let version = v["version"].as_u64().unwrap_or(0);
                        let config = v["config"].as_str().unwrap_or_default().to_owned();
                        // Only a snapshot proves the server healthy; connecting is not enough.
                        self.failures = 0;
                        return (version, self.managed.document_stream(&config));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable line on the push stream; reconnecting");
                        self.fail_over().await;
                        continue;
                    }
                }
            }
            if self.buf.len() > MAX_LINE {
                tracing::warn!("a push stream line exceeds {MAX_LINE} bytes; reconnecting");
                self.fail_over().await;
                continue;
            }
            let Some(body) = self.body.as_mut() else {
                match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                    Ok(Ok(body)) => self.body = Some(body),
                    Ok(Err(e)) => {
                        let server = &self.managed.servers[self.server];
                        tracing::warn!(%server, error = %e, "control plane unreachable; serving the last good config");
                        self.fail_over().await;
                    }
                    Err(_) => {
                        let server = &self.managed.servers[self.server];
                        tracing::warn!(%server, "control plane did not answer within {CONNECT_TIMEOUT:?}; trying the next");
                        self.fail_over().await;
                    }
                }
                continue;
            };
            match tokio::time::timeout(STREAM_IDLE, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                    tracing::warn!("push stream ended; reconnecting");
                    self.fail_over().await;
                }
            }
        }
    }

    /// Drops the stream, moves to the next control-plane URL, and backs off — longer with every
    /// failure in a row, so a server that accepts and then fails cannot cause a reconnect storm.
    async fn fail_over(&mut self) {
        self.body = None;
        self.buf.clear();
        self.server = (self.server + 1) % self.managed.servers.len();
        self.failures += 1;
        tokio::time::sleep(backoff(self.failures)).await;
    }

    async fn connect(&self) -> Result<Incoming, String> {
        let m = &self.managed;
        let url = format!(
            "{}/v1/push?id={}&service={}&namespace={}&version={}",
            m.servers[self.server], m.id, m.service, m.namespace, self.version
        );
        let req = Request::get(&url)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", m.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let res = self.client.request(req).await.map_err(|e| format!("{url}: {e}"))?;
        if res.status() != StatusCode::OK {
            return Err(format!("{url}: {}", res.status()));
        }
        tracing::info!(server = %m.servers[self.server], "connected to the control plane");
        Ok(res.into_body())
    }

    /// ACK (`error: None`) or NACK a version.
    pub async fn ack(&mut self, version: u64, error: Option<String>) {
        if error.is_none() {
            self.version = version;
        }
        let body = serde_json::json!({ "version": version, "error": error }).to_string();
        // The proxy is the id under the service it connected as (see `connect`).
        let m = &self.managed;
        let path = format!("/v1/proxies/{}/ack?service={}&namespace={}", m.id, m.service, m.namespace);
        if let Err(e) = call(&self.client, &self.managed, self.server, Method::POST, &path, Some(body)).await
        {
            tracing::warn!(version, error = %e, "cannot report to the control plane");
        }
    }
}

/// Applies every snapshot after the first, until the sidecar shuts down.
pub async fn follow(
    shared: Arc<Shared>,
    local: Arc<LocalListeners>,
    mut push: PushClient,
    overrides: Overrides,
) {
    loop {
        let (version, text) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            next = push.next() => next,
        };
        match reload::swap_in(&shared, &local, "control-plane", &text, &overrides, UnknownFields::Tolerate) {
            Ok(applied) => {
                if applied.is_some() {
                    tracing::info!(version, "configuration from the control plane applied");
                }
                push.ack(version, None).await;
            }
            Err(e) => {
                shared.metrics.config_errors.inc();
                tracing::error!(
                    version,
                    "configuration from the control plane rejected, keeping the last good one: {e}"
                );
                push.ack(version, Some(e)).await;
            }
        }
    }
}

/// Registers `address` as an instance of the service and renews its lease until `stop`, then
/// deregisters it.
pub async fn register(managed: Managed, address: SocketAddr, stop: CancellationToken) {
    let client = http_client();
    let ttl = managed.lease_ttl.as_secs().max(1);
    let body = serde_json::json!({
        "service": managed.service,
        "namespace": managed.namespace,
        "address": address.to_string(),
        "ttlSeconds": ttl,
    })
    .to_string();
    let mut server = 0;
    let mut failures = 0;
    let mut id: Option<String> = None;
    loop {
        let result = match &id {
            None => call(&client, &managed, server, Method::POST, "/v1/endpoints", Some(body.clone()))
                .await
                .map(|v| id = v["id"].as_str().map(str::to_owned)),
            Some(current) => {
                let path = format!("/v1/endpoints/{current}/heartbeat");
                match call(&client, &managed, server, Method::PUT, &path, None).await {
                    // The control plane let the lease lapse (it was down, or so were we): again.
                    Err(e) if e.starts_with("404") => {
                        id = None;
                        continue;
                    }
                    other => other.map(drop),
                }
            }
        };
        let pause = match result {
            Ok(()) => {
                failures = 0;
                Duration::from_secs(ttl) / 3
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew this instance's registration");
                server = (server + 1) % managed.servers.len();
                failures += 1;
                backoff(failures)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    if let Some(id) = id {
        let path = format!("/v1/endpoints/{id}");
        let bye = call(&client, &managed, server, Method::DELETE, &path, None);
        if tokio::time::timeout(Duration::from_secs(2), bye).await.is_err() {
            tracing::warn!("could not deregister before exiting; the lease will lapse instead");
        }
    }
}

async fn call(
    client: &HttpClient,
    managed: &Managed,
    server: usize,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<serde_json::Value, String> {
    let url = format!("{}{path}", managed.servers[server]);
    let req = Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::AUTHORIZATION, format!("Bearer {}", managed.token))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = res.status();
    let bytes = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        return Err(format!("{} {url}: {}", status.as_u16(), value["error"].as_str().unwrap_or("")));
    }
    Ok(value)
}

/// Reconnect and retry pauses: the retry layer's exponential backoff with full jitter, from
/// 100 ms up to 5 s.
fn backoff(failures: u32) -> Duration {
    crate::resilience::retry::backoff(failures, Duration::from_millis(100), MAX_BACKOFF)
}
