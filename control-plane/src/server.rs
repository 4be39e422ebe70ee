//! The control plane's HTTP API (`/v1`, JSON) over the event store and its projection:
//! resources (apply, get, list, delete), history (events, diff, rollback) and the registry
//! (register, heartbeat, deregister, leases). Admin writes need the bearer token, checked before
//! anything else of a request is read (`auth`); every error is a JSON body `{"error": ...}` with
//! the right status (`error`), and nothing is half-applied.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State as AxumState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::{AdminToken, Caller, Presented};
pub use crate::error::ApiError;
use crate::history::History;
use crate::model::{endpoint_aggregate, kind, resource_aggregate, EndpointRecord, State};
use crate::push::{self, Proxies, ProxyKey};
use crate::store::{AppendRequest, EventStore, StoreError};

/// Events folded between two snapshots of the read model.
const SNAPSHOT_EVERY: u64 = 1000;
const DEFAULT_TTL: u64 = 30;
/// `/readyz` answers within this even when the store does not.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Events in one page of `GET /v1/events`, at most.
const PAGE_EVENTS: usize = 1000;
/// Bytes of event data in one page of `GET /v1/events`, about, at most (always one event).
const PAGE_BYTES: usize = 4 << 20;
/// Events read from the store at a time while filling a page, so a request holds at most
/// `PAGE_BYTES` plus one such chunk (an event's document came in a request body of at most
/// 2 MiB, axum's limit).
const PAGE_CHUNK: usize = 8;

/// How a control plane is run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bearer token of admin operations.
    pub admin_token: String,
    /// How long a disconnected proxy stays in `/v1/proxies`.
    pub proxy_retention: Duration,
    /// Connected proxies one service may have (beyond it `GET /v1/push` answers 429).
    pub max_proxies_per_service: usize,
}

impl Settings {
    pub fn new(admin_token: String) -> Self {
        Self {
            admin_token,
            proxy_retention: push::DEFAULT_RETENTION,
            max_proxies_per_service: push::DEFAULT_MAX_PER_SERVICE,
        }
    }
}

pub struct ControlPlane {
    store: Arc<dyn EventStore>,
    state: RwLock<State>,
    /// Leases of registered instances: live state, renewed by heartbeats (which are not events:
    /// they would flood the log).
    leases: Mutex<HashMap<String, Lease>>,
    admin_token: AdminToken,
    proxies: Proxies,
    /// The configuration at earlier points of the log (diff, rollback).
    history: History,
    /// The newest snapshot line, shared by every push stream (built once per version).
    snapshot: std::sync::Mutex<Option<(u64, bytes::Bytes)>>,
    /// Cancelled when the control plane stops: ends the push streams, so a graceful shutdown
    /// does not wait on them forever.
    stopping: CancellationToken,
}

/// A registered instance's lease: when it lapses, and the version of the registration it
/// belongs to (an expiry only removes that registration, never a newer one).
#[derive(Debug, Clone, Copy)]
struct Lease {
    deadline: Instant,
    ttl: Duration,
    version: u64,
    /// Granted or renewed by this replica. With a shared log another replica may hold the
    /// instance's heartbeats, so a lease this replica only loaded is not its to expire.
    owned: bool,
}

type Shared = Arc<ControlPlane>;
type ApiResult<T> = Result<T, ApiError>;

impl ControlPlane {
    /// Loads the read model (latest snapshot plus later events) and the leases of registered
    /// instances, which restart their TTL: the control plane cannot know of heartbeats it missed.
    pub async fn open(store: Arc<dyn EventStore>, settings: Settings) -> Result<Shared, StoreError> {
        let mut state = match store.latest_snapshot().await? {
            Some((_, snapshot)) => serde_json::from_value(snapshot).unwrap_or_default(),
            None => State::default(),
        };
        catch_up(&*store, &mut state).await?;
        let now = Instant::now();
        let mut leases = HashMap::new();
        let owned = !store.shared();
        for e in state.endpoints.values() {
            let ttl = Duration::from_secs(e.ttl_seconds);
            let version = store.aggregate_version(&endpoint_aggregate(&e.id)).await?;
            leases.insert(e.id.clone(), Lease { deadline: now + ttl, ttl, version, owned });
        }
        Ok(Arc::new(Self {
            store,
            state: RwLock::new(state),
            leases: Mutex::new(leases),
            admin_token: AdminToken::new(&settings.admin_token),
            proxies: Proxies::new(settings.proxy_retention, settings.max_proxies_per_service),
            history: History::default(),
            snapshot: std::sync::Mutex::new(None),
            stopping: CancellationToken::new(),
        }))
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn state(&self) -> &RwLock<State> {
        &self.state
    }

    /// Starts stopping: push streams end (sidecars reconnect elsewhere or later).
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    /// The push snapshot of the read model in force, built once per version for all streams.
    pub(crate) async fn snapshot_line(&self) -> (u64, bytes::Bytes) {
        let state = self.state.read().await;
        let mut cached = self.snapshot.lock().expect("snapshot lock poisoned");
        match &*cached {
            Some((seq, line)) if *seq == state.seq => (*seq, line.clone()),
            _ => {
                let line = push::snapshot_line(&state);
                *cached = Some((state.seq, line.clone()));
                (state.seq, line)
            }
        }
    }

    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    pub fn proxies(&self) -> &Proxies {
        &self.proxies
    }

    /// The API, built from [`OPERATIONS`] — the same table `/v1/openapi.json` is generated from,
    /// so the document cannot drift from the routes.
    pub fn router(self: &Shared) -> Router {
        let mut router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/v1/openapi.json", get(|| async { Json(openapi()) }));
        for op in OPERATIONS {
            router = router.route(op.path, (op.handler)());
        }
        router
            .fallback(|| async { ApiError::NotFound("no such API path (see /v1/openapi.json)".into()) })
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            .with_state(self.clone())
    }

    /// Folds in whatever the log has beyond the read model; returns the head.
    pub(crate) async fn refresh(&self) -> Result<u64, StoreError> {
        let head = self.store.head().await?;
        self.refresh_to(head).await
    }

    /// Folds in the log up to at least `head` (known from the head watch, sparing a store read).
    pub(crate) async fn refresh_to(&self, head: u64) -> Result<u64, StoreError> {
        // Readers share the read model; only a log that moved ahead takes the write lock.
        {
            let state = self.state.read().await;
            if state.seq >= head {
                return Ok(state.seq);
            }
        }
        let mut state = self.state.write().await;
        let before = state.seq;
        catch_up(&*self.store, &mut state).await?;
        if state.seq / SNAPSHOT_EVERY > before / SNAPSHOT_EVERY {
            let snapshot = serde_json::to_value(&*state).expect("the read model serializes");
            // A missed snapshot only makes the next start-up replay more of the log.
            if let Err(e) = self.store.save_snapshot(state.seq, snapshot).await {
                tracing::warn!(seq = state.seq, error = %e, "cannot save a snapshot of the read model");
            }
        }
        Ok(state.seq)
    }

    /// After a committed write: fold it in, but never turn a durable write into an error
    /// response (a client would retry and write twice).
    async fn settle(&self) {
        if let Err(e) = self.refresh().await {
            tracing::error!(error = %e, "cannot fold a committed write into the read model");
        }
    }

    /// Follows the log (other writers, e.g. another replica) and expires lapsed leases, until
    /// `stop`.
    pub async fn run_background(self: Shared, stop: CancellationToken) {
        let mut heads = self.store.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = heads.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if let Err(e) = self.refresh().await {
                        tracing::error!(error = %e, "cannot follow the event log");
                    }
                }
                _ = tick.tick() => {
                    self.expire_leases().await;
                    self.proxies.forget_disconnected().await;
                }
            }
        }
    }

    async fn expire_leases(&self) {
        let now = Instant::now();
        let lapsed: Vec<(String, u64)> = {
            let leases = self.leases.lock().await;
            leases
                .iter()
                .filter(|(_, l)| l.owned && l.deadline <= now)
                .map(|(id, l)| (id.clone(), l.version))
                .collect()
        };
        for (id, version) in lapsed {
            let req = AppendRequest {
                aggregate: endpoint_aggregate(&id),
                expected_version: Some(version),
                kind: kind::ENDPOINT_EXPIRED.to_owned(),
                data: json!({ "id": id }),
                actor: "lease-expiry".to_owned(),
                idempotency_key: None,
            };
            let done = match self.store.append(req).await {
                Ok(_) => {
                    tracing::info!(endpoint = %id, "lease expired; endpoint removed");
                    true
                }
                // Re-registered or deregistered meanwhile: that newer event decides.
                Err(StoreError::Conflict { .. }) => true,
                Err(e) => {
                    tracing::error!(endpoint = %id, error = %e, "cannot record a lease expiry; will retry");
                    false
                }
            };
            if done {
                let mut leases = self.leases.lock().await;
                if leases.get(&id).is_some_and(|l| l.version == version && l.deadline <= now) {
                    leases.remove(&id);
                }
            }
        }
        self.settle().await;
    }

    /// Who is calling (401 without a valid token). Knows tokens created through another
    /// replica by catching up with the log when the token is not known yet — only up to the
    /// head the store's watch has announced, so a made-up token costs no store read (it would
    /// be one per unauthenticated request) and hears 401, not 503, while the store is down.
    pub(crate) async fn authenticate(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        match self.admin_token.presented(headers) {
            None => Err(ApiError::Unauthorized),
            Some(Presented::Admin) => Ok(Caller::Admin),
            Some(Presented::Join { id, secret }) => {
                if !self.state.read().await.tokens.contains_key(id) {
                    let followed = *self.store.subscribe().borrow();
                    self.refresh_to(followed).await?;
                }
                let state = self.state.read().await;
                crate::auth::join_token(&state.tokens, id, secret)
                    .map(Caller::Service)
                    .ok_or(ApiError::Unauthorized)
            }
        }
    }

    /// Operations on a registered instance: the admin, or its own service's join token. To a
    /// join token another service's instance looks exactly like one that does not exist, so a
    /// token cannot probe which instances other services have; a sidecar whose lease lapsed
    /// hears 404 and registers again.
    async fn authorize_endpoint(&self, caller: &Caller, id: &str) -> ApiResult<String> {
        let state = self.state.read().await;
        match state.endpoints.get(id) {
            Some(e) if caller.owns(&e.service, &e.namespace) => Ok(caller.actor()),
            _ => Err(ApiError::NotFound(format!(
                "endpoint {id} (not registered for this token's service, or its lease lapsed: register again)"
            ))),
        }
    }
}

/// The caller, proven before any other part of the request is read: handlers take it as their
/// first argument, and axum runs extractors in argument order.
impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, cp: &Shared) -> Result<Self, Self::Rejection> {
        cp.authenticate(&parts.headers).await
    }
}

/// An admin caller (a join token is refused like none), proven before anything else is read.
struct Admin(String);

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, cp: &Shared) -> Result<Self, Self::Rejection> {
        cp.authenticate(&parts.headers).await?.admin().map(Admin)
    }
}

/// `GET /readyz`: ready while the event store answers; otherwise 503 with the reason (and
/// `Retry-After`), so a load balancer sends clients to a replica that can serve them.
async fn readyz(AxumState(cp): AxumState<Shared>) -> ApiResult<&'static str> {
    match tokio::time::timeout(READY_TIMEOUT, cp.refresh()).await {
        Ok(result) => result.map(|_| "ready\n").map_err(ApiError::from),
        Err(_) => Err(ApiError::Store(StoreError::Unavailable {
            context: "not ready".into(),
            cause: format!("the event store did not answer within {READY_TIMEOUT:?}").into(),
        })),
    }
}

async fn catch_up(store: &dyn EventStore, state: &mut State) -> Result<(), StoreError> {
    loop {
        let page = store.events_since(state.seq, 1000).await?;
        if page.is_empty() {
            return Ok(());
        }
        for event in &page {
            state.apply(event)?;
        }
    }
}

fn expected_version(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    match headers.get(axum::http::header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(|s| s.trim_matches('"'))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest("If-Match must be a resource version number".into())),
    }
}

/// The request's `Idempotency-Key`, scoped to the operation so one key cannot replay another
/// operation's result.
fn idempotency_key(headers: &HeaderMap, operation: &str) -> ApiResult<Option<String>> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(key)) if !key.is_empty() && key.len() <= 200 => Ok(Some(format!("{operation}:{key}"))),
        Some(_) => Err(ApiError::BadRequest("Idempotency-Key must be 1-200 visible characters".into())),
    }
}

/// `POST /v1/resources`: a YAML or JSON stream of documents, validated as a whole, appended as
/// one atomic batch (documents identical to what is stored are skipped).
async fn apply(
    Admin(actor): Admin,
    AxumState(cp): AxumState<Shared>,
    headers: HeaderMap,
    body: String,
) -> ApiResult<impl IntoResponse> {
    let applied = cp
        .apply_text(&body, &actor, expected_version(&headers)?, idempotency_key(&headers, "apply")?)
        .await?;
    Ok((StatusCode::OK, Json(json!({ "applied": applied.items, "warnings": applied.warnings }))))
}

/// What an apply did: one entry per document, and the warnings about fields accepted with a
/// caveat (kept without effect, or dropped).
pub struct Applied {
    pub items: Vec<serde_json::Value>,
    pub warnings: Vec<pilotfish_api::Warning>,
}

impl ControlPlane {
    /// Applies a YAML/JSON document stream: validated as a whole, appended as one atomic batch
    /// (documents identical to what is stored are skipped). One entry per document comes back,
    /// with the warnings.
    pub async fn apply_text(
        &self,
        text: &str,
        actor: &str,
        expected: Option<u64>,
        key: Option<String>,
    ) -> ApiResult<Applied> {
        let pilotfish_api::Parsed { resources, warnings } = pilotfish_api::parse("request", text)?;
        if resources.is_empty() {
            return Err(ApiError::BadRequest("the request has no documents".into()));
        }
        if expected.is_some() && resources.len() > 1 {
            return Err(ApiError::BadRequest("If-Match applies to a single document".into()));
        }
        self.refresh().await?;
        let mut batch = Vec::new();
        let mut unchanged = Vec::new();
        {
            let state = self.state.read().await;
            for (i, r) in resources.iter().enumerate() {
                if matches!(r, pilotfish_api::Resource::Sidecar(_)) {
                    return Err(ApiError::BadRequest(format!(
                        "document {}: a Sidecar is one sidecar's local settings, not mesh configuration",
                        i + 1
                    )));
                }
                let m = r.metadata();
                let aggregate = resource_aggregate(r.kind(), &m.namespace, &m.name);
                let document = r.to_json();
                let current = state.resources.get(&aggregate);
                if expected.is_none() && key.is_none() && current.is_some_and(|c| c.document == document) {
                    let version = current.map(|c| c.version);
                    unchanged.push(json!({ "aggregate": aggregate, "version": version, "unchanged": true }));
                    continue;
                }
                batch.push(AppendRequest {
                    aggregate,
                    expected_version: expected,
                    kind: kind::RESOURCE_APPLIED.to_owned(),
                    data: document,
                    actor: actor.to_owned(),
                    idempotency_key: key.as_ref().map(|k| format!("{k}#{i}")),
                });
            }
        }
        let events = if batch.is_empty() { Vec::new() } else { self.store.append_batch(batch).await? };
        self.settle().await;
        let mut applied: Vec<_> = events
            .iter()
            .map(|e| json!({ "aggregate": e.aggregate, "version": e.version, "seq": e.seq }))
            .collect();
        applied.extend(unchanged);
        Ok(Applied { items: applied, warnings })
    }
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
    namespace: Option<String>,
}

async fn list(
    AxumState(cp): AxumState<Shared>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(mut q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(kind) = &q.kind {
        q.kind = Some(canonical_kind(kind)?.to_owned());
    }
    cp.refresh().await?;
    let state = cp.state.read().await;
    let items: Vec<_> = state
        .resources
        .iter()
        .filter(|(aggregate, _)| {
            let mut parts = aggregate.splitn(3, '/');
            let (k, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            q.kind.as_deref().is_none_or(|want| want.eq_ignore_ascii_case(k))
                && q.namespace.as_deref().is_none_or(|want| want == ns)
        })
        .map(|(_, r)| json!({ "version": r.version, "seq": r.seq, "document": r.document }))
        .collect();
    Ok(Json(json!({ "seq": state.seq, "items": items })))
}

async fn get_one(
    AxumState(cp): AxumState<Shared>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    cp.refresh().await?;
    let state = cp.state.read().await;
    let aggregate = resource_aggregate(canonical_kind(&kind)?, &namespace, &name);
    let r = state.resources.get(&aggregate).ok_or(ApiError::NotFound(aggregate.clone()))?;
    Ok(Json(json!({ "version": r.version, "seq": r.seq, "document": r.document })))
}

async fn delete_one(
    Admin(actor): Admin,
    AxumState(cp): AxumState<Shared>,
    headers: HeaderMap,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    cp.refresh().await?;
    let aggregate = resource_aggregate(canonical_kind(&kind)?, &namespace, &name);
    let aggregate_for_key = aggregate.clone();
    let current = cp.state.read().await.resources.get(&aggregate).map(|r| r.version);
    let Some(version) = current else { return Err(ApiError::NotFound(aggregate)) };
    let event = cp
        .store
        .append(AppendRequest {
            aggregate,
            expected_version: Some(expected_version(&headers)?.unwrap_or(version)),
            kind: kind::RESOURCE_DELETED.to_owned(),
            data: serde_json::Value::Null,
            actor,
            idempotency_key: idempotency_key(&headers, &format!("delete {aggregate_for_key}"))?,
        })
        .await?;
    cp.settle().await;
    Ok(Json(json!({ "deleted": event.aggregate, "seq": event.seq })))
}

const KINDS: [&str; 4] = ["Service", "HTTPRoute", "BackendPolicy", "RateLimitPolicy"];

/// `httproute` or `httproutes` → `HTTPRoute`: kinds are case-insensitive in URLs and the CLI.
fn canonical_kind(kind: &str) -> ApiResult<&'static str> {
    KINDS
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(kind) || format!("{k}s").eq_ignore_ascii_case(kind))
        .ok_or_else(|| {
            ApiError::BadRequest(format!("unknown kind {kind:?}: expected one of {}", KINDS.join(", ")))
        })
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

/// `GET /v1/events`: one page of the log after `since`. A page is bounded in events and in bytes
/// (documents can be large); it is read from the store [`PAGE_CHUNK`] events at a time, so a
/// request holds at most `PAGE_BYTES` plus one chunk: about 20 MiB when every event is as large
/// as a request body may be, 4 MiB in practice. The caller pages on with `since` = the last seq
/// it got.
async fn events(
    AxumState(cp): AxumState<Shared>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(PAGE_EVENTS).min(PAGE_EVENTS);
    let mut events = Vec::new();
    let (mut after, mut bytes) = (q.since, 0);
    'page: while events.len() < limit {
        let chunk = cp.store.events_since(after, (limit - events.len()).min(PAGE_CHUNK)).await?;
        if chunk.is_empty() {
            break;
        }
        for event in chunk {
            bytes += serde_json::to_vec(&event.data).map_or(0, |v| v.len());
            if bytes > PAGE_BYTES && !events.is_empty() {
                break 'page;
            }
            after = event.seq;
            events.push(event);
        }
    }
    Ok(Json(json!({ "head": cp.store.head().await?, "events": events })))
}

#[derive(Deserialize)]
struct DiffQuery {
    from: u64,
    to: Option<u64>,
}

async fn diff(
    AxumState(cp): AxumState<Shared>,
    q: Result<Query<DiffQuery>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let head = cp.store.head().await?;
    let to = q.to.unwrap_or(head);
    if q.from > to {
        return Err(ApiError::BadRequest(format!("from ({}) is after to ({to})", q.from)));
    }
    if q.from > head || to > head {
        return Err(ApiError::BadRequest(format!("the log ends at seq {head}")));
    }
    let a = cp.history.at(&*cp.store, q.from).await?;
    let b = cp.history.at(&*cp.store, to).await?;
    Ok(Json(json!({ "from": q.from, "to": to, "changes": a.diff(&b) })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RollbackRequest {
    to_seq: u64,
}

/// `POST /v1/rollback`: new events that restore the resources as they were after `toSeq`.
async fn rollback(
    Admin(actor): Admin,
    AxumState(cp): AxumState<Shared>,
    req: Result<Json<RollbackRequest>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(req) = req.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let head = cp.store.head().await?;
    if req.to_seq > head {
        return Err(ApiError::BadRequest(format!(
            "cannot roll back to seq {}: the log ends at {head}",
            req.to_seq
        )));
    }
    cp.refresh().await?;
    let target = cp.history.at(&*cp.store, req.to_seq).await?;
    let batch = cp.state.read().await.restore(&target, &format!("{actor} (rollback to {})", req.to_seq));
    let events = if batch.is_empty() { Vec::new() } else { cp.store.append_batch(batch).await? };
    cp.settle().await;
    Ok(Json(json!({ "rolledBackTo": req.to_seq, "events": events })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registration {
    service: String,
    #[serde(default)]
    namespace: Option<String>,
    address: SocketAddr,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

async fn register(
    caller: Caller,
    AxumState(cp): AxumState<Shared>,
    headers: HeaderMap,
    reg: Result<Json<Registration>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(reg) = reg.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let namespace_of = reg.namespace.clone().unwrap_or_else(|| "default".into());
    let actor = caller.act_for(&reg.service, &namespace_of)?;
    let ttl = reg.ttl_seconds.unwrap_or(DEFAULT_TTL);
    if !(1..=3600).contains(&ttl) {
        return Err(ApiError::BadRequest("ttlSeconds must be between 1 and 3600".into()));
    }
    let namespace = reg.namespace.unwrap_or_else(|| "default".into());
    for (field, value) in [("service", &reg.service), ("namespace", &namespace)] {
        pilotfish_api::document::validate_name(value)
            .map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))?;
    }
    // Names are DNS labels (no dots), so `service.namespace-address` is unambiguous.
    let id = format!("{}.{namespace}-{}", reg.service, reg.address).replace([':', '[', ']'], "-");
    let record = EndpointRecord {
        id: id.clone(),
        service: reg.service,
        namespace,
        address: reg.address,
        identity: reg.identity,
        labels: reg.labels,
        ttl_seconds: ttl,
    };
    let mut leases = cp.leases.lock().await;
    let event = cp
        .store
        .append(AppendRequest {
            aggregate: endpoint_aggregate(&id),
            expected_version: None,
            kind: kind::ENDPOINT_REGISTERED.to_owned(),
            data: serde_json::to_value(&record).expect("records serialize"),
            actor,
            idempotency_key: idempotency_key(&headers, "register")?,
        })
        .await?;
    // A replayed key answers with the registration it first made.
    let id = event.data["id"].as_str().unwrap_or(&id).to_owned();
    if event.kind == kind::ENDPOINT_REGISTERED {
        let ttl = Duration::from_secs(event.data["ttlSeconds"].as_u64().unwrap_or(ttl));
        let lease = Lease { deadline: Instant::now() + ttl, ttl, version: event.version, owned: true };
        leases.insert(id.clone(), lease);
    }
    drop(leases);
    cp.settle().await;
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "ttlSeconds": ttl, "seq": event.seq }))))
}

async fn heartbeat(
    caller: Caller,
    AxumState(cp): AxumState<Shared>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    cp.refresh().await?;
    cp.authorize_endpoint(&caller, &id).await?;
    // The read model decides whether the instance is still registered (another replica may
    // have expired or removed it); the lease here only tracks when it was last heard from.
    let registered = cp.state.read().await.endpoints.get(&id).map(|e| Duration::from_secs(e.ttl_seconds));
    let mut leases = cp.leases.lock().await;
    let Some(ttl) = registered else {
        leases.remove(&id);
        return Err(ApiError::NotFound(format!("endpoint {id} (its lease lapsed: register again)")));
    };
    let version = cp.store.aggregate_version(&endpoint_aggregate(&id)).await?;
    let lease =
        leases.entry(id.clone()).or_insert(Lease { deadline: Instant::now(), ttl, version, owned: true });
    lease.deadline = Instant::now() + lease.ttl;
    lease.owned = true;
    Ok(Json(json!({ "id": id, "ttlSeconds": lease.ttl.as_secs() })))
}

async fn deregister(
    caller: Caller,
    AxumState(cp): AxumState<Shared>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    cp.refresh().await?;
    let actor = cp.authorize_endpoint(&caller, &id).await?;
    let mut leases = cp.leases.lock().await;
    let Some(lease) = leases.remove(&id) else {
        return Err(ApiError::NotFound(format!("endpoint {id}")));
    };
    let result = cp
        .store
        .append(AppendRequest {
            aggregate: endpoint_aggregate(&id),
            expected_version: None,
            kind: kind::ENDPOINT_DEREGISTERED.to_owned(),
            data: json!({ "id": id }),
            actor,
            idempotency_key: None,
        })
        .await;
    let event = match result {
        Ok(event) => event,
        Err(e) => {
            leases.insert(id, lease);
            return Err(e.into());
        }
    };
    drop(leases);
    cp.settle().await;
    Ok(Json(json!({ "deregistered": id, "seq": event.seq })))
}

#[derive(Deserialize)]
struct EndpointQuery {
    service: Option<String>,
}

async fn list_endpoints(
    AxumState(cp): AxumState<Shared>,
    q: Result<Query<EndpointQuery>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    cp.refresh().await?;
    let state = cp.state.read().await;
    let leases = cp.leases.lock().await;
    let now = Instant::now();
    let items: Vec<_> = state
        .endpoints
        .values()
        .filter(|e| {
            q.service
                .as_deref()
                .is_none_or(|s| s == e.service || s == format!("{}.{}", e.service, e.namespace))
        })
        .map(|e| {
            let remaining =
                leases.get(&e.id).map(|l| l.deadline.saturating_duration_since(now).as_secs_f64());
            json!({ "endpoint": e, "leaseRemainingSeconds": remaining })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn metrics(AxumState(cp): AxumState<Shared>) -> ApiResult<impl IntoResponse> {
    let (seq, resources, endpoints) = {
        let state = cp.state.read().await;
        (state.seq, state.resources.len(), state.endpoints.len())
    };
    let proxies = cp.proxies.list().await;
    let connected = proxies.iter().filter(|p| p.connected).count();
    let current = proxies.iter().filter(|p| p.connected && p.acked_version == seq).count();
    let pushes = cp.proxies.pushes.load(std::sync::atomic::Ordering::Relaxed);
    let mut text = String::new();
    for (name, kind, help, value) in [
        ("pilotfish_cp_event_log_seq", "gauge", "Last sequence number in the event log", seq),
        ("pilotfish_cp_resources", "gauge", "Resources in force", resources as u64),
        ("pilotfish_cp_endpoints", "gauge", "Registered endpoints with a live lease", endpoints as u64),
        ("pilotfish_cp_connected_proxies", "gauge", "Sidecars holding a push stream", connected as u64),
        (
            "pilotfish_cp_current_proxies",
            "gauge",
            "Connected sidecars that acked the current version",
            current as u64,
        ),
        ("pilotfish_cp_pushes_total", "counter", "Snapshots pushed to sidecars", pushes),
    ] {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

#[derive(Deserialize)]
struct PushQuery {
    id: String,
    service: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    /// The version the sidecar already has (0: none).
    #[serde(default)]
    version: u64,
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// `GET /v1/push`: the sidecar's snapshot stream (newline-delimited JSON). The proxy is known
/// by its id under the service the caller's token may act for (see `push`).
async fn push(
    caller: Caller,
    AxumState(cp): AxumState<Shared>,
    q: Result<Query<PushQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let key = ProxyKey::new(&q.service, &q.namespace, &q.id).map_err(ApiError::BadRequest)?;
    caller.act_for(&key.service, &key.namespace)?;
    let generation = cp.proxies.connected(&key, q.version).await?;
    let (tx, body) = http_body_util::channel::Channel::<bytes::Bytes, std::convert::Infallible>::new(1);
    tokio::spawn(push::stream(cp.clone(), key, generation, q.version, tx));
    let mut res = Response::new(axum::body::Body::new(body));
    res.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, "application/x-ndjson".parse().expect("static"));
    Ok(res)
}

#[derive(Deserialize)]
struct Ack {
    version: u64,
    #[serde(default)]
    error: Option<String>,
}

/// Which service's proxy an ACK is for: the one its push stream named. A join token's own
/// service when left out, as sidecars one version back do (they predate the parameter).
#[derive(Deserialize)]
struct AckQuery {
    service: Option<String>,
    namespace: Option<String>,
}

impl AckQuery {
    fn key(self, caller: &Caller, id: &str) -> ApiResult<ProxyKey> {
        let (service, namespace) =
            match (self.service, caller) {
                (Some(service), _) => (service, self.namespace.unwrap_or_else(default_namespace)),
                (None, Caller::Service(t)) => {
                    (t.service.clone(), self.namespace.unwrap_or_else(|| t.namespace.clone()))
                }
                (None, Caller::Admin) => return Err(ApiError::BadRequest(
                    "service is required when the admin token ACKs: add ?service=NAME (the proxy's service)"
                        .into(),
                )),
            };
        ProxyKey::new(&service, &namespace, id).map_err(ApiError::BadRequest)
    }
}

/// `POST /v1/proxies/{id}/ack[?service=&namespace=]`: the sidecar's verdict on a version (`error`
/// set: a NACK), for its proxy under that service.
async fn ack(
    caller: Caller,
    AxumState(cp): AxumState<Shared>,
    Path(id): Path<String>,
    q: Result<Query<AckQuery>, QueryRejection>,
    ack: Result<Json<Ack>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let key = q.key(&caller, &id)?;
    caller.act_for(&key.service, &key.namespace)?;
    let Json(ack) = ack.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(error) = &ack.error {
        tracing::warn!(proxy = %id, service = %key.service, version = ack.version, error = %error, "sidecar rejected a configuration");
    }
    if !cp.proxies.acknowledged(&key, ack.version, ack.error).await {
        return Err(ApiError::NotFound(format!("proxy {id} of {}.{}", key.service, key.namespace)));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/proxies`: every sidecar, the version it acknowledged, and whether that is current.
async fn proxies(AxumState(cp): AxumState<Shared>) -> ApiResult<impl IntoResponse> {
    let head = cp.refresh().await?;
    let items: Vec<_> = cp
        .proxies
        .list()
        .await
        .into_iter()
        .map(|p| {
            let current = p.acked_version == head;
            let mut v = serde_json::to_value(&p).expect("statuses serialize");
            v["current"] = json!(current);
            v
        })
        .collect();
    Ok(Json(json!({ "version": head, "items": items })))
}

/// One API operation: its route, its handler and what the OpenAPI document says of it.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Needs `Authorization: Bearer <admin token>`.
    pub admin: bool,
    /// Query parameters: name, description.
    pub query: &'static [(&'static str, &'static str)],
    /// The request body's media type and description, if it has one.
    pub body: Option<(&'static str, &'static str)>,
    handler: fn() -> axum::routing::MethodRouter<Shared>,
}

pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "post",
        path: "/v1/resources",
        summary: "Apply a YAML/JSON document stream: validated whole, appended as one atomic batch",
        admin: true,
        query: &[],
        body: Some(("application/yaml", "Documents (Service, HTTPRoute, BackendPolicy, RateLimitPolicy); headers If-Match, Idempotency-Key")),
        handler: || post(apply),
    },
    Operation {
        method: "get",
        path: "/v1/resources",
        summary: "List resources",
        admin: false,
        query: &[("kind", "Filter by kind"), ("namespace", "Filter by namespace")],
        body: None,
        handler: || get(list),
    },
    Operation {
        method: "get",
        path: "/v1/resources/{kind}/{namespace}/{name}",
        summary: "One resource, with its version",
        admin: false,
        query: &[],
        body: None,
        handler: || get(get_one),
    },
    Operation {
        method: "delete",
        path: "/v1/resources/{kind}/{namespace}/{name}",
        summary: "Delete a resource (If-Match: expected version)",
        admin: true,
        query: &[],
        body: None,
        handler: || axum::routing::delete(delete_one),
    },
    Operation {
        method: "get",
        path: "/v1/events",
        summary: "The event log after a sequence number",
        admin: false,
        query: &[
            ("since", "Events after this seq (default 0)"),
            ("limit", "At most this many (default and most: 1000; a page also stops at about 4 MiB)"),
        ],
        body: None,
        handler: || get(events),
    },
    Operation {
        method: "get",
        path: "/v1/diff",
        summary: "What changed in the configuration between two points of the log",
        admin: false,
        query: &[("from", "Earlier seq"), ("to", "Later seq (default: head)")],
        body: None,
        handler: || get(diff),
    },
    Operation {
        method: "post",
        path: "/v1/rollback",
        summary: "Restore the configuration as it was after a seq, as new events",
        admin: true,
        query: &[],
        body: Some(("application/json", "{\"toSeq\": N}")),
        handler: || post(rollback),
    },
    Operation {
        method: "post",
        path: "/v1/endpoints",
        summary: "Register a service instance under a lease",
        admin: true,
        query: &[],
        body: Some(("application/json", "{service, namespace?, address, identity?, labels?, ttlSeconds?}")),
        handler: || post(register),
    },
    Operation {
        method: "get",
        path: "/v1/endpoints",
        summary: "Registered instances and their remaining leases",
        admin: false,
        query: &[("service", "Filter by service (name or name.namespace)")],
        body: None,
        handler: || get(list_endpoints),
    },
    Operation {
        method: "put",
        path: "/v1/endpoints/{id}/heartbeat",
        summary: "Renew an instance's lease",
        admin: true,
        query: &[],
        body: None,
        handler: || put(heartbeat),
    },
    Operation {
        method: "delete",
        path: "/v1/endpoints/{id}",
        summary: "Deregister an instance",
        admin: true,
        query: &[],
        body: None,
        handler: || axum::routing::delete(deregister),
    },
    Operation {
        method: "get",
        path: "/v1/push",
        summary: "A sidecar's configuration stream (newline-delimited JSON snapshots)",
        admin: true,
        query: &[
            ("id", "The sidecar's id"),
            ("service", "Its service"),
            ("namespace", "Its namespace (default: default)"),
            ("version", "The version it already has"),
        ],
        body: None,
        handler: || get(push),
    },
    Operation {
        method: "post",
        path: "/v1/proxies/{id}/ack",
        summary: "ACK (or NACK, with error) a pushed version",
        admin: true,
        query: &[
            ("service", "The service the proxy connected as (default: the join token's; required with the admin token)"),
            ("namespace", "Its namespace (default: the join token's, else default)"),
        ],
        body: Some(("application/json", "{version, error?}")),
        handler: || post(ack),
    },
    Operation {
        method: "post",
        path: "/v1/tokens",
        summary: "Create a join token for one service's sidecars (shown once)",
        admin: true,
        query: &[],
        body: Some(("application/json", "{service, namespace?}")),
        handler: || post(create_token),
    },
    Operation {
        method: "get",
        path: "/v1/proxies",
        summary: "Every sidecar: acked version, whether it is current, its last NACK",
        admin: false,
        query: &[],
        body: None,
        handler: || get(proxies),
    },
];

/// The OpenAPI 3.1 document, generated from [`OPERATIONS`].
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for op in OPERATIONS {
        let mut parameters: Vec<serde_json::Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        parameters.extend(op.query.iter().map(|(name, description)| {
            json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } })
        }));
        let mut operation = json!({
            "summary": op.summary,
            "parameters": parameters,
            "responses": {
                "200": { "description": "OK" },
                "400": { "description": "Bad request (JSON error body with the reason)" },
                "404": { "description": "Not found" },
                "503": { "description": "The event store is unreachable; retry after Retry-After seconds" },
            },
        });
        if op.admin {
            operation["security"] = json!([{ "bearer": [] }]);
            operation["responses"]["401"] = json!({ "description": "Missing or wrong bearer token" });
            operation["responses"]["409"] = json!({ "description": "Version conflict" });
        }
        if let Some((media, description)) = op.body {
            operation["requestBody"] =
                json!({ "required": true, "description": description, "content": { media: {} } });
        }
        let entry = paths.entry(op.path).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Pilotfish control plane", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
    })
}

#[derive(Deserialize)]
struct TokenRequest {
    service: String,
    #[serde(default = "default_namespace")]
    namespace: String,
}

/// `POST /v1/tokens`: a join token for one service's sidecars. The secret is returned once;
/// the log keeps only its hash.
async fn create_token(
    Admin(actor): Admin,
    AxumState(cp): AxumState<Shared>,
    req: Result<Json<TokenRequest>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(req) = req.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    for (field, value) in [("service", &req.service), ("namespace", &req.namespace)] {
        pilotfish_api::document::validate_name(value)
            .map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))?;
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let record = crate::model::TokenRecord {
        id: id.clone(),
        service: req.service.clone(),
        namespace: req.namespace.clone(),
        secret_sha256: crate::auth::sha256_hex(secret.as_bytes()),
    };
    let event = cp
        .store
        .append(AppendRequest {
            aggregate: format!("Token/{id}"),
            expected_version: Some(0),
            kind: kind::TOKEN_CREATED.to_owned(),
            data: serde_json::to_value(&record).expect("records serialize"),
            actor,
            idempotency_key: None,
        })
        .await?;
    cp.settle().await;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "token": format!("{id}.{secret}"), "service": req.service, "namespace": req.namespace, "seq": event.seq }),
        ),
    ))
}

#[cfg(test)]
mod tests;
