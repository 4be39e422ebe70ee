//! YAML (or JSON) text to validated resources: each document's kind and version looked up, what
//! a cluster adds carried over (see [`crate::manifest`]), the spec typed and validated, unknown
//! fields refused or tolerated; then the stream checked as a whole.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::metadata::{validate_labels_and_annotations, validate_name, Metadata};
use super::resource::{Object, Resource, KINDS};
use super::stream::validate_stream;
use crate::authz::AuthorizationPolicySpec;
use crate::field::FieldError;
use crate::manifest::{self, FieldWarning};
use crate::policy::{BackendPolicySpec, RateLimitPolicySpec};
use crate::rollout::RolloutSpec;
use crate::route::HttpRouteSpec;
use crate::{ServiceSpec, SidecarSpec};

/// Why a configuration stream was refused: which source, which document, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Where the stream came from (a file path, `-`, an API request).
    pub origin: String,
    /// 1-based position of the document in the stream.
    pub document: usize,
    /// `Kind namespace/name`, when the document got far enough to have them.
    pub object: Option<String>,
    /// Field path from the document root (`spec.endpoints[1].address`); empty for the whole document.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.origin, self.document)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    spec: S,
}

/// A field accepted with a caveat: kept without effect, or dropped (see [`crate::manifest`]).
/// Serialized for API clients without the origin, which is theirs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    #[serde(skip)]
    pub origin: String,
    /// 1-based position of the document in the stream.
    pub document: usize,
    /// `Kind namespace/name`.
    pub object: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { origin, document, object, field, message } = self;
        write!(f, "{origin}: document {document} ({object}): {field}: {message}")
    }
}

/// A valid stream, and what its reader should be told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub resources: Vec<Resource>,
    pub warnings: Vec<Warning>,
}

/// Parses and validates a multi-document YAML (or JSON) stream. Either every document is valid
/// and the whole stream is returned, or the first error is; nothing is half-accepted.
pub fn parse_stream(source: &str, text: &str) -> Result<Vec<Resource>, ConfigError> {
    parse(source, text).map(|parsed| parsed.resources)
}

/// What parsing does with a field this version does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFields {
    /// Refuse it, naming the field: what users write (files, the API) is checked strictly, so a
    /// typo never passes silently.
    Refuse,
    /// Ignore it with a warning: configuration pushed by a control plane of a newer version may
    /// carry fields this sidecar does not know yet (the supported skew is in the README).
    Tolerate,
}

/// [`parse_stream`], with the warnings about fields accepted with a caveat.
pub fn parse(source: &str, text: &str) -> Result<Parsed, ConfigError> {
    parse_with(source, text, UnknownFields::Refuse)
}

/// [`parse`], choosing what an unknown field does.
pub fn parse_with(source: &str, text: &str, unknown: UnknownFields) -> Result<Parsed, ConfigError> {
    let mut resources = Vec::new();
    let mut positions = Vec::new();
    let mut warnings = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let error = |object: Option<String>, e: FieldError| ConfigError {
            origin: source.to_owned(),
            document: index + 1,
            object,
            field: e.field,
            reason: e.reason,
        };
        let value = serde_yaml_ng::Value::deserialize(doc)
            .map_err(|e| error(None, FieldError::new("", format!("not valid YAML: {e}"))))?;
        if value.is_null() {
            continue;
        }
        if unknown == UnknownFields::Tolerate {
            if let Some(object) = kind_from_the_future(&value) {
                let message = "kind not known to this version: ignored".to_owned();
                let (origin, document) = (source.to_owned(), index + 1);
                warnings.push(Warning { origin, document, object, field: "kind".into(), message });
                continue;
            }
        }
        let (resource, caveats) = parse_document(value, unknown).map_err(|(object, e)| error(object, e))?;
        warnings.extend(caveats.into_iter().map(|w| Warning {
            origin: source.to_owned(),
            document: index + 1,
            object: resource.describe(),
            field: w.field,
            message: w.message,
        }));
        resources.push(resource);
        positions.push(index + 1);
    }
    validate_stream(&resources).map_err(|(i, e)| ConfigError {
        origin: source.to_owned(),
        document: positions[i],
        object: Some(resources[i].describe()),
        field: e.field,
        reason: e.reason,
    })?;
    Ok(Parsed { resources, warnings })
}

type DocumentError = (Option<String>, FieldError);

/// `Kind namespace/name` of a document whose kind this version does not know (with its
/// `apiVersion` and `kind` present): a newer control plane pushes kinds an older sidecar
/// skips, as it skips fields it does not know, rather than refusing the whole snapshot.
fn kind_from_the_future(value: &serde_yaml_ng::Value) -> Option<String> {
    let text = |field: &str| value.get(field).and_then(|v| v.as_str());
    let kind = text("kind")?;
    text("apiVersion")?;
    if KINDS.iter().any(|(k, _)| *k == kind) {
        return None;
    }
    Some(object_of_document(value, kind))
}

/// `Kind namespace/name` of a document, as errors and warnings name it (before it is parsed).
fn object_of_document(value: &serde_yaml_ng::Value, kind: &str) -> String {
    let meta = |field: &str| value.get("metadata").and_then(|m| m.get(field)).and_then(|v| v.as_str());
    format!("{kind} {}/{}", meta("namespace").unwrap_or("default"), meta("name").unwrap_or(""))
}

fn parse_document(
    mut value: serde_yaml_ng::Value,
    unknown: UnknownFields,
) -> Result<(Resource, Vec<FieldWarning>), DocumentError> {
    let text = |field: &str| value.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    let api_version = text("apiVersion").ok_or_else(|| {
        (None, FieldError::new("apiVersion", "missing: every document needs apiVersion and kind"))
    })?;
    let kind = text("kind").ok_or_else(|| {
        (None, FieldError::new("kind", "missing: every document needs apiVersion and kind"))
    })?;
    let object = Some(object_of_document(&value, &kind));
    let Some((_, expected)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
        let reason = format!("unknown kind {kind:?}: expected one of {}", known.join(", "));
        return Err((object, FieldError::new("kind", reason)));
    };
    if api_version != *expected {
        let reason = format!("{kind} is served as {expected}, not {api_version}");
        return Err((object, FieldError::new("apiVersion", reason)));
    }
    let mut warnings = manifest::carry_over(&kind, &mut value).map_err(|e| (object.clone(), e))?;
    fn object_of<S: DeserializeOwned>(
        value: serde_yaml_ng::Value,
        unknown: UnknownFields,
        object: &Option<String>,
        warnings: &mut Vec<FieldWarning>,
        validate: impl Fn(&S) -> Result<(), FieldError>,
    ) -> Result<Object<S>, DocumentError> {
        let (env, ignored): (Envelope<S>, _) = typed(value, unknown).map_err(|e| (object.clone(), e))?;
        warnings.extend(ignored);
        validate(&env.spec).map_err(|e| (object.clone(), e))?;
        Ok(Object { metadata: env.metadata, spec: env.spec })
    }
    let w = &mut warnings;
    let resource = match kind.as_str() {
        "Sidecar" => {
            Resource::Sidecar(Box::new(object_of(value, unknown, &object, w, SidecarSpec::validate)?))
        }
        "Service" => Resource::Service(object_of(value, unknown, &object, w, ServiceSpec::validate)?),
        "HTTPRoute" => Resource::HttpRoute(object_of(value, unknown, &object, w, HttpRouteSpec::validate)?),
        "BackendPolicy" => Resource::BackendPolicy(Box::new(object_of(
            value,
            unknown,
            &object,
            w,
            BackendPolicySpec::validate,
        )?)),
        "RateLimitPolicy" => Resource::RateLimitPolicy(Box::new(object_of(
            value,
            unknown,
            &object,
            w,
            RateLimitPolicySpec::validate,
        )?)),
        "Rollout" => {
            let rollout = object_of(value, unknown, &object, w, RolloutSpec::validate)?;
            rollout.spec.validate_in(&rollout.metadata.namespace).map_err(|e| (object.clone(), e))?;
            Resource::Rollout(Box::new(rollout))
        }
        _ => Resource::AuthorizationPolicy(Box::new(object_of(
            value,
            unknown,
            &object,
            w,
            AuthorizationPolicySpec::validate,
        )?)),
    };
    let m = resource.metadata();
    let object = Some(resource.describe());
    validate_name(&m.name).map_err(|r| (object.clone(), FieldError::new("metadata.name", r)))?;
    validate_name(&m.namespace).map_err(|r| (object.clone(), FieldError::new("metadata.namespace", r)))?;
    validate_labels_and_annotations(m).map_err(|e| (object, e))?;
    Ok((resource, warnings))
}

/// Deserializes `value`, noting every field it does not know: refused (the first one), or
/// returned as warnings.
fn typed<S: DeserializeOwned>(
    value: serde_yaml_ng::Value,
    unknown: UnknownFields,
) -> Result<(S, Vec<FieldWarning>), FieldError> {
    let mut ignored = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| ignored.push(field_path(&path));
    let de = serde_ignored::Deserializer::new(value, &mut note);
    let typed = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        FieldError::new(field, e.into_inner().to_string())
    })?;
    match unknown {
        UnknownFields::Refuse => match ignored.into_iter().next() {
            Some(field) => {
                let name = field.rsplit(['.', '[']).next().unwrap_or(&field).to_owned();
                Err(FieldError::new(field, format!("unknown field `{name}`: check its spelling and place")))
            }
            None => Ok((typed, Vec::new())),
        },
        UnknownFields::Tolerate => {
            let message = "not known to this version: ignored".to_owned();
            Ok((
                typed,
                ignored.into_iter().map(|field| FieldWarning { field, message: message.clone() }).collect(),
            ))
        }
    }
}

/// `spec.endpoints[1].zone`, the form every error and warning uses.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            field_path(parent)
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {name: web}
spec:
  admin: 127.0.0.1:15000
  inbound:  {listen: 0.0.0.0:15006, app: 127.0.0.1:8080}
  outbound: {listen: 127.0.0.1:15001}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: users, namespace: default}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: 127.0.0.1:9001}, {address: 127.0.0.1:9002}]
  localPort: 18081
"#;

    #[test]
    fn parses_the_contract_example() {
        let resources = parse_stream("web.yaml", GOOD).unwrap();
        assert_eq!(resources.len(), 2);
        let Resource::Service(users) = &resources[1] else { panic!("not a service") };
        assert_eq!(users.metadata.name, "users");
        assert_eq!(users.spec.endpoints.len(), 2);
        assert_eq!(users.spec.local_port, Some(18081));
        assert_eq!(users.spec.protocol(None), Some(crate::Protocol::Http));
        let Resource::Sidecar(web) = &resources[0] else { panic!("not a sidecar") };
        assert_eq!(web.spec.inbound.as_ref().unwrap().app.port(), 8080);
        assert_eq!(web.spec.timeouts.drain, crate::Duration::from_secs(30));
    }

    #[test]
    fn errors_name_document_field_and_reason() {
        let bad = GOOD.replace("127.0.0.1:9002", "127.0.0.1:nine");
        let err = parse_stream("web.yaml", &bad).unwrap_err();
        assert_eq!(err.document, 2);
        assert_eq!(err.field, "spec.endpoints[1].address");
        let text = err.to_string();
        assert!(
            text.starts_with("web.yaml: document 2 (Service default/users): spec.endpoints[1].address: "),
            "{text}"
        );
    }

    #[test]
    fn a_newer_control_planes_fields_are_tolerated_with_a_warning_and_refused_from_users() {
        let future = GOOD
            .replace("localPort: 18081", "localPort: 18081\n  trafficPolicy: {zoneAware: true}")
            .replace("{address: 127.0.0.1:9001}", "{address: 127.0.0.1:9001, zone: eu-1}");
        let err = parse_stream("f", &future).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason.contains("unknown field")),
            ("spec.endpoints[0].zone", true)
        );
        let parsed = parse_with("f", &future, UnknownFields::Tolerate).unwrap();
        let tolerant = parse_stream("f", GOOD).unwrap();
        assert_eq!(parsed.resources, tolerant, "the known fields mean what they meant");
        let fields: Vec<&str> = parsed.warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(fields, ["spec.endpoints[0].zone", "spec.trafficPolicy"]);
    }

    #[test]
    fn a_newer_control_planes_kinds_are_skipped_with_a_warning_and_refused_from_users() {
        let future = format!(
            "{GOOD}---\napiVersion: pilotfish.io/v1beta1\nkind: TrafficMirror\nmetadata: {{name: m, namespace: shop}}\nspec: {{to: x}}\n"
        );
        let err = parse_stream("f", &future).unwrap_err();
        assert_eq!((err.document, err.field.as_str()), (3, "kind"));
        let parsed = parse_with("f", &future, UnknownFields::Tolerate).unwrap();
        assert_eq!(parsed.resources, parse_stream("f", GOOD).unwrap());
        let skipped: Vec<(usize, &str, &str)> =
            parsed.warnings.iter().map(|w| (w.document, w.object.as_str(), w.field.as_str())).collect();
        assert_eq!(skipped, [(3, "TrafficMirror shop/m", "kind")]);
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        let err = parse_stream("f", &GOOD.replace("localPort", "localport")).unwrap_err();
        assert_eq!(err.field, "spec.localport");
        assert!(err.reason.contains("unknown field `localport`"), "{}", err.reason);

        let err = parse_stream("f", &GOOD.replace("kind: Service", "kind: Servise")).unwrap_err();
        assert_eq!((err.document, err.field.as_str()), (2, "kind"));

        let err =
            parse_stream("f", &GOOD.replace("v1alpha1\nkind: Service", "v1\nkind: Service")).unwrap_err();
        assert_eq!(err.field, "apiVersion");
    }

    #[test]
    fn semantic_checks_run_after_shape_checks() {
        let err = parse_stream("f", &GOOD.replace("9002", "9001")).unwrap_err();
        assert_eq!(err.field, "spec.endpoints[1].address");
        assert!(err.reason.contains("twice"));

        let err = parse_stream("f", &GOOD.replace("name: users", "name: Users")).unwrap_err();
        assert_eq!(err.field, "metadata.name");

        let twice = format!("{GOOD}---\n{}", GOOD.split("---").nth(1).unwrap());
        let err = parse_stream("f", &twice).unwrap_err();
        assert_eq!(err.document, 3);
    }

    #[test]
    fn labels_and_annotations_are_kept_on_every_kind_and_checked_like_kubernetes_does() {
        let labelled = GOOD.replace(
            "metadata: {name: users, namespace: default}",
            "metadata: {name: users, namespace: default, labels: {app.kubernetes.io/name: users, tier: ''}, annotations: {example.com/note: 'any text: here'}}",
        );
        let resources = parse_stream("f", &labelled).unwrap();
        let json = resources[1].to_json();
        assert_eq!(json["metadata"]["labels"]["app.kubernetes.io/name"], "users");
        assert_eq!(json["metadata"]["labels"]["tier"], "");
        assert_eq!(json["metadata"]["annotations"]["example.com/note"], "any text: here");

        let bad = |meta: &str| {
            parse_stream("f", &GOOD.replace("{name: users, namespace: default}", meta)).unwrap_err()
        };
        let err = bad("{name: users, labels: {tier: 'front end'}}");
        assert_eq!(err.field, "metadata.labels.tier");
        assert!(err.reason.contains("63 letters"), "{err}");
        assert_eq!(bad("{name: users, labels: {'-a': b}}").field, "metadata.labels.-a");
        assert_eq!(bad("{name: users, labels: {Example.com/a: b}}").field, "metadata.labels.Example.com/a");
        assert_eq!(
            bad(&format!("{{name: users, labels: {{a: {}}}}}", "x".repeat(64))).field,
            "metadata.labels.a"
        );
        assert_eq!(bad("{name: users, annotations: {'a b': c}}").field, "metadata.annotations.a b");
        let huge = format!("{{name: users, annotations: {{a: {}}}}}", "x".repeat(256 * 1024));
        assert_eq!(bad(&huge).field, "metadata.annotations");
    }

    #[test]
    fn yaml_syntax_errors_are_reported_per_document() {
        let err = parse_stream("f", "kind: Service\n---\n{unclosed: [").unwrap_err();
        assert_eq!(err.document, 1);
        let err = parse_stream("f", &format!("{GOOD}---\n{{unclosed: [")).unwrap_err();
        assert_eq!(err.document, 3);
        assert!(err.reason.starts_with("not valid YAML"));
    }

    #[test]
    fn round_trips_through_json() {
        let resources = parse_stream("f", GOOD).unwrap();
        let json = resources[1].to_json();
        assert_eq!(json["spec"]["endpoints"][0]["address"], "127.0.0.1:9001");
        assert_eq!(json["kind"], "Service");
        let again = parse_stream("f", &serde_json::to_string(&json).unwrap()).unwrap();
        assert_eq!(again[0], resources[1]);
    }
}

#[cfg(test)]
mod examples {
    #[test]
    fn shipped_examples_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                super::parse_stream(&path.display().to_string(), &text).unwrap();
                checked += 1;
            }
        }
        assert!(checked > 0, "no examples found in {dir}");
    }
}
