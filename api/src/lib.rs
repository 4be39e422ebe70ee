//! The shared model of Pilotfish: configuration resources, registry records and their validation.
//!
//! Serde types and validation only — no I/O. Every other crate learns configuration through these
//! types, validated once here into values that deeper code never re-checks.
//!
//! # Adding a resource kind
//! Its spec type in a file of its own, like [`service`]: serde and `utoipa::ToSchema` derives,
//! defaults and `minimum`/`maximum` on the fields, and a `validate` that checks every number
//! against a [`bounds`] constant (add one for a new limit). Then a variant of [`Resource`] with
//! its `apiVersion` in `document/resource.rs`, its branch in `document/parse.rs`, and its branch
//! of the document schema in [`schema`] (a test there fails until every kind has one).
//!
//! # Layout
//! - [`document`]: the Kubernetes-style envelope (`apiVersion`, `kind`, `metadata`, `spec`) and the
//!   parser for a multi-document YAML stream, with errors that name the document, field and reason.
//! - [`sidecar`]: the `Sidecar` kind — one sidecar's listeners, timeouts and limits.
//! - [`service`]: the `Service` kind — a service's ports and (in static mode) its endpoints.
//! - [`route`]: the `HTTPRoute` kind (Gateway API v1 shape): matches, filters, weighted
//!   backends, timeouts, retries.
//! - [`identity`]: [`SpiffeId`], a workload's mesh identity, strictly parsed; `certificate`
//!   (feature `x509`): reading it from a certificate's URI SAN.
//! - [`mtls`]: mesh mTLS modes of an inbound port (`strict`, `permissive`, `disabled`).
//! - [`policy`]: `BackendPolicy` and `RateLimitPolicy`, attached by `targetRef`.
//! - [`authz`]: the `AuthorizationPolicy` kind — which peers may call a service, attached by
//!   `targetRef` — and the mesh default for services no ALLOW policy targets.
//! - [`rollout`]: the `Rollout` kind — progressive delivery of a canary Service behind an
//!   HTTPRoute: the steps, the analysis, the rollback mode.
//! - [`schema`]: the OpenAPI schema of a whole document (`Resource`), closed to unknown fields
//!   as the API is; each spec type derives its own beside its serde derives.
//! - [`field`]: `FieldError`, what every check returns: a field path and why.
//! - [`bounds`]: the range of every number in a resource (what the runtime accepts).
//! - [`duration`]: Gateway API style durations (`500ms`, `2s`, `1h30m`).
//! - [`manifest`]: carrying Kubernetes manifests over — what `kubectl get -o yaml` adds that is
//!   dropped, and the Gateway API features that are warned about or refused.
//! - [`app_probe`]: the app's own probes as the injector hands them to the sidecar's status port
//!   (`PILOTFISH_APP_PROBES`).
//! - [`wire`]: the control-plane API's and push protocol's messages, used by both ends, with the
//!   protocol version and the supported version skew.
//! - `client` (feature `client`, the one part with I/O): the typed client of the control
//!   plane's API, used by the CLI, the managed sidecar and the tests.

#![forbid(unsafe_code)]

pub mod app_probe;
pub mod authz;
pub mod bounds;
#[cfg(feature = "x509")]
pub mod certificate;
#[cfg(feature = "client")]
pub mod client;
pub mod document;
pub mod duration;
pub mod field;
pub mod identity;
pub mod manifest;
pub mod mtls;
pub mod policy;
pub mod rollout;
pub mod route;
pub mod schema;
pub mod service;
pub mod sidecar;
pub mod wire;

pub use document::{
    parse, parse_stream, parse_with, ConfigError, Metadata, Parsed, Resource, UnknownFields, Warning,
};
pub use duration::Duration;
pub use identity::SpiffeId;
pub use service::{Endpoint, Protocol, ServicePort, ServiceSpec};
pub use sidecar::SidecarSpec;
