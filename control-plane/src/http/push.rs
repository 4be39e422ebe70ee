//! `/v1/push`, `/v1/proxies`: the sidecars' configuration streams, their ACK/NACKs, and every
//! sidecar's sync status.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized, Unavailable};
use super::extract::{Json, Path, Query, Shared};
use crate::core::Caller;
use crate::push::stream;
use crate::wire::{Ack, ProxyList, SnapshotLine};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(push)).routes(routes!(ack)).routes(routes!(proxies))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PushQuery {
    /// The sidecar's id (1-253 visible ASCII characters).
    #[param(min_length = 1, max_length = 253, pattern = r"^[!-~]+$")]
    id: String,
    /// Its service.
    #[param(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    service: String,
    /// Its namespace.
    #[serde(default = "default_namespace")]
    #[param(default = "default", pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    namespace: String,
    /// The version it already has (0: none).
    #[serde(default)]
    #[param(default = 0)]
    version: u64,
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// A sidecar's configuration stream
///
/// Newline-delimited JSON: one `SnapshotLine` per version (the whole configuration), empty
/// lines as keepalives. The proxy is known by its id under the service the caller's token may
/// act for.
#[utoipa::path(
    get, path = "/v1/push", tag = "push",
    params(PushQuery),
    responses(
        (status = 200, description = "The stream: one SnapshotLine per line", body = SnapshotLine, content_type = "application/x-ndjson"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn push(
    caller: Caller,
    State(cp): State<Shared>,
    Query(q): Query<PushQuery>,
) -> Result<Response, ApiError> {
    let connection = cp.connect(&caller, (&q.id, &q.service, &q.namespace), q.version).await?;
    let (tx, body) = http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
    tokio::spawn(stream::stream(cp.clone(), connection, tx));
    let mut res = Response::new(Body::new(body));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(res)
}

/// Which service's proxy an ACK is for.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AckQuery {
    /// The service the proxy connected as (default: the join token's; required with the admin token).
    service: Option<String>,
    /// Its namespace (default: the join token's, else `default`).
    namespace: Option<String>,
}

/// ACK (or, with `error`, NACK) a pushed version
#[utoipa::path(
    post, path = "/v1/proxies/{id}/ack", tag = "push",
    params(("id" = String, Path, description = "The sidecar's id"), AckQuery),
    request_body = Ack,
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = [])),
)]
async fn ack(
    caller: Caller,
    State(cp): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<AckQuery>,
    Json(ack): Json<Ack>,
) -> Result<impl IntoResponse, ApiError> {
    cp.acknowledge(&caller, &id, (q.service, q.namespace), ack).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every sidecar: acked version, whether it is current, its last NACK
#[utoipa::path(
    get, path = "/v1/proxies", tag = "push",
    responses(
        (status = 200, description = "The sidecars", body = ProxyList),
        (status = 503, response = Unavailable),
    ),
)]
async fn proxies(State(cp): State<Shared>) -> Result<axum::Json<ProxyList>, ApiError> {
    Ok(axum::Json(cp.proxy_list().await?))
}
