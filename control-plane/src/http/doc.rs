//! The OpenAPI document's frame: title, version, the bearer security scheme, the reusable
//! error responses (defined in `error`) registered, and the rules the server checks that the
//! types cannot say. The operations, parameters and body schemas come from the handlers'
//! `#[utoipa::path]` attributes and the wire types, collected as the routes are built.

use std::borrow::Cow;

use pilotfish_api::schema::ClosedDocuments;
use pilotfish_api::wire::{ErrorBody, RolloutAction, SUPPORTED_PROTOCOLS};
use pilotfish_api::Resource;
use utoipa::openapi::schema::{AllOfBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::error::{
    BadRequest, Conflict, Forbidden, Internal, NotFound, PayloadTooLarge, TooManyRequests, Unauthorized,
    Unavailable,
};
use crate::core::{plural, KINDS};

/// A service's or namespace's name: a DNS label (`pilotfish_api::document::validate_name`).
pub const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// A SPIFFE ID the server takes as an endpoint's identity (stricter than the server: one label
/// as the service account).
pub const IDENTITY_PATTERN: &str =
    "^spiffe://[a-z0-9._-]{1,255}/ns/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/sa/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pilotfish control plane",
        description = "The mesh's source of truth: resources, history, the registry, and the sidecars' configuration streams."
    ),
    components(
        schemas(ErrorBody, KindName, RolloutAction),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            TooManyRequests,
            Internal,
            Unavailable
        ),
    )
)]
pub struct ApiDoc;

/// What the derives cannot say, added once every route's schemas are in: the security scheme,
/// closed configuration documents, and the rules the server checks beyond the wire types' shape.
pub fn finish(openapi: &mut utoipa::openapi::OpenApi) {
    Bearer.modify(openapi);
    ClosedDocuments.modify(openapi);
    ServerRules.modify(openapi);
    NullMeansDefault.modify(openapi);
    QueryAndHeaderValues.modify(openapi);
}

/// `Authorization: Bearer <token>`: the admin token, a read-only token, or a service's join
/// token.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The admin token; a read-only token (every read, no write); or (for its own service's sidecars) a join token",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// An instance's address as registrations give it, as the server parses it (a `SocketAddr`):
/// `IPv4:PORT`, or `[IPv6]:PORT` in any of its spellings (`[::1]:80`, `[::ffff:10.0.0.1]:80`).
const ADDRESS_PATTERN: &str = concat!(
    "^(",
    "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}",
    "|\\[(",
    "([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}",
    "|([0-9a-fA-F]{1,4}:){1,7}:",
    "|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}",
    "|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}",
    "|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}",
    "|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}",
    "|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}",
    "|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}",
    "|:((:[0-9a-fA-F]{1,4}){1,7}|:)",
    "|([0-9a-fA-F]{1,4}:){6}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}",
    "|::([0-9a-fA-F]{1,4}:){0,5}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}",
    "|([0-9a-fA-F]{1,4}:){1,5}:(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}",
    ")\\]",
    "):(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)$"
);

/// The operations of a proxy, whose `service` and `namespace` parameters the server checks as
/// names (elsewhere they are filters, and any text merely matches nothing).
const PROXY_OPERATIONS: [&str; 3] = ["/v1/push", "/v1/proxies/{id}/ack", "/v1/proxies/{id}/stats"];

/// The rules the server checks beyond the wire types' shape: names are DNS labels, addresses
/// parse, `protocol` is one the server speaks, and a kind is one it knows.
struct ServerRules;

impl Modify for ServerRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
            for parameter in
                operations.into_iter().flatten().flat_map(|op| op.parameters.iter_mut().flatten())
            {
                if parameter.name == "kind" {
                    parameter.schema = Some(RefOr::Ref(Ref::from_schema_name(KindName::name())));
                }
                let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() else { continue };
                match parameter.name.as_str() {
                    "protocol" => protocol_range(schema),
                    "service" | "namespace" if PROXY_OPERATIONS.contains(&path.as_str()) => {
                        schema.pattern = Some(NAME_PATTERN.to_owned());
                    }
                    _ => {}
                }
            }
        }
        let Some(components) = openapi.components.as_mut() else { return };
        if let Some(RefOr::T(Schema::Object(registration))) = components.schemas.get_mut("Registration") {
            if let Some(RefOr::T(Schema::Object(address))) = registration.properties.get_mut("address") {
                address.pattern = Some(ADDRESS_PATTERN.to_owned());
            }
            if let Some(RefOr::T(Schema::Object(identity))) = registration.properties.get_mut("identity") {
                identity.pattern = Some(IDENTITY_PATTERN.to_owned());
            }
        }
        for body in ["Registration", "TokenRequest", "Ack", "CertifyRequest", "StatsReport"] {
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
                protocol_range(protocol);
            }
            if body == "StatsReport" {
                if let Some(RefOr::T(Schema::Object(identity))) = object.properties.get_mut("identity") {
                    identity.pattern = Some(IDENTITY_PATTERN.to_owned());
                }
            }
        }
        if let Some(RefOr::T(Schema::Object(token))) = components.schemas.remove("TokenRequest") {
            components.schemas.insert("TokenRequest".to_owned(), token_request_shapes(token).into());
        }
    }
}

/// `POST /v1/tokens` has two shapes the server tells apart by `kind`: a join token names its
/// service, a read-only token names none.
fn token_request_shapes(base: Object) -> Schema {
    let kind = |name: &str| ObjectBuilder::new().schema_type(Type::String).enum_values(Some([name]));
    let join = ObjectBuilder::new()
        .property("kind", kind("join"))
        .property("service", ObjectBuilder::new().schema_type(Type::String))
        .required("service");
    let read_only = ObjectBuilder::new()
        .property("kind", kind("readOnly"))
        .property("service", ObjectBuilder::new().schema_type(Type::Null))
        .required("kind");
    AllOfBuilder::new().item(base).item(OneOfBuilder::new().item(join).item(read_only)).into()
}

/// A protocol version, bounded by the ones the server accepts.
fn protocol_range(protocol: &mut Object) {
    protocol.minimum = Some((*SUPPORTED_PROTOCOLS.start()).into());
    protocol.maximum = Some((*SUPPORTED_PROTOCOLS.end()).into());
}

/// A kind as the resource paths and filters take it: case-insensitive, singular or plural
/// (`Service`, `service`, `services`); the schema lists the canonical and lowercase spellings.
pub struct KindName;

impl PartialSchema for KindName {
    fn schema() -> RefOr<Schema> {
        let spellings =
            KINDS.iter().flat_map(|k| [k.to_string(), k.to_lowercase(), plural(k).to_lowercase()]);
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

/// In a configuration document `null` reads as the field left out (its default): the document
/// parser (`pilotfish_api::parse`) takes YAML's null so, as some tools write it. The documents'
/// schemas say so here: every optional field, and `spec`, also takes `null`.
struct NullMeansDefault;

impl Modify for NullMeansDefault {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        let mut documents = vec![(Resource::name().into_owned(), Resource::schema())];
        Resource::schemas(&mut documents);
        for (name, _) in documents {
            match components.schemas.get_mut(&name) {
                Some(RefOr::T(Schema::Object(object))) => {
                    let required = object.required.clone();
                    for (_, property) in object.properties.iter_mut().filter(|(f, _)| !required.contains(f)) {
                        allow_null(property);
                    }
                }
                // The envelope: one branch per kind.
                Some(RefOr::T(Schema::OneOf(kinds))) => {
                    for kind in &mut kinds.items {
                        if let RefOr::T(Schema::Object(document)) = kind {
                            document.properties.get_mut("spec").into_iter().for_each(allow_null);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn allow_null(schema: &mut RefOr<Schema>) {
    let null = || RefOr::T(Schema::Object(ObjectBuilder::new().schema_type(Type::Null).build()));
    match schema {
        RefOr::Ref(reference) => {
            let reference = RefOr::Ref(reference.clone());
            *schema = RefOr::T(Schema::OneOf(OneOfBuilder::new().item(null()).item(reference).build()));
        }
        RefOr::T(Schema::Object(object)) => nullable(&mut object.schema_type),
        RefOr::T(Schema::Array(array)) => nullable(&mut array.schema_type),
        RefOr::T(Schema::OneOf(one_of)) => {
            let has_null = one_of.items.iter().any(|item| {
                matches!(item, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
            });
            if !has_null {
                one_of.items.insert(0, null());
            }
        }
        _ => {}
    }
}

fn nullable(schema_type: &mut SchemaType) {
    match schema_type {
        SchemaType::Type(Type::Null) | SchemaType::AnyValue => {}
        SchemaType::Type(only) => *schema_type = SchemaType::from_iter([only.clone(), Type::Null]),
        SchemaType::Array(types) if !types.contains(&Type::Null) => types.push(Type::Null),
        SchemaType::Array(_) => {}
    }
}
