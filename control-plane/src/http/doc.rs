//! The OpenAPI document's frame: title, version, the bearer security scheme, and the reusable
//! error responses. The operations, parameters and body schemas come from the handlers'
//! `#[utoipa::path]` attributes and the wire types, collected as the routes are built.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized, Unavailable};
use crate::wire::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(title = "Pilotfish control plane", description = "The mesh's source of truth: resources, history, the registry, and the sidecars' configuration streams."),
    modifiers(&Bearer),
    components(
        schemas(ErrorBody),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooManyRequests, Unavailable),
    ),
)]
pub struct ApiDoc;

/// `Authorization: Bearer <token>`: the admin token, or a service's join token.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The admin token, or (for its own service's sidecars) a join token"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}
