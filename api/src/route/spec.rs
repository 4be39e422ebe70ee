//! An `HTTPRoute`'s spec: the Services it attaches to, and its rules — matches, weighted
//! backends, timeouts and retries (GEP-1731). Filters are in `filter`.

use serde::{Deserialize, Serialize};

use super::filter::Filter;
use crate::Duration;

pub const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Services whose traffic this route shapes (`kind: Service`; a mesh route).
    pub parent_refs: Vec<ParentRef>,
    /// Accepted for compatibility; a mesh route applies to its parent services' traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(core)?$")]
    pub group: Option<String>,
    #[serde(default = "service_kind")]
    #[schema(default = service_kind, pattern = "^Service$")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kept, without effect yet: the route applies to every port of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// Kept, without effect yet (a port name of the Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

fn service_kind() -> String {
    "Service".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one matching selects the rule; none means every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Weighted backends (traffic split); none means the parent service itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RouteRetry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH)$")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    #[serde(default = "path_prefix", rename = "type")]
    #[schema(default = path_prefix)]
    pub kind: PathMatchType,
    /// A path starting with `/`, or for `RegularExpression` a pattern matching the whole path.
    #[serde(default = "root")]
    #[schema(default = root)]
    pub value: String,
}

fn path_prefix() -> PathMatchType {
    PathMatchType::PathPrefix
}
fn root() -> String {
    "/".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
}

/// A header or query parameter match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    #[serde(default = "exact", rename = "type")]
    #[schema(default = exact)]
    pub kind: ValueMatchType,
    pub name: String,
    pub value: String,
}

fn exact() -> ValueMatchType {
    ValueMatchType::Exact
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ValueMatchType {
    Exact,
    RegularExpression,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(core)?$")]
    pub group: Option<String>,
    #[serde(default = "service_kind")]
    #[schema(default = service_kind, pattern = "^Service$")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// At least one backend of a rule needs a weight above 0; the weights add up to at most 2^32-1.
    #[serde(default = "one")]
    #[schema(default = one, maximum = 1_000_000)]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTimeouts {
    /// The whole exchange as the caller sees it, all retries included (to response headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// Each attempt to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

/// GEP-1731 retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRetry {
    /// Retries after the first attempt.
    #[serde(default = "two")]
    #[schema(default = two, maximum = 10)]
    pub attempts: u32,
    /// Base of the exponential backoff with full jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// Response statuses that are retried (omitted: 502, 503, 504; `[]`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = retried_codes)]
    pub codes: Option<Vec<u16>>,
}

fn two() -> u32 {
    2
}

/// An array of HTTP error statuses, or null for the default.
fn retried_codes() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    let status = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(400)).maximum(Some(599));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(status)
        .description(Some("Response statuses that are retried (omitted: 502, 503, 504; `[]`: none)"))
        .build()
}
