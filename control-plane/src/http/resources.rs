//! `/v1/resources`: apply a document stream, list, get and delete resources.

use axum::extract::State;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::doc::KindName;
use super::error::{
    ApiError, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
};
use super::extract::{Admin, IdempotencyKey, IfMatch, Path, Query, Reader, Shared, Text};
use pilotfish_api::wire::{ApplyResult, ApplyWarning, Deleted, ListQuery, ResourceItem, ResourceList};
use pilotfish_api::Resource;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(apply, list_resources)).routes(routes!(get_resource, delete_resource))
}

/// Apply a YAML/JSON document stream: validated whole, appended as one atomic batch
///
/// Documents identical to what is stored are skipped (`unchanged`).
#[utoipa::path(
    post, path = "/v1/resources", tag = "resources",
    request_body(
        description = "A document stream: YAML documents separated by `---` (JSON is YAML, so JSON documents too), each a `Resource` (Service, HTTPRoute, BackendPolicy, RateLimitPolicy, AuthorizationPolicy, Rollout); as `application/json`, one `Resource`",
        content((String = "application/yaml"), (Resource = "application/json")),
    ),
    params(
        ("If-Match" = Option<u64>, Header, description = "The version the (single) document's resource must be at"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key answers with the first result", min_length = 1, max_length = 200, pattern = r"^[\t -~]+$"),
    ),
    responses(
        (status = 200, description = "Applied", body = ApplyResult),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn apply(
    Admin(actor): Admin,
    State(cp): State<Shared>,
    IfMatch(expected): IfMatch,
    IdempotencyKey(key): IdempotencyKey,
    Text(body): Text,
) -> Result<axum::Json<ApplyResult>, ApiError> {
    let applied = cp.apply(&actor, &body, expected, key.as_deref()).await?;
    let warnings = applied.warnings.iter().map(ApplyWarning::from).collect();
    Ok(axum::Json(ApplyResult { applied: applied.items, warnings }))
}

/// List resources
#[utoipa::path(
    get, path = "/v1/resources", tag = "resources",
    params(ListQuery),
    responses(
        (status = 200, description = "The resources in force", body = ResourceList),
        (status = 401, response = Unauthorized),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn list_resources(
    _: Reader,
    State(cp): State<Shared>,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(cp.list(q.kind.as_deref(), q.namespace.as_deref()).await?))
}

/// One resource, with its version
#[utoipa::path(
    get, path = "/v1/resources/{kind}/{namespace}/{name}", tag = "resources",
    params(
        ("kind" = KindName, Path),
        ("namespace" = String, Path),
        ("name" = String, Path),
    ),
    responses(
        (status = 200, description = "The resource", body = ResourceItem),
        (status = 401, response = Unauthorized),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn get_resource(
    _: Reader,
    State(cp): State<Shared>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(cp.get(&kind, &namespace, &name).await?))
}

/// Delete a resource
#[utoipa::path(
    delete, path = "/v1/resources/{kind}/{namespace}/{name}", tag = "resources",
    params(
        ("kind" = KindName, Path),
        ("namespace" = String, Path),
        ("name" = String, Path),
        ("If-Match" = Option<u64>, Header, description = "The version the resource must be at"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key answers with the first result", min_length = 1, max_length = 200, pattern = r"^[\t -~]+$"),
    ),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn delete_resource(
    Admin(actor): Admin,
    State(cp): State<Shared>,
    IfMatch(expected): IfMatch,
    IdempotencyKey(key): IdempotencyKey,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let deleted = cp.delete(actor, (&kind, &namespace, &name), expected, key.as_deref()).await?;
    Ok(axum::Json::<Deleted>(deleted))
}
