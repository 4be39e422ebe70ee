//! The `HTTPRoute` kind, in the Gateway API shape (gateway.networking.k8s.io/v1) so users'
//! manifests carry over: rules of matches (path, method, headers, query parameters), filters,
//! weighted backends, timeouts and retries (GEP-1731), attached to a Service by `parentRefs`.

use serde::{Deserialize, Serialize};

use crate::field::FieldError;
use crate::{bounds, Duration};

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Filter {
    RequestHeaderModifier {
        #[serde(rename = "requestHeaderModifier")]
        modifier: HeaderModifier,
    },
    ResponseHeaderModifier {
        #[serde(rename = "responseHeaderModifier")]
        modifier: HeaderModifier,
    },
    RequestRedirect {
        #[serde(rename = "requestRedirect")]
        redirect: RequestRedirect,
    },
    #[serde(rename = "URLRewrite")]
    UrlRewrite {
        #[serde(rename = "urlRewrite")]
        rewrite: UrlRewrite,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<Header>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<Header>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    #[schema(pattern = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^https?$")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    #[serde(default = "found")]
    #[schema(schema_with = redirect_status)]
    pub status_code: u16,
}

fn found() -> u16 {
    302
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

fn redirect_status() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .enum_values(Some([301, 302, 303, 307, 308]))
        .default(Some(found().into()))
        .build()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum PathModifier {
    #[serde(rename_all = "camelCase")]
    ReplaceFullPath { replace_full_path: String },
    #[serde(rename_all = "camelCase")]
    ReplacePrefixMatch { replace_prefix_match: String },
}

impl HttpRouteSpec {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.parent_refs.is_empty() {
            return Err(FieldError::new("spec.parentRefs", "needs at least one Service to attach to"));
        }
        for (i, p) in self.parent_refs.iter().enumerate() {
            if p.kind != "Service" {
                return Err(FieldError::new(
                    format!("spec.parentRefs[{i}].kind"),
                    format!("{:?} is not supported: a mesh route attaches to a Service", p.kind),
                ));
            }
            check_core_group(p.group.as_deref(), format!("spec.parentRefs[{i}].group"))?;
            if let Some(port) = p.port {
                bounds::port(&format!("spec.parentRefs[{i}].port"), port)?;
            }
        }
        for (r, rule) in self.rules.iter().enumerate() {
            let at = |rest: String| format!("spec.rules[{r}].{rest}");
            for (m, mat) in rule.matches.iter().enumerate() {
                if let Some(path) = &mat.path {
                    let field = at(format!("matches[{m}].path.value"));
                    match path.kind {
                        PathMatchType::Exact | PathMatchType::PathPrefix if !path.value.starts_with('/') => {
                            return Err(FieldError::new(field, "must start with '/'"));
                        }
                        PathMatchType::RegularExpression => check_regex(&path.value, field)?,
                        _ => {}
                    }
                }
                if let Some(method) = &mat.method {
                    if http_method(method).is_none() {
                        return Err(FieldError::new(
                            at(format!("matches[{m}].method")),
                            format!("{method:?} is not an HTTP method (GET, POST, PUT, DELETE, ...)"),
                        ));
                    }
                }
                for (list, name) in [(&mat.headers, "headers"), (&mat.query_params, "queryParams")] {
                    for (h, v) in list.iter().enumerate() {
                        let bad_name =
                            if name == "headers" { !valid_header_name(&v.name) } else { v.name.is_empty() };
                        if bad_name {
                            return Err(FieldError::new(
                                at(format!("matches[{m}].{name}[{h}].name")),
                                "must be a valid, non-empty header name",
                            ));
                        }
                        if v.kind == ValueMatchType::RegularExpression {
                            check_regex(&v.value, at(format!("matches[{m}].{name}[{h}].value")))?;
                        }
                    }
                }
            }
            for (b, backend) in rule.backend_refs.iter().enumerate() {
                if backend.kind != "Service" {
                    return Err(FieldError::new(
                        at(format!("backendRefs[{b}].kind")),
                        format!("{:?} is not supported: backends are Services", backend.kind),
                    ));
                }
                check_core_group(backend.group.as_deref(), at(format!("backendRefs[{b}].group")))?;
                if let Some(port) = backend.port {
                    bounds::port(&at(format!("backendRefs[{b}].port")), port)?;
                }
            }
            if let Some(b) = rule.backend_refs.iter().position(|b| b.weight > 1_000_000) {
                return Err(FieldError::new(
                    at(format!("backendRefs[{b}].weight")),
                    "must be at most 1000000",
                ));
            }
            // The sidecar draws a ticket below the total weight in a u32.
            if rule.backend_refs.iter().map(|b| u64::from(b.weight)).sum::<u64>() > u64::from(u32::MAX) {
                return Err(FieldError::new(
                    at("backendRefs".into()),
                    format!("the weights add up to more than {}", u32::MAX),
                ));
            }
            if !rule.backend_refs.is_empty() && rule.backend_refs.iter().all(|b| b.weight == 0) {
                return Err(FieldError::new(
                    at("backendRefs".into()),
                    "at least one backend needs a weight above 0",
                ));
            }
            if let Some(retry) = &rule.retry {
                if retry.attempts > 10 {
                    return Err(FieldError::new(at("retry.attempts".into()), "must be at most 10"));
                }
                if let Some(backoff) = retry.backoff {
                    bounds::duration(
                        &at("retry.backoff".into()),
                        backoff,
                        Duration::default(),
                        bounds::MAX_DURATION,
                    )?;
                }
                let codes = retry.codes.as_deref().unwrap_or_default();
                if let Some(i) = codes.iter().position(|c| !(400..=599).contains(c)) {
                    return Err(FieldError::new(
                        at(format!("retry.codes[{i}]")),
                        "must be an HTTP error status (400-599)",
                    ));
                }
            }
            if let Some(t) = &rule.timeouts {
                for (field, d) in
                    [("timeouts.request", t.request), ("timeouts.backendRequest", t.backend_request)]
                {
                    if let Some(d) = d {
                        bounds::duration(&at(field.into()), d, Duration::default(), bounds::MAX_DURATION)?;
                    }
                }
                if let (Some(request), Some(backend)) = (t.request, t.backend_request) {
                    if backend > request && !request.get().is_zero() {
                        return Err(FieldError::new(
                            at("timeouts.backendRequest".into()),
                            "must not be longer than timeouts.request",
                        ));
                    }
                }
            }
            let only_prefix_matches = rule
                .matches
                .iter()
                .all(|m| m.path.as_ref().is_none_or(|p| p.kind == PathMatchType::PathPrefix));
            let mut kinds = std::collections::HashSet::new();
            for (f, filter) in rule.filters.iter().enumerate() {
                let (kind, path) = match filter {
                    Filter::RequestHeaderModifier { modifier }
                    | Filter::ResponseHeaderModifier { modifier } => {
                        for (h, header) in modifier.set.iter().chain(&modifier.add).enumerate() {
                            if !valid_header_name(&header.name) {
                                return Err(FieldError::new(
                                    at(format!("filters[{f}]")),
                                    format!("header #{h} {:?} is not a valid header name", header.name),
                                ));
                            }
                        }
                        (std::mem::discriminant(filter), None)
                    }
                    Filter::RequestRedirect { redirect } => {
                        if ![301, 302, 303, 307, 308].contains(&redirect.status_code) {
                            return Err(FieldError::new(
                                at(format!("filters[{f}].requestRedirect.statusCode")),
                                "must be 301, 302, 303, 307 or 308",
                            ));
                        }
                        if let Some(port) = redirect.port {
                            bounds::port(&at(format!("filters[{f}].requestRedirect.port")), port)?;
                        }
                        if redirect.scheme.as_deref().is_some_and(|s| s != "http" && s != "https") {
                            return Err(FieldError::new(
                                at(format!("filters[{f}].requestRedirect.scheme")),
                                "must be http or https",
                            ));
                        }
                        (std::mem::discriminant(filter), redirect.path.as_ref())
                    }
                    Filter::UrlRewrite { rewrite } => (std::mem::discriminant(filter), rewrite.path.as_ref()),
                };
                if !kinds.insert(kind) {
                    return Err(FieldError::new(
                        at(format!("filters[{f}]")),
                        "this filter type is already set on the rule",
                    ));
                }
                if matches!(path, Some(PathModifier::ReplacePrefixMatch { .. })) && !only_prefix_matches {
                    return Err(FieldError::new(
                        at(format!("filters[{f}]")),
                        "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
                    ));
                }
            }
            let redirects = rule.filters.iter().any(|f| matches!(f, Filter::RequestRedirect { .. }));
            let rewrites = rule.filters.iter().any(|f| matches!(f, Filter::UrlRewrite { .. }));
            if redirects && rewrites {
                return Err(FieldError::new(
                    at("filters".into()),
                    "RequestRedirect and URLRewrite cannot be combined",
                ));
            }
        }
        Ok(())
    }
}

/// A Service is in Kubernetes' core group: `""` (what kubectl prints), `core`, or omitted.
fn check_core_group(group: Option<&str>, field: String) -> Result<(), FieldError> {
    match group {
        None | Some("" | "core") => Ok(()),
        Some(other) => Err(FieldError::new(
            field,
            format!("{other:?} is not supported: Pilotfish routes to core Services (group \"\" or omitted)"),
        )),
    }
}

/// RFC 9110 field-name: one or more tchars.
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Methods as the Gateway API lists them.
pub fn http_method(method: &str) -> Option<&'static str> {
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
        .into_iter()
        .find(|m| *m == method)
}

/// A regular expression that must match a whole value, as the sidecar compiles it: checking the
/// anchored form matters, since a pattern can be valid alone and not once wrapped (`(?x)a#`
/// comments out the closing parenthesis).
pub fn full_match_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

fn check_regex(pattern: &str, field: String) -> Result<(), FieldError> {
    full_match_regex(pattern)
        .map(drop)
        .map_err(|e| FieldError::new(field, format!("not a valid regular expression: {e}")))
}

#[cfg(test)]
mod tests {
    use crate::{parse_stream, Resource};

    fn route(rules: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: users}}]\n  rules:\n{rules}"
        )
    }

    #[test]
    fn parses_the_gateway_api_shape() {
        let text = route(
            "  - matches: [{path: {type: RegularExpression, value: '^/v[0-9]+/'}, headers: [{name: x-canary, value: 'yes'}]}]\n    filters:\n    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: b}], remove: [x-c]}}\n    - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /}}}\n    backendRefs: [{name: users, weight: 90}, {name: users-v2, weight: 10}]\n    timeouts: {request: 2s, backendRequest: 500ms}\n    retry: {attempts: 3, backoff: 25ms, codes: [503]}\n",
        );
        let resources = parse_stream("r.yaml", &text).unwrap();
        let Resource::HttpRoute(r) = &resources[0] else { panic!("not a route") };
        let rule = &r.spec.rules[0];
        assert_eq!(rule.backend_refs[1].weight, 10);
        assert_eq!(rule.filters.len(), 2);
        assert_eq!(r.spec.parent_refs[0].kind, "Service");
        assert_eq!(resources[0].api_version(), super::GATEWAY_V1);
    }

    #[test]
    fn bad_routes_name_the_field() {
        let cases = [
            (
                "  - matches: [{path: {type: PathPrefix, value: api}}]\n",
                "spec.rules[0].matches[0].path.value",
            ),
            (
                "  - matches: [{path: {type: RegularExpression, value: '(unclosed'}}]\n",
                "spec.rules[0].matches[0].path.value",
            ),
            ("  - matches: [{method: FETCH}]\n", "spec.rules[0].matches[0].method"),
            ("  - backendRefs: [{name: a, weight: 0}]\n", "spec.rules[0].backendRefs"),
            ("  - retry: {codes: [200]}\n", "spec.rules[0].retry.codes[0]"),
            (
                "  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 200}}]\n",
                "spec.rules[0].filters[0].requestRedirect.statusCode",
            ),
            ("  - filters: [{type: Mirror}]\n", "spec.rules[0].filters[0]"),
            ("  - matches: [{headers: [{name: 'bad name', value: x}]}]\n", "spec.rules[0].matches[0].headers[0].name"),
            ("  - timeouts: {request: 1s, backendRequest: 2s}\n", "spec.rules[0].timeouts.backendRequest"),
            ("  - backendRefs: [{name: a, weight: 2000000}]\n", "spec.rules[0].backendRefs[0].weight"),
            (
                "  - matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]\n",
                "spec.rules[0].filters[0]",
            ),
            (
                "  - filters: [{type: URLRewrite, urlRewrite: {hostname: x}}, {type: RequestRedirect, requestRedirect: {hostname: y}}]\n",
                "spec.rules[0].filters",
            ),
        ];
        for (rules, field) in cases {
            let err = parse_stream("r.yaml", &route(rules)).unwrap_err();
            assert!(err.field.starts_with(field), "{rules}: {err}");
        }
    }

    #[test]
    fn the_api_gateway_example_expresses_kong_style_limits() {
        let text = include_str!("../../examples/api-gateway.yaml");
        let resources = parse_stream("api-gateway.yaml", text).unwrap();
        let limit = resources
            .iter()
            .find_map(|r| match r {
                Resource::RateLimitPolicy(p) => Some(&p.spec),
                _ => None,
            })
            .unwrap();
        assert_eq!((limit.per_minute, limit.per_hour), (Some(100), Some(10_000)));
        assert_eq!(limit.target_ref.kind, "HTTPRoute");
    }
}
