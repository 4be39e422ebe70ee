//! Traces: with `--otlp-endpoint`, one span per hop, exported over OTLP/HTTP (protobuf) by the
//! OpenTelemetry SDK.
//!
//! The span *is* the hop that [`correlation::next_hop`](crate::http::correlation::next_hop)
//! writes into `traceparent`: its trace id is the header's, its span id the one this sidecar puts
//! in the `traceparent` it forwards (so the next hop's span, or the app's, is its child), and its
//! parent the span id that arrived (none: a root). Outbound requests make `CLIENT` spans, inbound
//! ones `SERVER` spans. A span covers the request from its arrival until its response head goes
//! back downstream.
//!
//! Sampling is parent-based: a `traceparent` that arrives decides by its sampled flag; a new
//! trace is sampled when its id falls under `--trace-sampling` (the OpenTelemetry
//! `TraceIdRatioBased` rule, so every SDK that sees the same id agrees), and the flag written
//! says so. It is decided here rather than by the SDK's sampler because the flag must be written
//! before the request goes on; the SDK only ever sees sampled spans, and an unsampled request
//! costs a comparison.
//!
//! Export never holds up a request: ended spans go into the SDK's batch processor, a bounded
//! queue (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048) drained by its own thread every
//! `OTEL_BSP_SCHEDULE_DELAY` (default 5 s); when the collector is slow or down, spans beyond the
//! queue are dropped. The exporter posts through [`Client`], a hyper-util client on the sidecar's
//! own runtime, so there is no second HTTP stack; an https collector is verified against the
//! system's roots, with the sidecar's one crypto provider.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor};
use opentelemetry_sdk::Resource;
use pilotfish_api::client::Connector;
use pilotfish_api::SpiffeId;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};

use crate::telemetry::metrics::Direction;

/// How long one export may take, connection included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the sidecar waits at exit for the spans still queued to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// A collector's answer is a small protobuf; anything longer is cut off there.
const MAX_ANSWER: usize = 64 * 1024;

/// `--otlp-endpoint` and `--trace-sampling`.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOptions {
    pub endpoint: Endpoint,
    pub sampling: Sampling,
}

/// Why a trace setting is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TraceSettingError {
    #[error("{0:?} is not a URL: give the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318")]
    NotAUrl(String),
    #[error("{0:?}: a collector's URL is http:// or https://")]
    Scheme(String),
    #[error("{0:?} is not a ratio: give a number from 0.0 (no new trace sampled) to 1.0 (every one)")]
    NotARatio(String),
}

/// Where spans go: the collector's OTLP/HTTP URL. A URL with no path gets the traces path
/// `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` does); one with a path is used as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint(Uri);

impl FromStr for Endpoint {
    type Err = TraceSettingError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let not_a_url = || TraceSettingError::NotAUrl(text.to_owned());
        let uri: Uri = text.parse().map_err(|_| not_a_url())?;
        match uri.scheme_str() {
            _ if uri.host().is_none_or(str::is_empty) => return Err(not_a_url()),
            None => return Err(not_a_url()),
            Some("http" | "https") => {}
            Some(_) => return Err(TraceSettingError::Scheme(text.to_owned())),
        }
        if uri.path() != "/" {
            return Ok(Self(uri));
        }
        let mut parts = uri.into_parts();
        parts.path_and_query = Some("/v1/traces".parse().expect("a path"));
        Uri::from_parts(parts).map(Self).map_err(|_| not_a_url())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which new traces are sampled: those whose id's low 63 bits fall under the ratio's share of
/// them (OpenTelemetry's `TraceIdRatioBased`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// Ids below this are sampled (0: none; 2^63: all).
    bound: u64,
}

impl Sampling {
    pub const ALL: Sampling = Sampling { bound: 1 << 63 };

    /// The ratio in 0.0..=1.0.
    pub fn ratio(ratio: f64) -> Option<Self> {
        (0.0..=1.0).contains(&ratio).then_some(Self { bound: (ratio * (1u64 << 63) as f64) as u64 })
    }

    /// Whether a new trace with this id is sampled.
    pub fn samples(self, trace: u128) -> bool {
        // The low 8 bytes, big-endian as the id is written, without their lowest bit.
        ((trace as u64) >> 1) < self.bound
    }
}

impl FromStr for Sampling {
    type Err = TraceSettingError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.trim()
            .parse::<f64>()
            .ok()
            .and_then(Self::ratio)
            .ok_or_else(|| TraceSettingError::NotARatio(text.to_owned()))
    }
}

/// The ids of a sampled hop (see [`correlation::next_hop`](crate::http::correlation::next_hop)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub trace: u128,
    /// The span id that arrived in `traceparent`; `None` for a new trace.
    pub parent: Option<u64>,
    /// This hop's span id, as forwarded in `traceparent`.
    pub span: u64,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint}: {reason}")]
pub struct TraceError {
    endpoint: String,
    reason: String,
}

/// One sidecar's span export: the SDK's batch processor over the OTLP exporter.
///
/// Spans are handed to the processor whole ([`SpanData`]), not built through the SDK's tracer:
/// its span ids come from its id generator, and a hop's span id must be the one already
/// forwarded in `traceparent`.
pub struct Tracing {
    sampling: Sampling,
    processor: Arc<dyn SpanProcessor>,
    scope: InstrumentationScope,
}

impl Tracing {
    /// Starts exporting spans of `service` (the resource's `service.name`) to the collector, an
    /// https one verified with `provider` against the system's roots. Inside the sidecar's
    /// runtime, whose handle the exporter's client keeps.
    pub fn start(
        options: &TraceOptions,
        service: &str,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, TraceError> {
        let failed = |reason: String| TraceError { endpoint: options.endpoint.to_string(), reason };
        let tls = match options.endpoint.0.scheme_str() {
            Some("https") => Some(system_roots(provider).map_err(failed)?),
            _ => None,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Client::new(tokio::runtime::Handle::current(), tls))
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(options.endpoint.to_string())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        tracing::info!(endpoint = %options.endpoint, "exporting traces over OTLP/HTTP");
        let processor = BatchSpanProcessor::builder(exporter).build();
        Ok(Self::with_processor(options.sampling, service, processor))
    }

    /// Spans of `service` sampled by `sampling`, handed to `processor` (the exporter's, or a
    /// test's or benchmark's).
    pub fn with_processor(
        sampling: Sampling,
        service: &str,
        mut processor: impl SpanProcessor + 'static,
    ) -> Self {
        processor.set_resource(&Resource::builder_empty().with_service_name(service.to_owned()).build());
        let scope =
            InstrumentationScope::builder("pilotfish").with_version(env!("CARGO_PKG_VERSION")).build();
        Self { sampling, processor: Arc::new(processor), scope }
    }

    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// Sends what is still queued, for at most [`FLUSH_TIMEOUT`], and stops.
    pub async fn shutdown(&self) {
        let processor = self.processor.clone();
        // The SDK blocks while its thread exports, through this runtime's client.
        let flush = tokio::task::spawn_blocking(move || processor.shutdown_with_timeout(FLUSH_TIMEOUT));
        match tokio::time::timeout(FLUSH_TIMEOUT + Duration::from_secs(1), flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("traces not all exported at exit: {e}"),
            Ok(Err(e)) => tracing::warn!("traces not all exported at exit: {e}"),
            Err(_) => tracing::warn!("traces not all exported at exit: the collector did not answer in time"),
        }
    }
}

/// A sampled request's span, from its arrival until its response.
pub struct HopSpan {
    hop: Hop,
    kind: SpanKind,
    start: SystemTime,
    method: Method,
    path: String,
    /// What the outbound stages learn on the way.
    pub learned: Learned,
}

/// What the stages of a sampled outbound request tell its span: the service and route it was
/// sent to, and the identity of the endpoint that answered over mesh mTLS. Set once each;
/// unsampled requests carry none.
#[derive(Default)]
pub struct Learned {
    routed: OnceLock<(Arc<str>, Arc<str>)>,
    endpoint: OnceLock<Arc<SpiffeId>>,
}

impl Learned {
    /// The request went to `service`'s rule of `route` (`namespace/name`, empty for the
    /// service's default route).
    pub fn routed(&self, service: &Arc<str>, route: &Arc<str>) {
        let _ = self.routed.set((service.clone(), route.clone()));
    }

    /// The endpoint that answered proved this identity.
    pub fn endpoint(&self, identity: Option<&Arc<SpiffeId>>) {
        if let Some(id) = identity {
            let _ = self.endpoint.set(id.clone());
        }
    }
}

impl HopSpan {
    pub fn start<B>(hop: Hop, direction: Direction, req: &Request<B>) -> Self {
        Self {
            hop,
            kind: match direction {
                Direction::Outbound => SpanKind::Client,
                Direction::Inbound => SpanKind::Server,
            },
            start: SystemTime::now(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            learned: Learned::default(),
        }
    }

    /// Ends the span with the response: its status and, for the sidecar's own answers, the
    /// `pilotfish-error` reason. `peer` is the caller's verified identity (inbound).
    pub fn end(
        self,
        tracing: &Tracing,
        status: StatusCode,
        error: Option<&HeaderValue>,
        peer: Option<&SpiffeId>,
    ) {
        let Self { hop, kind, start, method, path, learned } = self;
        let method = method_name(&method);
        let mut attributes = Vec::with_capacity(7);
        attributes.push(KeyValue::new("http.request.method", method.clone()));
        attributes.push(KeyValue::new("url.path", path));
        attributes.push(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
        if let Some((service, route)) = learned.routed.into_inner() {
            attributes.push(KeyValue::new("peer.service", service));
            if !route.is_empty() {
                attributes.push(KeyValue::new("pilotfish.route", route));
            }
        }
        let identity =
            learned.endpoint.into_inner().map(|id| id.to_string()).or_else(|| peer.map(ToString::to_string));
        if let Some(identity) = identity {
            attributes.push(KeyValue::new("pilotfish.peer.identity", identity));
        }
        let error = error.map(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        // OpenTelemetry's HTTP conventions: a client span fails on 4xx and 5xx, a server span on
        // 5xx; any answer of the sidecar's own is a failure of this hop.
        let failed = status.is_server_error() || (kind == SpanKind::Client && status.is_client_error());
        let status_of_span = match (&error, failed) {
            (Some(reason), _) => Status::error(reason.clone()),
            (None, true) => Status::error(""),
            (None, false) => Status::Unset,
        };
        if let Some(reason) = error {
            attributes.push(KeyValue::new("pilotfish.error", reason));
        }
        tracing.processor.on_end(SpanData {
            span_context: SpanContext::new(
                TraceId::from(hop.trace),
                SpanId::from(hop.span),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: hop.parent.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: hop.parent.is_some(),
            span_kind: kind,
            name: method,
            start_time: start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: status_of_span,
            instrumentation_scope: tracing.scope.clone(),
        });
    }
}

/// TLS 1.3 to an https collector, verified against the system's roots (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` name others).
fn system_roots(provider: &Arc<CryptoProvider>) -> Result<Arc<ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no trusted root certificates found on this system to verify it with (name a PEM file \
             with SSL_CERT_FILE){}",
            if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) }
        ));
    }
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

type Pooled = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

/// A standard method's name without a copy (the span's name and an attribute share it).
fn method_name(method: &Method) -> Cow<'static, str> {
    const STANDARD: [&str; 9] =
        ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"];
    match STANDARD.iter().find(|m| **m == method.as_str()) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

/// The exporter's HTTP client: hyper-util's (with the control-plane client's connector, for
/// https), run on the sidecar's runtime (the SDK's batch thread has none), each export bounded
/// by [`EXPORT_TIMEOUT`].
#[derive(Clone)]
struct Client {
    inner: Pooled,
    runtime: tokio::runtime::Handle,
    /// Whether the last export failed: a failure after a success is a warning, the ones after
    /// it only debug lines (the collector is still down).
    failing: Arc<AtomicBool>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pilotfish OTLP client")
    }
}

impl Client {
    fn new(runtime: tokio::runtime::Handle, tls: Option<Arc<ClientConfig>>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(EXPORT_TIMEOUT));
        http.set_nodelay(true);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(Connector::new(http, tls));
        Self { inner, runtime, failing: Arc::new(AtomicBool::new(false)) }
    }

    async fn post(inner: Pooled, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let res = inner.request(request.map(Full::new)).await?;
        let (parts, body) = res.into_parts();
        let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

/// `e` and what caused it: hyper-util's "client error (Connect)" says little alone.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let inner = self.inner.clone();
        let sent = self.runtime.spawn(async move {
            match tokio::time::timeout(EXPORT_TIMEOUT, Self::post(inner, request)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {EXPORT_TIMEOUT:?}").into()),
            }
        });
        let answer = sent.await.map_err(|e| -> HttpError { Box::new(e) }).and_then(|a| a);
        let failure = match &answer {
            Ok(res) if res.status().is_success() => None,
            Ok(res) => Some(format!("the collector answered {}", res.status())),
            Err(e) => Some(with_causes(e.as_ref())),
        };
        match failure {
            None => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("trace export works again");
                }
            }
            Some(reason) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!("trace export failed, spans are dropped while it does: {reason}")
            }
            Some(reason) => tracing::debug!("trace export failed: {reason}"),
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_when_they_have_none() {
        let e: Endpoint = "http://127.0.0.1:4318".parse().unwrap();
        assert_eq!(e.to_string(), "http://127.0.0.1:4318/v1/traces");
        let e: Endpoint = "http://collector:4318/".parse().unwrap();
        assert_eq!(e.to_string(), "http://collector:4318/v1/traces");
        let e: Endpoint = "http://collector/custom/traces".parse().unwrap();
        assert_eq!(e.to_string(), "http://collector/custom/traces");
        for bad in ["", "collector:4318", "/v1/traces", "http://", "not a url"] {
            assert!(matches!(bad.parse::<Endpoint>(), Err(TraceSettingError::NotAUrl(_))), "{bad}");
        }
        let e: Endpoint = "https://collector".parse().unwrap();
        assert_eq!(e.to_string(), "https://collector/v1/traces");
        assert_eq!("ftp://x".parse::<Endpoint>(), Err(TraceSettingError::Scheme("ftp://x".into())));
    }

    #[test]
    fn ratios_are_numbers_from_zero_to_one() {
        assert_eq!("1".parse::<Sampling>(), Ok(Sampling::ALL));
        assert_eq!("0.0".parse::<Sampling>().unwrap().bound, 0);
        assert_eq!("0.5".parse::<Sampling>().unwrap().bound, 1 << 62);
        for bad in ["-0.1", "1.5", "NaN", "ten", "", "inf"] {
            let e = bad.parse::<Sampling>().unwrap_err();
            assert_eq!(e, TraceSettingError::NotARatio(bad.into()));
            assert!(e.to_string().contains("from 0.0"), "{e}");
        }
    }

    #[test]
    fn the_ratio_samples_its_share_of_trace_ids() {
        let all = Sampling::ALL;
        let none = Sampling::ratio(0.0).unwrap();
        let tenth = Sampling::ratio(0.1).unwrap();
        let mut sampled = 0;
        for _ in 0..100_000 {
            let id = fastrand::u128(1..);
            assert!(all.samples(id));
            assert!(!none.samples(id));
            sampled += usize::from(tenth.samples(id));
        }
        // 10,000 expected; the standard deviation is under 100.
        assert!((9_500..=10_500).contains(&sampled), "{sampled}");
        // Only the low 64 bits count, as in every OpenTelemetry SDK: the same id, the same answer.
        assert!(tenth.samples(0xffff_0000_0000_0000_0000_0000_0000_0001));
        assert!(!tenth.samples(u128::from(u64::MAX)));
    }

    /// Keeps what the SDK exports.
    #[derive(Debug, Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Captured {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn captured() -> (Tracing, Captured) {
        let captured = Captured::default();
        let processor = opentelemetry_sdk::trace::SimpleSpanProcessor::new(captured.clone());
        (Tracing::with_processor(Sampling::ALL, "web", processor), captured)
    }

    fn attribute(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
    }

    #[test]
    fn a_client_span_is_the_hop_with_where_it_went() {
        let (tracing, captured) = captured();
        let req = Request::get("/users/7").body(()).unwrap();
        let hop =
            Hop { trace: 0x0af7651916cd43dd8448eb211c80319c, parent: Some(0xb7ad6b7169203331), span: 0x34 };
        let span = HopSpan::start(hop, Direction::Outbound, &req);
        span.learned.routed(&Arc::from("users.default"), &Arc::from("default/users"));
        let error = HeaderValue::from_static("circuit-open");
        span.end(&tracing, StatusCode::SERVICE_UNAVAILABLE, Some(&error), None);

        let spans = captured.0.lock().unwrap();
        let [s] = spans.as_slice() else { panic!("one span: {spans:?}") };
        assert_eq!(s.span_context.trace_id(), TraceId::from(hop.trace));
        assert_eq!(s.span_context.span_id(), SpanId::from(0x34));
        assert_eq!(s.parent_span_id, SpanId::from(0xb7ad6b7169203331));
        assert_eq!(s.span_kind, SpanKind::Client);
        assert_eq!(s.name, "GET");
        assert!(s.start_time <= s.end_time);
        assert_eq!(attribute(s, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(attribute(s, "url.path").as_deref(), Some("/users/7"));
        assert_eq!(attribute(s, "http.response.status_code").as_deref(), Some("503"));
        assert_eq!(attribute(s, "peer.service").as_deref(), Some("users.default"));
        assert_eq!(attribute(s, "pilotfish.route").as_deref(), Some("default/users"));
        assert_eq!(attribute(s, "pilotfish.error").as_deref(), Some("circuit-open"));
        assert_eq!(s.status, Status::error("circuit-open"));
    }

    #[test]
    fn standard_methods_are_named_without_a_copy() {
        assert!(matches!(method_name(&Method::GET), Cow::Borrowed("GET")));
        assert!(matches!(method_name(&Method::PATCH), Cow::Borrowed("PATCH")));
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert!(matches!(method_name(&purge), Cow::Owned(name) if name == "PURGE"));
    }

    #[test]
    fn a_server_span_names_its_caller_and_may_be_a_root() {
        let (tracing, captured) = captured();
        let req = Request::post("/orders").body(()).unwrap();
        let span = HopSpan::start(Hop { trace: 7, parent: None, span: 8 }, Direction::Inbound, &req);
        let peer: SpiffeId = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
        span.end(&tracing, StatusCode::NOT_FOUND, None, Some(&peer));

        let spans = captured.0.lock().unwrap();
        let [s] = spans.as_slice() else { panic!("one span: {spans:?}") };
        assert_eq!(s.span_context.trace_id(), TraceId::from(7));
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(
            attribute(s, "pilotfish.peer.identity").as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/web")
        );
        assert_eq!(attribute(s, "peer.service"), None);
        // A 404 is the server's answer, not its failure.
        assert_eq!(s.status, Status::Unset);
    }
}
