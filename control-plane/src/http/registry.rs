//! `/v1/endpoints`: register service instances under a lease, renew, deregister, list.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{
    ApiError, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
};
use super::extract::{IdempotencyKey, Json, Path, Query, Reader, Shared};
use crate::core::Caller;
use pilotfish_api::wire::{Deregistered, EndpointList, EndpointQuery, Heartbeat, Registered, Registration};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(register, list_endpoints))
        .routes(routes!(heartbeat))
        .routes(routes!(deregister))
}

/// Register a service instance under a lease
#[utoipa::path(
    post, path = "/v1/endpoints", tag = "registry",
    request_body = Registration,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key answers with the first registration", min_length = 1, max_length = 200, pattern = r"^[\t -~]+$"),
    ),
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn register(
    caller: Caller,
    State(cp): State<Shared>,
    IdempotencyKey(key): IdempotencyKey,
    Json(reg): Json<Registration>,
) -> Result<impl IntoResponse, ApiError> {
    let registered: Registered = cp.register(&caller, reg, key.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(registered)))
}

/// Registered instances and their remaining leases
#[utoipa::path(
    get, path = "/v1/endpoints", tag = "registry",
    params(EndpointQuery),
    responses(
        (status = 200, description = "The registered instances", body = EndpointList),
        (status = 401, response = Unauthorized),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn list_endpoints(
    _: Reader,
    State(cp): State<Shared>,
    Query(q): Query<EndpointQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(cp.endpoints(q.service.as_deref()).await?))
}

/// Renew an instance's lease
#[utoipa::path(
    put, path = "/v1/endpoints/{id}/heartbeat", tag = "registry",
    params(("id" = String, Path, description = "The id registration returned")),
    responses(
        (status = 200, description = "Renewed", body = Heartbeat),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn heartbeat(
    caller: Caller,
    State(cp): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<Heartbeat>, ApiError> {
    Ok(axum::Json(cp.heartbeat(&caller, &id).await?))
}

/// Deregister an instance
#[utoipa::path(
    delete, path = "/v1/endpoints/{id}", tag = "registry",
    params(("id" = String, Path, description = "The id registration returned")),
    responses(
        (status = 200, description = "Deregistered", body = Deregistered),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn deregister(
    caller: Caller,
    State(cp): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<Deregistered>, ApiError> {
    Ok(axum::Json(cp.deregister(&caller, &id).await?))
}
