//! The API's router, built from every resource group's routes: the same list the OpenAPI
//! document is generated from (`utoipa-axum`), so the document cannot drift from the routes.
//! Unknown paths and methods answer through [`ApiError`] too, with JSON bodies. The dashboard's
//! page and files are routed beside the API, outside the document.

use std::sync::OnceLock;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::doc::{finish, ApiDoc};
use super::error::ApiError;
use super::extract::Shared;
use super::{ca, dashboard, history, inject, ops, push, registry, resources, rollouts, stats, tap, tokens};

fn api() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_json))
        .merge(ops::routes())
        .merge(resources::routes())
        .merge(history::routes())
        .merge(registry::routes())
        .merge(push::routes())
        .merge(tokens::routes())
        .merge(ca::routes())
        .merge(inject::routes())
        .merge(stats::routes())
        .merge(tap::routes())
        .merge(rollouts::routes())
}

/// The API over `cp`.
pub fn router(cp: &Shared) -> Router {
    let (router, _) = api().split_for_parts();
    router
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(cp.clone())
}

/// The OpenAPI 3.1 document of the API.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = api().split_for_parts().1;
        finish(&mut doc);
        doc
    })
}

/// This document
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)),
)]
async fn openapi_json() -> axum::Json<&'static utoipa::openapi::OpenApi> {
    axum::Json(openapi())
}
