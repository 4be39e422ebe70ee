//! `/v1/tokens`: join tokens for one service's sidecars.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, BadRequest, Forbidden, PayloadTooLarge, Unauthorized, Unavailable};
use super::extract::{Admin, Json, Shared};
use pilotfish_api::wire::{JoinToken, TokenRequest};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(create_token))
}

/// Create a join token for one service's sidecars (its secret is shown once)
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "Created", body = JoinToken),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn create_token(
    Admin(actor): Admin,
    State(cp): State<Shared>,
    Json(req): Json<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let token: JoinToken = cp.create_token(actor, req).await?;
    Ok((StatusCode::CREATED, axum::Json(token)))
}
