//! The `AuthorizationPolicy` kind: which peers may call a service, and how; attached to the
//! Service by `targetRef`. Also [`MeshDefault`], what applies to a service no ALLOW policy
//! targets, and the `Sidecar` field that sets it in static mode.
//!
//! Matching, as in Istio: a policy matches when any of its `rules` does (none: it never does); a
//! rule when its `from` and its `to` both do; a list when any entry does, an omitted or empty
//! list always. Identity and path patterns are typed here ([`IdentityPattern`], [`PathPattern`]),
//! so what reads a valid policy never parses them again.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::bounds;
use crate::field::FieldError;
use crate::identity::SpiffeId;
use crate::policy::TargetRef;
use crate::route::http_method;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The Service whose sidecars enforce the policy on their inbound calls.
    pub target_ref: TargetRef,
    pub action: AuthorizationAction,
    /// Omitted or empty: the policy matches nothing (an ALLOW policy without rules allows nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "present_rules")]
    #[schema(max_items = 1024)]
    pub rules: Vec<AuthorizationRule>,
}

/// `rules`, refusing an empty item (YAML's `- ` alone, or `null`), which serde would read as
/// `{}`, the rule that matches every call: a policy must say so.
fn present_rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AuthorizationRule>, D::Error> {
    struct Present(AuthorizationRule);
    impl<'de> Deserialize<'de> for Present {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let rule = Option::<AuthorizationRule>::deserialize(d)?;
            rule.map(Present)
                .ok_or_else(|| D::Error::custom("an empty rule: write {} for one that matches every call"))
        }
    }
    let rules = Option::<Vec<Present>>::deserialize(d)?;
    Ok(rules.unwrap_or_default().into_iter().map(|Present(rule)| rule).collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizationAction {
    /// A call must match one ALLOW policy of its service (when the service has any).
    Allow,
    /// A call that matches any DENY policy is refused, whatever the ALLOW policies say.
    Deny,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationRule {
    /// Who calls; omitted or empty: anyone, including a caller without an identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 1024)]
    pub from: Vec<SourceMatch>,
    /// What is called; omitted or empty: anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 1024)]
    pub to: Vec<OperationMatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceMatch {
    /// The caller's mTLS identity: an exact SPIFFE ID
    /// (`spiffe://pilotfish.local/ns/default/sa/web`), a prefix ending in `/*`
    /// (`spiffe://pilotfish.local/ns/default/*`: a whole namespace), or `*` (any identity).
    #[schema(value_type = String, example = "spiffe://pilotfish.local/ns/default/sa/web")]
    pub identity: IdentityPattern,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationMatch {
    /// Request paths (without the query): exact (`/healthz`), a prefix ending in `*` (`/api/*`),
    /// or `*`. HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>, max_items = 1024, example = json!(["/api/*"]))]
    pub paths: Vec<PathPattern>,
    /// HTTP methods (`GET`, `POST`, ...). HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 1024, example = json!(["GET"]))]
    pub methods: Vec<String>,
    /// The service's ports called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = ports)]
    pub ports: Vec<u16>,
}

impl OperationMatch {
    /// Whether it says anything only an HTTP request has (a path or a method).
    pub fn is_http_only(&self) -> bool {
        !self.paths.is_empty() || !self.methods.is_empty()
    }
}

/// A pattern over text as policies write it: one value, or with a trailing `*` every value
/// starting with what precedes it (`*` alone: any value). A `*` anywhere else is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Values starting with this (the `*` left off).
    Prefix(String),
    Exact(String),
}

impl Pattern {
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Self::Prefix(prefix) => text.starts_with(prefix.as_str()),
            Self::Exact(exact) => text == exact,
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let prefix = text.strip_suffix('*');
        if text.matches('*').count() > usize::from(prefix.is_some()) {
            return Err(format!("{text:?}: `*` may only end a pattern"));
        }
        Ok(match prefix {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(text.to_owned()),
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(exact) => f.write_str(exact),
        }
    }
}

/// A pattern of peer identities: an exact [`SpiffeId`] (as written: its one spelling), a prefix
/// starting with `spiffe://` and ending with `/*`, or `*`. A caller without an identity never
/// reaches a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdentityPattern(Pattern);

impl TryFrom<String> for IdentityPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match Pattern::parse(&text)? {
            Pattern::Prefix(p) if !(p.is_empty() || p.starts_with("spiffe://")) => {
                Err(format!("{text:?}: a prefix pattern starts with spiffe://"))
            }
            // At a segment boundary only: `spiffe://td/ns/default*` would also let in
            // `ns/default-evil`, and `spiffe://td*` another trust domain `td.evil`.
            Pattern::Prefix(p) if !(p.is_empty() || p.ends_with('/')) => Err(format!(
                "{text:?}: a prefix pattern ends with `/*` (e.g. spiffe://<trust-domain>/ns/<namespace>/*), \
                 so it cannot reach past a namespace or trust domain"
            )),
            // Only the identities the mesh CA issues: an exact pattern of another spelling could
            // never match, so it is a mistake worth naming.
            Pattern::Exact(id) => match id.parse::<SpiffeId>() {
                Ok(_) => Ok(Self(Pattern::Exact(id))),
                Err(e) => Err(format!("{e} (or end a pattern with `*`)")),
            },
            prefix => Ok(Self(prefix)),
        }
    }
}

/// A pattern of request paths: exact, or a prefix; each starts with `/` (or is `*`), without a
/// query, fragment, space or control character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPattern(Pattern);

impl TryFrom<String> for PathPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let pattern = Pattern::parse(&text)?;
        let (Pattern::Prefix(body) | Pattern::Exact(body)) = &pattern;
        if !(body.starts_with('/') || text == "*") {
            return Err(format!("{text:?}: a path starts with '/'"));
        }
        if body.contains(['?', '#']) || body.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("{text:?}: a path has no query, fragment, spaces or control characters"));
        }
        Ok(Self(pattern))
    }
}

impl std::ops::Deref for IdentityPattern {
    type Target = Pattern;

    fn deref(&self) -> &Pattern {
        &self.0
    }
}

impl std::ops::Deref for PathPattern {
    type Target = Pattern;

    fn deref(&self) -> &Pattern {
        &self.0
    }
}

impl From<IdentityPattern> for String {
    fn from(pattern: IdentityPattern) -> String {
        pattern.0.to_string()
    }
}

impl From<PathPattern> for String {
    fn from(pattern: PathPattern) -> String {
        pattern.0.to_string()
    }
}

/// What applies to a call to a service no ALLOW policy targets (when no DENY policy matched).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MeshDefault {
    /// Every call.
    Allow,
    /// No call.
    Deny,
    /// Calls from a peer with a verified mesh identity; plaintext callers are refused.
    #[default]
    Authenticated,
}

/// The `authorization` of a `Sidecar` (static mode; in managed mode the control plane's
/// `--authz-default` decides).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct AuthorizationSettings {
    #[serde(default)]
    pub default: MeshDefault,
}

fn ports() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let port = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(65535));
    let max = bounds::MAX_POLICY_ENTRIES as usize;
    ArrayBuilder::new()
        .items(port)
        .max_items(Some(max))
        .description(Some("The service's ports called"))
        .build()
}

impl AuthorizationPolicySpec {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.target_ref.kind != "Service" {
            return Err(FieldError::new(
                "spec.targetRef.kind",
                "an AuthorizationPolicy attaches to a Service",
            ));
        }
        bounds::entries("spec.rules", self.rules.len())?;
        for (r, rule) in self.rules.iter().enumerate() {
            bounds::entries(&format!("spec.rules[{r}].from"), rule.from.len())?;
            bounds::entries(&format!("spec.rules[{r}].to"), rule.to.len())?;
            for (t, to) in rule.to.iter().enumerate() {
                let at = |field: &str| format!("spec.rules[{r}].to[{t}]{field}");
                if !to.is_http_only() && to.ports.is_empty() {
                    return Err(FieldError::new(at(""), "set at least one of paths, methods, ports"));
                }
                bounds::entries(&at(".paths"), to.paths.len())?;
                bounds::entries(&at(".methods"), to.methods.len())?;
                bounds::entries(&at(".ports"), to.ports.len())?;
                if let Some(m) = to.methods.iter().position(|m| http_method(m).is_none()) {
                    return Err(FieldError::new(
                        at(&format!(".methods[{m}]")),
                        format!("{:?} is not an HTTP method (GET, POST, PUT, DELETE, ...)", to.methods[m]),
                    ));
                }
                for (p, port) in to.ports.iter().enumerate() {
                    bounds::port(&at(&format!(".ports[{p}]")), *port)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_stream, Resource};

    fn doc(spec: &str) -> String {
        format!("apiVersion: pilotfish.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: p}}\nspec:\n{spec}")
    }

    const TARGET: &str = "  targetRef: {kind: Service, name: users}\n";

    fn policy(spec: &str) -> AuthorizationPolicySpec {
        let resources = parse_stream("p", &doc(spec)).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let Resource::AuthorizationPolicy(p) = &resources[0] else { panic!("{resources:?}") };
        p.spec.clone()
    }

    #[test]
    fn the_design_example_parses_into_typed_patterns_and_round_trips() {
        let spec = format!(
            "{TARGET}  action: ALLOW\n  rules:\n  - from: [{{identity: \"spiffe://pilotfish.local/ns/default/sa/web\"}}, {{identity: \"spiffe://pilotfish.local/ns/ops/*\"}}, {{identity: \"*\"}}]\n    to: [{{paths: [\"/api/*\", /healthz, \"*\"], methods: [GET], ports: [80, 8080]}}]\n  - {{}}\n"
        );
        let p = policy(&spec);
        assert_eq!(p.action, AuthorizationAction::Allow);
        let from: Vec<&Pattern> = p.rules[0].from.iter().map(|s| &*s.identity).collect();
        assert_eq!(
            from,
            [
                &Pattern::Exact("spiffe://pilotfish.local/ns/default/sa/web".into()),
                &Pattern::Prefix("spiffe://pilotfish.local/ns/ops/".into()),
                &Pattern::Prefix("".into()),
            ]
        );
        let to = &p.rules[0].to[0];
        let paths: Vec<&Pattern> = to.paths.iter().map(|p| &**p).collect();
        assert_eq!(
            paths,
            [
                &Pattern::Prefix("/api/".into()),
                &Pattern::Exact("/healthz".into()),
                &Pattern::Prefix("".into())
            ]
        );
        assert_eq!((to.methods.as_slice(), to.ports.as_slice()), (&["GET".to_owned()][..], &[80, 8080][..]));
        assert_eq!(p.rules[1], AuthorizationRule::default(), "an empty rule matches every call");

        let resources = parse_stream("p", &doc(&spec)).unwrap();
        let json = resources[0].to_json();
        assert_eq!(json["spec"]["rules"][0]["from"][1]["identity"], "spiffe://pilotfish.local/ns/ops/*");
        assert_eq!(json["spec"]["rules"][0]["to"][0]["paths"][2], "*");
        assert_eq!(parse_stream("p", &json.to_string()).unwrap(), resources);

        // null is the field left out, as the API's schema says.
        let nulls = policy(&format!(
            "{TARGET}  action: DENY\n  rules: [{{from: null, to: [{{paths: null, ports: [80]}}]}}]\n"
        ));
        assert_eq!(nulls.rules[0].to[0].ports, [80]);
        assert!(policy(&format!("{TARGET}  action: DENY\n  rules: null\n")).rules.is_empty());
    }

    #[test]
    fn patterns_match_as_documented() {
        let id = |p: &str| IdentityPattern::try_from(p.to_owned()).unwrap();
        let web = "spiffe://pilotfish.local/ns/default/sa/web";
        assert!(id("*").matches(web));
        assert!(id("spiffe://pilotfish.local/ns/default/*").matches(web));
        assert!(!id("spiffe://pilotfish.local/ns/other/*").matches(web));
        assert!(id(web).matches(web) && !id(web).matches(&format!("{web}2")));
        let path = |p: &str| PathPattern::try_from(p.to_owned()).unwrap();
        assert!(path("/api/*").matches("/api/users") && !path("/api/*").matches("/api"));
        assert!(path("/api").matches("/api") && !path("/api").matches("/api/"));
        assert!(path("*").matches("/anything"));
    }

    /// Every bad field is refused with its path from the document root and the reason.
    #[test]
    fn bad_fields_are_named_with_their_path_and_reason() {
        let rule = |r: &str| format!("{TARGET}  action: DENY\n  rules: [{r}]\n");
        let cases = [
            (
                "  targetRef: {kind: HTTPRoute, name: x}\n  action: ALLOW\n".to_owned(),
                "spec.targetRef.kind",
                "attaches to a Service",
            ),
            (format!("{TARGET}  action: PERMIT\n"), "spec.action", "unknown variant `PERMIT`"),
            (format!("{TARGET}  action: allow\n"), "spec.action", "unknown variant `allow`"),
            (TARGET.to_owned(), "spec", "missing field `action`"),
            (
                rule("{from: [{identity: web}]}"),
                "spec.rules[0].from[0].identity",
                "must start with \"spiffe://\" (or end a pattern with `*`)",
            ),
            (
                rule("{from: [{identity: 'spiffe://td/ns/default/sa/'}]}"),
                "spec.rules[0].from[0].identity",
                "the service account \"\" of a SPIFFE ID is not valid",
            ),
            (
                rule("{from: [{identity: 'spiffe://TD/ns/default/sa/web'}]}"),
                "spec.rules[0].from[0].identity",
                "not a valid trust domain",
            ),
            (
                rule("{from: [{identity: 'spiffe://td/ns/d/sa/w/x'}]}"),
                "spec.rules[0].from[0].identity",
                "not a mesh identity",
            ),
            (
                rule("{from: [{identity: 'spiffe://td/ns/*/sa/web'}]}"),
                "spec.rules[0].from[0].identity",
                "may only end",
            ),
            (rule("{from: [{identity: '**'}]}"), "spec.rules[0].from[0].identity", "may only end"),
            (rule("{from: [{identity: 'web*'}]}"), "spec.rules[0].from[0].identity", "starts with spiffe://"),
            (rule("{from: [{}]}"), "spec.rules[0].from[0]", "missing field `identity`"),
            (
                rule("{from: [{identity: '*', namespace: x}]}"),
                "spec.rules[0].from[0].namespace",
                "unknown field",
            ),
            (rule("{to: [{paths: ['api/*']}]}"), "spec.rules[0].to[0].paths[0]", "starts with '/'"),
            (rule("{to: [{paths: ['/a', '/a*b']}]}"), "spec.rules[0].to[0].paths[1]", "may only end"),
            (rule("{to: [{paths: ['/a?b=1']}]}"), "spec.rules[0].to[0].paths[0]", "no query"),
            (rule("{to: [{paths: ['/a b']}]}"), "spec.rules[0].to[0].paths[0]", "spaces"),
            (rule("{to: [{methods: [GET, FETCH]}]}"), "spec.rules[0].to[0].methods[1]", "not an HTTP method"),
            (rule("{to: [{methods: [get]}]}"), "spec.rules[0].to[0].methods[0]", "not an HTTP method"),
            (rule("{to: [{ports: [0]}]}"), "spec.rules[0].to[0].ports[0]", "must be 1-65535, not 0"),
            (rule("{to: [{ports: [80, 65536]}]}"), "spec.rules[0].to[0].ports[1]", "invalid value"),
            (rule("{to: [{ports: [-1]}]}"), "spec.rules[0].to[0].ports[0]", "invalid value"),
            (rule("{}, {to: [{}]}"), "spec.rules[1].to[0]", "set at least one of paths, methods, ports"),
            (rule("{}, null"), "spec.rules[1]", "an empty rule: write {} for one that matches every call"),
            (format!("{TARGET}  action: DENY\n  rules:\n  -\n"), "spec.rules[0]", "an empty rule"),
            (rule("{to: [null]}"), "spec.rules[0].to[0]", "set at least one"),
            (rule("{to: [{paths: [null]}]}"), "spec.rules[0].to[0].paths[0]", "invalid type"),
            (rule("{to: [{hosts: [a]}]}"), "spec.rules[0].to[0].hosts", "unknown field `hosts`"),
            (
                format!("{TARGET}  action: ALLOW\n  selector: {{}}\n"),
                "spec.selector",
                "unknown field `selector`",
            ),
        ];
        for (spec, field, reason) in cases {
            let err = parse_stream("p.yaml", &doc(&spec)).unwrap_err();
            assert_eq!(err.field, field, "{spec}: {err}");
            assert!(err.reason.contains(reason), "{spec}: {err}");
            let text = err.to_string();
            assert!(text.starts_with("p.yaml: document 1 (AuthorizationPolicy default/p): "), "{text}");
        }
    }

    #[test]
    fn lists_are_bounded_and_their_edges_accepted() {
        let max = bounds::MAX_POLICY_ENTRIES as usize;
        let list = |item: &str, n: usize| vec![item; n].join(", ");
        let rules = |n| format!("{TARGET}  action: ALLOW\n  rules: [{}]\n", list("{}", n));
        let paths =
            |n| format!("{TARGET}  action: ALLOW\n  rules: [{{to: [{{paths: [{}]}}]}}]\n", list("/a", n));
        let from =
            |n| format!("{TARGET}  action: ALLOW\n  rules: [{{from: [{}]}}]\n", list("{identity: '*'}", n));
        let ports = format!("{TARGET}  action: ALLOW\n  rules: [{{to: [{{ports: [1, 65535]}}]}}]\n");
        for ok in [rules(max), paths(max), from(max), ports] {
            policy(&ok);
        }
        for (bad, field) in [
            (rules(max + 1), "spec.rules"),
            (paths(max + 1), "spec.rules[0].to[0].paths"),
            (from(max + 1), "spec.rules[0].from"),
        ] {
            let err = parse_stream("p", &doc(&bad)).unwrap_err();
            assert_eq!((err.field.as_str(), err.reason.as_str()), (field, "at most 1024 entries, not 1025"));
        }
    }

    #[test]
    fn the_sidecar_sets_the_mesh_default_and_names_a_bad_one() {
        let sidecar = |spec: &str| {
            parse_stream(
                "s",
                &format!(
                    "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: s}}\nspec:\n{spec}"
                ),
            )
        };
        let default = |r: Vec<Resource>| match &r[0] {
            Resource::Sidecar(s) => s.spec.authorization.default,
            other => panic!("{other:?}"),
        };
        assert_eq!(default(sidecar("  accessLog: false\n").unwrap()), MeshDefault::Authenticated);
        assert_eq!(default(sidecar("  authorization: {default: deny}\n").unwrap()), MeshDefault::Deny);
        assert_eq!(default(sidecar("  authorization: {default: allow}\n").unwrap()), MeshDefault::Allow);
        let err = sidecar("  authorization: {default: permissive}\n").unwrap_err();
        assert_eq!(err.field, "spec.authorization.default", "{err}");
        assert!(err.reason.contains("expected one of `allow`, `deny`, `authenticated`"), "{err}");
    }
}
