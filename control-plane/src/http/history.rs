//! `/v1/events`, `/v1/diff`, `/v1/rollback`: the log, what changed between two points of it,
//! and going back to one.

use axum::extract::State;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{
    ApiError, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
};
use super::extract::{int64, Admin, Json, Query, Reader, Shared};
use pilotfish_api::wire::{Diff, DiffQuery, EventPage, EventsQuery, RollbackRequest, RollbackResult};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(events)).routes(routes!(diff)).routes(routes!(rollback))
}

/// The event log after a sequence number, one page
#[utoipa::path(
    get, path = "/v1/events", tag = "history",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of the log", body = EventPage),
        (status = 401, response = Unauthorized),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn events(
    _: Reader,
    State(cp): State<Shared>,
    Query(q): Query<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = q.limit.map(|l| int64("limit", l)).transpose()?;
    let limit = limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    Ok(axum::Json(cp.events(int64("since", q.since)?, limit).await?))
}

/// What changed in the configuration between two points of the log
#[utoipa::path(
    get, path = "/v1/diff", tag = "history",
    params(DiffQuery),
    responses(
        (status = 200, description = "The changed resources, before and after", body = Diff),
        (status = 401, response = Unauthorized),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn diff(
    _: Reader,
    State(cp): State<Shared>,
    Query(q): Query<DiffQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let to = q.to.map(|to| int64("to", to)).transpose()?;
    Ok(axum::Json(cp.diff(int64("from", q.from)?, to).await?))
}

/// Restore the configuration as it was after a seq, as new events
#[utoipa::path(
    post, path = "/v1/rollback", tag = "history",
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "Rolled back", body = RollbackResult),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 404, response = NotFound),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn rollback(
    Admin(actor): Admin,
    State(cp): State<Shared>,
    Json(req): Json<RollbackRequest>,
) -> Result<axum::Json<RollbackResult>, ApiError> {
    Ok(axum::Json(cp.rollback(&actor, req.to_seq).await?))
}
