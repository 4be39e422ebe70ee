//! `POST /inject`: the mutating admission webhook (see [`crate::inject::admission`]).
//! Unauthenticated, as the API server calls it with no credential of ours, and it changes
//! no state: it answers what the injection of the object in the request would be.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{BadRequest, PayloadTooLarge};
use super::extract::{Json, Shared};
use crate::inject::admission::{AdmissionReview, AdmissionReviewResponse};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(inject))
}

/// Inject the sidecar: the mutating admission webhook
///
/// An `AdmissionReview` (admission.k8s.io/v1) in; the same review with its `response` out. A
/// created Pod (or workload) that should get the sidecar is allowed with a base64 JSONPatch
/// that adds it, exactly as `pilotfish inject` does; one whose `pilotfish.io/*` annotations
/// cannot be honoured is denied with the reason; anything else is allowed unchanged.
#[utoipa::path(
    post, path = "/inject", tag = "kubernetes",
    request_body = AdmissionReview,
    responses(
        (status = 200, description = "The review's response", body = AdmissionReviewResponse),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
    ),
)]
async fn inject(
    State(cp): State<Shared>,
    Json(review): Json<AdmissionReview>,
) -> axum::Json<AdmissionReviewResponse> {
    axum::Json(cp.injector().review(review, cp.namespace_annotations()))
}
