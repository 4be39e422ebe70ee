//! The client's plumbing: one control plane's base URL and bearer token over hyper-util's
//! pooled legacy client (`http://`, or `https://` with a [`Trust`]), turning a call into a
//! request and an answer into a typed value or a [`ClientError`]. The operations themselves
//! are in `operations`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{capture_connection, CaptureConnection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;

use super::connect::Connector;
use super::error::ClientError;
use rustls::client::ResolvesClientCert;

use super::trust::Trust;

type Http = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

/// The bearer token a client sends: given once, or read from a file at every call (a
/// Kubernetes projected ServiceAccount token, which the kubelet rotates in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer {
    Token(String),
    File(PathBuf),
}

impl Bearer {
    /// The token now; a file that cannot be read sends none (the call is judged by the
    /// client certificate, if any, else refused with 401, which says what is missing).
    fn current(&self) -> Option<String> {
        match self {
            Self::Token(token) => Some(token.clone()),
            Self::File(path) => std::fs::read_to_string(path)
                .ok()
                .map(|token| token.trim().to_owned())
                .filter(|token| !token.is_empty()),
        }
    }

    /// The token as given (none for a file: a file's token pins no root).
    pub fn given(&self) -> Option<&str> {
        match self {
            Self::Token(token) => Some(token),
            Self::File(_) => None,
        }
    }
}

impl From<String> for Bearer {
    fn from(token: String) -> Self {
        Self::Token(token)
    }
}

impl From<&str> for Bearer {
    fn from(token: &str) -> Self {
        Self::Token(token.to_owned())
    }
}

/// A client of one control plane's `/v1` API. Cloning it shares its connection pool.
#[derive(Clone)]
pub struct Client {
    base: Arc<str>,
    token: Option<Bearer>,
    http: Http,
    /// Bounds each call, from sending it to the last byte of the answer (not a push stream's
    /// lines, which come for as long as the stream lasts).
    timeout: Option<Duration>,
    /// What https connections present when asked for a client certificate.
    client_cert: Option<Arc<dyn ResolvesClientCert>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client").field("base", &self.base).field("timeout", &self.timeout).finish()
    }
}

/// How often an idle HTTP/2 connection is pinged, and how long a ping may go unanswered before
/// the connection is closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`Client`] is set up; [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    token: Option<Bearer>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    trust: Option<Trust>,
    client_cert: Option<Arc<dyn ResolvesClientCert>>,
    pool_idle_timeout: Option<Duration>,
}

impl ClientBuilder {
    /// The client certificate presented on `https://` connections when the server asks for one
    /// (resolved at each handshake, so a renewed certificate is used by new connections).
    pub fn client_cert(mut self, resolver: Arc<dyn ResolvesClientCert>) -> Self {
        self.client_cert = Some(resolver);
        self
    }

    /// How long an idle connection is kept for reuse (default: hyper's 90 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = Some(timeout);
        self
    }

    /// What `https://` URLs are verified against (none: only `http://` URLs work).
    pub fn trust(mut self, trust: Option<Trust>) -> Self {
        self.trust = trust;
        self
    }

    /// The bearer token sent with every call (admin or join token).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.map(Bearer::Token);
        self
    }

    /// The bearer token sent with every call, given or read from a file at each call.
    pub fn bearer(mut self, bearer: Bearer) -> Self {
        self.token = Some(bearer);
        self
    }

    /// Bounds opening a connection (default: the operating system's).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Bounds each call but a push stream's lines (default: none).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn build(self) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(self.connect_timeout);
        connector.set_nodelay(true);
        let client_cert = self.client_cert;
        let tls = self.trust.map(|trust| Arc::new(trust.client_config_with(client_cert.clone())));
        let mut http = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        // An HTTP/2 connection carries a sidecar's push stream and its ACKs for as long as it
        // lives, and a stream given up on does not close it: pings notice a peer that went away
        // without a FIN (a partition, a replica's host lost), so the pool drops the connection
        // and the next call dials again instead of waiting out TCP's retransmissions.
        http.timer(TokioTimer::new())
            .http2_keep_alive_interval(H2_PING_INTERVAL)
            .http2_keep_alive_timeout(H2_PING_TIMEOUT)
            .http2_keep_alive_while_idle(true);
        if let Some(timeout) = self.pool_idle_timeout {
            http.pool_idle_timeout(timeout);
        }
        Client {
            base: self.base.trim_end_matches('/').into(),
            token: self.token,
            http: http.build(Connector::new(connector, tls)),
            client_cert,
            timeout: self.timeout,
        }
    }
}

/// One request: method, path with its query, and body with its media type.
pub(crate) struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<(&'static str, Bytes)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Call {
    pub fn new(method: Method, path: String) -> Self {
        Self { method, path, body: None, headers: Vec::new() }
    }

    pub fn json(mut self, body: &impl serde::Serialize) -> Self {
        let bytes = serde_json::to_vec(body).expect("wire types serialize");
        self.body = Some(("application/json", Bytes::from(bytes)));
        self
    }
}

impl Client {
    /// A client of the control plane at `base` (`http://host:port`, or `https://host:port`
    /// with [`ClientBuilder::trust`]).
    pub fn builder(base: &str) -> ClientBuilder {
        ClientBuilder {
            base: base.to_owned(),
            token: None,
            connect_timeout: None,
            timeout: None,
            trust: None,
            client_cert: None,
            pool_idle_timeout: None,
        }
    }

    /// The control plane's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `call` and answers the response whose status is a success; an error answer becomes
    /// its [`ClientError`]. Not bounded by the timeout: the caller bounds what it reads.
    pub(crate) async fn send(&self, call: Call) -> Result<Response<Incoming>, ClientError> {
        let url = format!("{}{}", self.base, call.path);
        let (res, connection) = self.exchange(&url, &call).await?;
        let res = if res.status() == StatusCode::UNAUTHORIZED && self.presents_certificate() {
            // The connection may predate the client certificate (opened while there was none,
            // or with one since renewed), and the server judged the request by what it
            // presented then: once more over a new connection, which presents the current one.
            if let Some(connected) = connection.connection_metadata().as_ref() {
                connected.poison();
            }
            self.exchange(&url, &call).await?.0
        } else {
            res
        };
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status();
        let retry_after = res
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_secs);
        let body = read(&url, res).await?;
        Err(ClientError::answer(status, &body, retry_after))
    }

    /// Whether a client certificate is there to present over https.
    fn presents_certificate(&self) -> bool {
        self.base.starts_with("https://") && self.client_cert.as_ref().is_some_and(|c| c.has_certs())
    }

    /// One request and its response, with a handle on the connection it went over.
    async fn exchange(
        &self,
        url: &str,
        call: &Call,
    ) -> Result<(Response<Incoming>, CaptureConnection), ClientError> {
        let mut req = Request::builder().method(call.method.clone()).uri(url);
        if let Some(token) = self.token.as_ref().and_then(Bearer::current) {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in &call.headers {
            req = req.header(name, value);
        }
        let body = match &call.body {
            Some((media, bytes)) => {
                req = req.header(header::CONTENT_TYPE, *media);
                bytes.clone()
            }
            None => Bytes::new(),
        };
        let mut req = req
            .body(Full::new(body))
            .map_err(|source| ClientError::Request { url: url.to_owned(), source })?;
        let connection = capture_connection(&mut req);
        let res = self
            .http
            .request(req)
            .await
            .map_err(|source| ClientError::Unreachable { base: self.base.to_string(), source })?;
        Ok((res, connection))
    }

    /// [`Client::send`] and the whole answer, within the timeout.
    async fn answer(&self, call: Call) -> Result<(String, Bytes), ClientError> {
        let url = format!("{}{}", self.base, call.path);
        let exchange = async {
            let res = self.send(call).await?;
            read(&url, res).await
        };
        let body = match self.timeout {
            None => exchange.await?,
            Some(timeout) => tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| ClientError::TimedOut { base: self.base.to_string(), timeout })??,
        };
        Ok((url, body))
    }

    /// A call whose answer is the JSON of `T`.
    pub(crate) async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, ClientError> {
        let (url, body) = self.answer(call).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Unexpected { url, source })
    }

    /// A call whose answer is text (a PEM bundle); bytes that are not UTF-8 are replaced.
    pub(crate) async fn text(&self, call: Call) -> Result<String, ClientError> {
        let (_, body) = self.answer(call).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// A call whose answer has nothing to read (204, or a plain-text `ok`).
    pub(crate) async fn empty(&self, call: Call) -> Result<(), ClientError> {
        self.answer(call).await.map(drop)
    }
}

async fn read(url: &str, res: Response<Incoming>) -> Result<Bytes, ClientError> {
    match res.into_body().collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(source) => Err(ClientError::Body { url: url.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_at_every_call() {
        let path = std::env::temp_dir().join(format!("pilotfish-bearer-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let bearer = Bearer::File(path.clone());
        assert_eq!(bearer.current(), None, "no file yet: no token");
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(bearer.current().as_deref(), Some("first"));
        // The kubelet rotates a projected token in place.
        std::fs::write(&path, "second").unwrap();
        assert_eq!(bearer.current().as_deref(), Some("second"));
        assert_eq!(bearer.given(), None, "a file's token pins no root");
        assert_eq!(Bearer::from("t").current().as_deref(), Some("t"));
        std::fs::remove_file(&path).unwrap();
    }
}
