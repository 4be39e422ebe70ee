//! `/v1/events`, `/v1/diff`, `/v1/rollback`: the log, what changed between two points of it,
//! and going back to one.

use axum::extract::State;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, BadRequest, Conflict, Unauthorized, Unavailable};
use super::extract::{Admin, Json, Query, Shared};
use crate::wire::{DiffResult, EventPage, RollbackRequest, RollbackResult};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(events)).routes(routes!(diff)).routes(routes!(rollback))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Events after this seq.
    #[serde(default)]
    #[param(default = 0)]
    since: u64,
    /// At most this many (default and most: 1000; a page also stops at about 4 MiB).
    limit: Option<u64>,
}

/// The event log after a sequence number, one page
#[utoipa::path(
    get, path = "/v1/events", tag = "history",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of the log", body = EventPage),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    ),
)]
async fn events(
    State(cp): State<Shared>,
    Query(q): Query<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = q.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    Ok(axum::Json(cp.events(q.since, limit).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DiffQuery {
    /// The earlier seq.
    from: u64,
    /// The later seq (default: the head).
    to: Option<u64>,
}

/// What changed in the configuration between two points of the log
#[utoipa::path(
    get, path = "/v1/diff", tag = "history",
    params(DiffQuery),
    responses(
        (status = 200, description = "The changed resources, before and after", body = DiffResult),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    ),
)]
async fn diff(State(cp): State<Shared>, Query(q): Query<DiffQuery>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(cp.diff(q.from, q.to).await?))
}

/// Restore the configuration as it was after a seq, as new events
#[utoipa::path(
    post, path = "/v1/rollback", tag = "history",
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "Rolled back", body = RollbackResult),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
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
