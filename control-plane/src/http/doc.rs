//! The OpenAPI document's frame: title, version, the bearer security scheme, and the reusable
//! error responses. The operations, parameters and body schemas come from the handlers'
//! `#[utoipa::path]` attributes and the wire types, collected as the routes are built.

use std::borrow::Cow;

use pilotfish_api::schema::ClosedDocuments;
use pilotfish_api::wire::{ErrorBody, SUPPORTED_PROTOCOLS};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::error::{BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized, Unavailable};
use crate::core::KINDS;

/// A service's or namespace's name: a DNS label (`pilotfish_api::document::validate_name`).
pub const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pilotfish control plane",
        description = "The mesh's source of truth: resources, history, the registry, and the sidecars' configuration streams."
    ),
    components(
        schemas(ErrorBody, KindName),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooManyRequests, Unavailable),
    )
)]
pub struct ApiDoc;

/// What the derives cannot say, added once every route's schemas are in: the security scheme,
/// closed configuration documents, and the rules the server checks beyond the wire types' shape.
pub fn finish(openapi: &mut utoipa::openapi::OpenApi) {
    Bearer.modify(openapi);
    ClosedDocuments.modify(openapi);
    ServerRules.modify(openapi);
    QueryAndHeaderValues.modify(openapi);
}

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

/// An instance's address as registrations give it: `IPv4:PORT`, as the server parses it.
const ADDRESS_PATTERN: &str = "^(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)$";

/// The rules the server checks on request bodies beyond the wire types' shape: names are DNS
/// labels, addresses parse, `protocol` is one the server speaks; and a document's
/// `metadata.labels: null` (as some tools write) reads as none.
struct ServerRules;

impl Modify for ServerRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        if let Some(RefOr::T(Schema::Object(metadata))) = components.schemas.get_mut("Metadata") {
            for field in ["labels", "annotations"] {
                if let Some(RefOr::T(Schema::Object(map))) = metadata.properties.get_mut(field) {
                    map.schema_type = SchemaType::from_iter([Type::Object, Type::Null]);
                }
            }
        }
        if let Some(RefOr::T(Schema::Object(registration))) = components.schemas.get_mut("Registration") {
            if let Some(RefOr::T(Schema::Object(address))) = registration.properties.get_mut("address") {
                address.pattern = Some(ADDRESS_PATTERN.to_owned());
            }
        }
        for body in ["Registration", "TokenRequest", "Ack"] {
            let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(body) else { continue };
            for field in ["service", "namespace"] {
                if let Some(RefOr::T(Schema::Object(name))) = object.properties.get_mut(field) {
                    name.pattern = Some(NAME_PATTERN.to_owned());
                }
            }
            if let Some(RefOr::T(Schema::Object(ttl))) = object.properties.get_mut("ttlSeconds") {
                (ttl.minimum, ttl.maximum) = (Some(1.into()), Some(3600.into()));
            }
            if let Some(RefOr::T(Schema::Object(protocol))) = object.properties.get_mut("protocol") {
                protocol.minimum = Some((*SUPPORTED_PROTOCOLS.start()).into());
                protocol.maximum = Some((*SUPPORTED_PROTOCOLS.end()).into());
            }
        }
    }
}

/// A kind as the resource paths and filters take it: case-insensitive, singular or plural
/// (`Service`, `service`, `services`); the schema lists the canonical and lowercase spellings.
pub struct KindName;

impl PartialSchema for KindName {
    fn schema() -> RefOr<Schema> {
        let spellings =
            KINDS.iter().flat_map(|k| [k.to_string(), k.to_lowercase(), format!("{}s", k.to_lowercase())]);
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(spellings))
            .description(Some("A resource kind (case-insensitive, singular or plural)"))
            .into()
    }
}

impl ToSchema for KindName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("KindName")
    }
}

/// A query or header parameter is left out, never `null`: the derives make optional ones
/// nullable, which would have clients send the text `null`.
struct QueryAndHeaderValues;

impl Modify for QueryAndHeaderValues {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let operations = openapi.paths.paths.values_mut().flat_map(|item| {
            [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten()
        });
        for parameter in operations.flat_map(|op| op.parameters.iter_mut().flatten()) {
            if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() {
                if let SchemaType::Array(types) = &object.schema_type {
                    let mut types = types.iter().filter(|t| **t != Type::Null).cloned();
                    if let (Some(only), None) = (types.next(), types.next()) {
                        object.schema_type = SchemaType::Type(only);
                    }
                }
            }
        }
    }
}
