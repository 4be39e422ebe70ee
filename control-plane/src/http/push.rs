//! `/v1/push`, `/v1/proxies`: the sidecars' configuration streams, their ACK/NACKs, and every
//! sidecar's sync status.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{
    ApiError, BadRequest, Forbidden, NotFound, PayloadTooLarge, TooManyRequests, Unauthorized, Unavailable,
};
use super::extract::{int64, Json, Path, Query, Reader, Shared};
use crate::core::Caller;
use crate::push::stream;
use pilotfish_api::wire::{Ack, AckQuery, ProxyList, PushLine, PushQuery};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(push)).routes(routes!(ack)).routes(routes!(proxies))
}

/// A sidecar's configuration stream
///
/// Newline-delimited JSON: one `PushLine` per version (the whole configuration), empty
/// lines as keepalives; to a sidecar of protocol 2 or later also a `TapLine`
/// (`{"protocol":2,"tap":{"filters":[...]}}`) whenever the taps open on its service change. The proxy is known by its id under the service the caller's token may
/// act for.
#[utoipa::path(
    get, path = "/v1/push", tag = "push",
    params(PushQuery),
    responses(
        (status = 200, description = "The stream: one PushLine per line", body = PushLine, content_type = "application/x-ndjson"),
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
    int64("version", q.version)?;
    let connection = cp.connect(&caller, &q).await?;
    let cp = cp.clone();
    Ok(crate::ndjson::respond(|tx| stream::stream(cp, connection, tx)))
}

/// ACK (or, with `error`, NACK) a pushed version
#[utoipa::path(
    post, path = "/v1/proxies/{id}/ack", tag = "push",
    params(
        ("id" = String, Path, description = "The sidecar's id", min_length = 1, max_length = 253, pattern = r"^[!-~]+$"),
        AckQuery,
    ),
    request_body = Ack,
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
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
    cp.acknowledge(&caller, &id, q, ack).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every sidecar: acked version, whether it is current, its last NACK
#[utoipa::path(
    get, path = "/v1/proxies", tag = "push",
    responses(
        (status = 200, description = "The sidecars", body = ProxyList),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn proxies(_: Reader, State(cp): State<Shared>) -> Result<axum::Json<ProxyList>, ApiError> {
    Ok(axum::Json(cp.proxy_list().await?))
}
