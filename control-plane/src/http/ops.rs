//! The control plane's own endpoints: liveness, readiness and metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Unavailable};
use super::extract::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// Live: the process serves
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Live", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the event store answers
///
/// Otherwise 503 with the reason (and `Retry-After`), so a load balancer sends clients to a
/// replica that can serve them.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, response = Unavailable),
    ),
)]
async fn readyz(State(cp): State<Shared>) -> Result<&'static str, ApiError> {
    cp.ready().await?;
    Ok("ready\n")
}

/// Metrics in the Prometheus text format
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")),
)]
async fn metrics(State(cp): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], cp.metrics().await)
}
