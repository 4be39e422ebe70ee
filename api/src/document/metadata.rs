//! An object's metadata, and Kubernetes' rules for its name, labels and annotations, so they
//! carry over both ways.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::field::FieldError;

/// What Pilotfish keeps of an object's metadata (what a cluster sets is dropped first, see
/// [`crate::manifest`]); labels and annotations are stored and shown back, with no effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length = 63)]
    pub name: String,
    #[serde(default = "default_namespace")]
    #[schema(default = default_namespace, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length = 63)]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// Names follow Kubernetes' DNS-1123 label rule, so they can appear in host names.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
        ))
    }
}

/// Kubernetes' rules, so labels and annotations carry over both ways (and stay bounded).
pub(super) fn validate_labels_and_annotations(m: &Metadata) -> Result<(), FieldError> {
    for (key, value) in &m.labels {
        let field = || format!("metadata.labels.{key}");
        qualified_name(key).map_err(|r| FieldError::new(field(), r))?;
        if !label_value(value) {
            return Err(FieldError::new(
                field(),
                "a label value is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            ));
        }
    }
    for key in m.annotations.keys() {
        qualified_name(key).map_err(|r| FieldError::new(format!("metadata.annotations.{key}"), r))?;
    }
    let size: usize = m.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ANNOTATIONS_BYTES {
        return Err(FieldError::new(
            "metadata.annotations",
            format!("{size} bytes: annotations total at most {MAX_ANNOTATIONS_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Kubernetes' bound on the annotations of one object.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = key.split_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    let subdomain = |p: &str| {
        p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    };
    if prefix.is_some_and(|p| !subdomain(p)) {
        return Err(format!("{key:?}: the prefix before '/' must be a DNS subdomain, e.g. example.com"));
    }
    if name.is_empty() || !label_value(name) {
        return Err(format!(
            "{key:?}: a key is an optional prefix and '/', then 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn label_value(value: &str) -> bool {
    let edge = |b: Option<u8>| b.is_none_or(|b| b.is_ascii_alphanumeric());
    value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && edge(value.bytes().next())
        && edge(value.bytes().last())
}
