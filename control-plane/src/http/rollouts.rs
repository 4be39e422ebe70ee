//! `/v1/rollouts`: each rollout's status as its saga stands, and an admin's actions on it.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized, Unavailable};
use super::extract::{Admin, Path, Reader, Shared};
use pilotfish_api::wire::{RolloutAction, RolloutList, RolloutStatus};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(get)).routes(routes!(act))
}

/// Every rollout's status
///
/// Its phase, step, the weights it wrote, the latest verdicts with their numbers, and why it
/// is paused or aborted.
#[utoipa::path(
    get, path = "/v1/rollouts", tag = "rollouts",
    responses(
        (status = 200, description = "One status per Rollout", body = RolloutList),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn list(_: Reader, State(cp): State<Shared>) -> Result<axum::Json<RolloutList>, ApiError> {
    Ok(axum::Json(cp.rollouts().await?))
}

/// One rollout's status
#[utoipa::path(
    get, path = "/v1/rollouts/{namespace}/{name}", tag = "rollouts",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The rollout's status", body = RolloutStatus),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn get(
    _: Reader,
    State(cp): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<axum::Json<RolloutStatus>, ApiError> {
    Ok(axum::Json(cp.rollout(&namespace, &name).await?))
}

/// Pause, resume, abort or promote a rollout
///
/// `pause` holds the step and weights; `resume` goes on (after an abort: from the first step);
/// `abort` compensates every completed step as `rollback.mode` says; `promote` puts the canary
/// at 100% now. An action the rollout's phase does not allow is 409, saying why.
#[utoipa::path(
    post, path = "/v1/rollouts/{namespace}/{name}/{action}", tag = "rollouts",
    params(("namespace" = String, Path), ("name" = String, Path), ("action" = RolloutAction, Path)),
    responses(
        (status = 200, description = "The rollout's status after the action", body = RolloutStatus),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn act(
    Admin(actor): Admin,
    State(cp): State<Shared>,
    Path((namespace, name, action)): Path<(String, String, RolloutAction)>,
) -> Result<axum::Json<RolloutStatus>, ApiError> {
    Ok(axum::Json(cp.rollout_action(&actor, &namespace, &name, action).await?))
}
