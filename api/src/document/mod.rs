//! A configuration document: the Kubernetes-style envelope (`apiVersion`, `kind`, `metadata`,
//! `spec`), and the parser for a multi-document YAML stream.
//!
//! Every error names the source, the document (its position, kind and name), the field path and
//! the reason, e.g. `web.yaml: document 2 (Service default/users): spec.endpoints[1].address:
//! invalid socket address syntax`.
//!
//! - `resource`: every kind, with its `apiVersion`, as a [`Resource`].
//! - `metadata`: [`Metadata`] and Kubernetes' rules for names, labels and annotations.
//! - `parse`: YAML text to validated resources, one document at a time.
//! - `stream`: the checks across the documents of one stream (duplicates, addresses, ports).

mod metadata;
mod parse;
mod resource;
mod stream;

pub use metadata::{validate_name, Metadata};
pub use parse::{parse, parse_stream, parse_with, ConfigError, Parsed, UnknownFields, Warning};
pub(crate) use resource::KINDS;
pub use resource::{Object, Resource, PILOTFISH_V1ALPHA1};
