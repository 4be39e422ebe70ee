//! The OpenAPI schemas of the configuration documents, as the API accepts them.
//!
//! Every type of a spec derives `utoipa::ToSchema` beside its serde derives, so its schema follows
//! its renames, defaults and optional fields; the ranges of [`crate::bounds`] are written on the
//! fields as `minimum`/`maximum` (a test here holds them to the constants). What a derive cannot
//! say is added here: the document envelope — [`Resource`] is `apiVersion`, `kind`, `metadata` and
//! `spec`, one branch per kind — and [`ClosedDocuments`], which refuses unknown fields as the API
//! does. The derived schemas leave them open, as pushed configuration tolerates them
//! ([`crate::UnknownFields`]).

use utoipa::openapi::schema::{
    AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{OpenApi, Ref, RefOr};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::authz::AuthorizationPolicySpec;
use crate::document::{Metadata, Resource, KINDS};
use crate::manifest::{CLUSTER_SET, UNSUPPORTED};
use crate::policy::{BackendPolicySpec, RateLimitPolicySpec};
use crate::rollout::RolloutSpec;
use crate::route::HttpRouteSpec;
use crate::{ServiceSpec, SidecarSpec};

impl PartialSchema for Resource {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(document::<SidecarSpec>("Sidecar"))
            .item(document::<ServiceSpec>("Service"))
            .item(document::<HttpRouteSpec>("HTTPRoute"))
            .item(document::<BackendPolicySpec>("BackendPolicy"))
            .item(document::<RateLimitPolicySpec>("RateLimitPolicy"))
            .item(document::<AuthorizationPolicySpec>("AuthorizationPolicy"))
            .item(document::<RolloutSpec>("Rollout"))
            .description(Some("A configuration document: one of the kinds, told apart by `kind`"))
            .into()
    }
}

impl ToSchema for Resource {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        collect::<Metadata>(schemas);
        collect::<SidecarSpec>(schemas);
        collect::<ServiceSpec>(schemas);
        collect::<HttpRouteSpec>(schemas);
        collect::<BackendPolicySpec>(schemas);
        collect::<RateLimitPolicySpec>(schemas);
        collect::<AuthorizationPolicySpec>(schemas);
        collect::<RolloutSpec>(schemas);
    }
}

fn collect<S: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((S::name().into_owned(), S::schema()));
    S::schemas(schemas);
}

/// One kind's document: its `apiVersion` and `kind` fixed, and what a cluster adds accepted.
fn document<S: ToSchema>(kind: &str) -> Object {
    let (_, api_version) = KINDS.iter().find(|(k, _)| *k == kind).expect("every kind is listed");
    let text = |value: &str| ObjectBuilder::new().schema_type(Type::String).enum_values(Some([value]));
    ObjectBuilder::new()
        .title(Some(kind))
        .property("apiVersion", text(api_version))
        .required("apiVersion")
        .property("kind", text(kind))
        .required("kind")
        .property("metadata", Ref::from_schema_name(Metadata::name()))
        .required("metadata")
        .property("spec", Ref::from_schema_name(S::name()))
        .required("spec")
        .property("status", dropped("What a cluster reports of the object: accepted and dropped"))
        .build()
}

fn dropped(why: &str) -> Object {
    ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some(why)).build()
}

/// Closes [`Resource`] and every schema it refers to to unknown fields, as the API refuses them,
/// and lists the metadata a cluster sets, which the API accepts and drops. Give it to the OpenAPI
/// document that serves these schemas (`#[openapi(modifiers(&ClosedDocuments))]`).
pub struct ClosedDocuments;

impl Modify for ClosedDocuments {
    fn modify(&self, openapi: &mut OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        let mut documents = vec![(Resource::name().into_owned(), Resource::schema())];
        Resource::schemas(&mut documents);
        for (name, _) in documents {
            if let Some(schema) = components.schemas.get_mut(&name) {
                close(schema);
            }
        }
        if let Some(RefOr::T(Schema::Object(metadata))) = components.schemas.get_mut(&*Metadata::name()) {
            for field in CLUSTER_SET.into_iter().chain(UNSUPPORTED.map(|(field, _)| field)) {
                let schema = dropped("Set by a cluster: accepted and dropped");
                metadata.properties.insert(field.to_owned(), schema.into());
            }
        }
    }
}

/// Objects with fields refuse others; maps (which already say what their values are) stay open.
fn close(schema: &mut RefOr<Schema>) {
    match schema {
        RefOr::T(Schema::Object(object))
            if object.schema_type == SchemaType::Type(Type::Object)
                && object.additional_properties.is_none() =>
        {
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
        RefOr::T(Schema::OneOf(one_of)) => one_of.items.iter_mut().for_each(close),
        RefOr::T(Schema::AllOf(all_of)) => all_of.items.iter_mut().for_each(close),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use utoipa::openapi::{ComponentsBuilder, OpenApiBuilder};

    use super::*;
    use crate::bounds;

    /// The components of an OpenAPI document serving [`Resource`], as JSON.
    fn components() -> Value {
        let mut schemas = vec![(Resource::name().into_owned(), Resource::schema())];
        Resource::schemas(&mut schemas);
        let components = ComponentsBuilder::new().schemas_from_iter(schemas).build();
        let mut openapi = OpenApiBuilder::new().components(Some(components)).build();
        ClosedDocuments.modify(&mut openapi);
        serde_json::to_value(&openapi).unwrap()["components"]["schemas"].clone()
    }

    #[test]
    fn a_document_is_one_branch_per_kind_with_its_api_version() {
        let schemas = components();
        let branches = schemas["Resource"]["oneOf"].as_array().unwrap();
        assert_eq!(branches.len(), KINDS.len());
        for ((kind, api_version), branch) in KINDS.iter().zip(branches) {
            let properties = &branch["properties"];
            assert_eq!(properties["kind"]["enum"], serde_json::json!([kind]));
            assert_eq!(properties["apiVersion"]["enum"], serde_json::json!([api_version]));
            let spec = properties["spec"]["$ref"].as_str().unwrap();
            let name = spec.rsplit('/').next().unwrap();
            assert!(schemas[name].is_object(), "{kind}: no schema for {spec}");
            assert_eq!(branch["additionalProperties"], false);
        }
        let metadata = &schemas["Metadata"];
        assert_eq!(metadata["required"], serde_json::json!(["name"]));
        assert_eq!(metadata["properties"]["namespace"]["default"], "default");
        assert!(metadata["properties"]["uid"].is_object(), "kubectl's output is accepted");
        assert_eq!(metadata["properties"]["labels"]["additionalProperties"]["type"], "string");
    }

    #[test]
    fn filters_are_a_one_of_told_apart_by_type_and_closed() {
        let schemas = components();
        let filters = schemas["Filter"]["oneOf"].as_array().unwrap();
        let mut tags: Vec<&str> = filters
            .iter()
            .map(|f| {
                assert!(f["required"].as_array().unwrap().contains(&"type".into()), "{f}");
                assert_eq!(f["additionalProperties"], false, "{f}");
                f["properties"]["type"]["enum"][0].as_str().unwrap()
            })
            .collect();
        tags.sort_unstable();
        assert_eq!(
            tags,
            ["RequestHeaderModifier", "RequestRedirect", "ResponseHeaderModifier", "URLRewrite"]
        );
        let redirect = &schemas["RequestRedirect"]["properties"]["statusCode"];
        assert_eq!(
            (redirect["default"].as_u64(), redirect["enum"].as_array().map(Vec::len)),
            (Some(302), Some(5))
        );
        let modifier = &schemas["PathModifier"]["oneOf"];
        assert!(modifier[0]["properties"]["replaceFullPath"].is_object(), "{modifier}");
    }

    #[test]
    fn durations_are_strings_with_the_pattern_parsing_accepts() {
        let schemas = components();
        assert_eq!(schemas["Duration"]["type"], "string");
        assert_eq!(schemas["Duration"]["pattern"], crate::duration::PATTERN);
        let breaker = &schemas["CircuitBreaker"]["properties"];
        assert_eq!(breaker["baseEjectionTime"]["default"], "30s");
        assert_eq!(breaker["baseEjectionTime"]["oneOf"][0]["$ref"], "#/components/schemas/Duration");
    }

    #[test]
    fn required_fields_and_defaults_are_what_parsing_applies() {
        let schemas = components();
        assert_eq!(schemas["HttpRouteSpec"]["required"], serde_json::json!(["parentRefs"]));
        assert_eq!(schemas["ServiceSpec"].get("required"), None);
        assert_eq!(schemas["ServiceSpec"]["additionalProperties"], false);
        assert_eq!(schemas["RouteRetry"]["properties"]["attempts"]["default"], 2);
        assert_eq!(schemas["BackendRef"]["properties"]["weight"]["default"], 1);
        assert_eq!(schemas["Timeouts"]["properties"]["drain"]["default"], "30s");
        assert_eq!(schemas["SidecarSpec"]["properties"]["admin"]["default"], "127.0.0.1:15000");
        assert_eq!(schemas["RetryPolicy"]["properties"]["retryOn"]["default"][0], "connect-failure");
        assert_eq!(schemas["Protocol"]["enum"], serde_json::json!(["http", "http2", "grpc", "tcp"]));
    }

    #[test]
    fn the_ranges_are_the_bounds_validation_applies() {
        let schemas = components();
        let cases = [
            ("CircuitBreaker", "consecutiveFailures", 1, bounds::MAX_COUNT),
            ("CircuitBreaker", "maxEjectionPercent", 0, 100),
            ("ServiceLimits", "maxConnections", 1, bounds::MAX_COUNT),
            ("ServiceLimits", "maxPendingRequests", 1, bounds::MAX_COUNT),
            ("ServiceLimits", "maxRequests", 1, bounds::MAX_COUNT),
            ("RetryBudget", "minPerSecond", 0, bounds::MAX_RETRIES_PER_SECOND),
            ("RetryBudget", "ratio", 0, 10),
            ("RetryPolicy", "maxBodyBytes", 0, bounds::MAX_BODY_BYTES),
            ("HealthCheck", "healthyThreshold", 1, bounds::MAX_COUNT),
            ("HealthCheck", "unhealthyThreshold", 1, bounds::MAX_COUNT),
            ("RateLimitPolicySpec", "perSecond", 1, bounds::MAX_RATE),
            ("RateLimitPolicySpec", "perMinute", 1, bounds::MAX_RATE),
            ("RateLimitPolicySpec", "perHour", 1, bounds::MAX_RATE),
            ("RateLimitPolicySpec", "burst", 1, bounds::MAX_RATE),
            ("Limits", "maxConnections", 1, bounds::MAX_COUNT),
            ("Limits", "maxHeaderBytes", 1024, bounds::MAX_HEADER_BYTES),
            ("Limits", "maxHeaders", 1, bounds::MAX_HEADERS),
            ("Limits", "maxConcurrentStreams", 1, bounds::MAX_COUNT),
            ("RouteRetry", "attempts", 0, 10),
            ("RequestRedirect", "port", 1, 65535),
            ("ParentRef", "port", 1, 65535),
            ("ServiceSpec", "localPort", 1, 65535),
            ("BackendRef", "weight", 0, 1_000_000),
            ("BackendRef", "port", 1, 65535),
            ("ServicePort", "port", 1, 65535),
        ];
        for (schema, field, min, max) in cases {
            let property = &schemas[schema]["properties"][field];
            let range = (property["minimum"].as_f64(), property["maximum"].as_f64());
            assert_eq!(range, (Some(min as f64), Some(max as f64)), "{schema}.{field}: {property}");
        }
    }

    #[test]
    fn authorization_policy_lists_are_bounded_as_validation_bounds_them() {
        let schemas = components();
        let cases = [
            ("AuthorizationPolicySpec", "rules"),
            ("AuthorizationRule", "from"),
            ("AuthorizationRule", "to"),
            ("OperationMatch", "paths"),
            ("OperationMatch", "methods"),
            ("OperationMatch", "ports"),
        ];
        for (schema, field) in cases {
            let property = &schemas[schema]["properties"][field];
            assert_eq!(
                property["maxItems"].as_u64(),
                Some(bounds::MAX_POLICY_ENTRIES),
                "{schema}.{field}: {property}"
            );
        }
        let port = &schemas["OperationMatch"]["properties"]["ports"]["items"];
        assert_eq!((port["minimum"].as_u64(), port["maximum"].as_u64()), (Some(1), Some(65535)), "{port}");
        assert_eq!(schemas["SourceMatch"]["required"], serde_json::json!(["identity"]));
        assert_eq!(
            schemas["AuthorizationPolicySpec"]["required"],
            serde_json::json!(["targetRef", "action"])
        );
        assert_eq!(schemas["AuthorizationAction"]["enum"], serde_json::json!(["ALLOW", "DENY"]));
        let default = &schemas["AuthorizationSettings"]["properties"]["default"];
        assert_eq!(schemas["MeshDefault"]["enum"], serde_json::json!(["allow", "deny", "authenticated"]));
        assert!(default.is_object(), "{default}");
    }
}
