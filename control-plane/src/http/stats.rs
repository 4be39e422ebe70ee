//! `/v1/stats`, `/v1/proxies/{id}/stats`: the mesh's golden metrics, and the sidecars'
//! telemetry reports they are computed from.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, BadRequest, Forbidden, PayloadTooLarge, Unauthorized, Unavailable};
use super::extract::{Json, Path, Query, Shared};
use crate::core::Caller;
use pilotfish_api::wire::{AckQuery, StatsList, StatsQuery, StatsReport};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(report)).routes(routes!(stats))
}

/// A sidecar's telemetry since its previous report
///
/// Per-edge counts (requests, successes, a latency histogram, TCP). The edges' source is the
/// service the caller's token acts for, whatever the report says.
#[utoipa::path(
    post, path = "/v1/proxies/{id}/stats", tag = "stats",
    params(
        ("id" = String, Path, description = "The sidecar's id", min_length = 1, max_length = 253, pattern = r"^[!-~]+$"),
        AckQuery,
    ),
    request_body = StatsReport,
    responses(
        (status = 204, description = "Folded in"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn report(
    caller: Caller,
    State(cp): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<AckQuery>,
    Json(report): Json<StatsReport>,
) -> Result<impl IntoResponse, ApiError> {
    cp.report_stats(&caller, &id, q, report)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The mesh's golden metrics over a window, by service, edge or route
///
/// Requests, success rate, requests per second and latency quantiles (from the merged
/// histograms), TCP connections and bytes, and for services how many sidecars report.
#[utoipa::path(
    get, path = "/v1/stats", tag = "stats",
    params(StatsQuery),
    responses(
        (status = 200, description = "One row per service, edge or route", body = StatsList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn stats(
    caller: Caller,
    State(cp): State<Shared>,
    Query(q): Query<StatsQuery>,
) -> Result<axum::Json<StatsList>, ApiError> {
    Ok(axum::Json(cp.stats(&caller, q)?))
}
