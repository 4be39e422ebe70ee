//! The Pilotfish control plane: the source of truth for the mesh (service registry, routes and
//! policies) and what pushes it to the sidecars. See `shared/DESIGN.md`, "The control plane".
//!
//! # Layout
//!
//! - [`core`]: the control plane itself — [`core::ControlPlane`] (the store, the read model
//!   kept up with the log, leases, proxies) and every operation on it, one file per resource
//!   group (`resources`, `log`, `registry`, `tokens`, `sync`, `status`). Operations take typed
//!   inputs and a [`core::Caller`] and fail with a [`core::Error`]; no HTTP in it.
//! - [`http`]: the `/v1` API on top — router, one file per resource group, auth as an
//!   extractor, the one error → response mapping, and the OpenAPI document generated from the
//!   handlers and the `pilotfish_api::wire` types (`utoipa`).
//! - [`push`]: the sidecars' configuration streams: the proxies' sync status, the snapshot
//!   (built from typed documents and endpoint records, cached per version), one stream per sidecar.
//! - [`store`]: the event log every change is appended to (optimistic concurrency, idempotency
//!   keys, snapshots, head watch), behind the `EventStore` trait; `store::Embedded` (redb) is the
//!   default, `store::Etcd` shares the log between replicas.
//! - [`model`]: the read model (CQRS projection) folded from the log: resources, registered
//!   endpoints, join tokens; diff and rollback between points of the log.
//! - [`ca`]: the mesh CA — a root and issuer generated at first start in `<data-dir>/ca/` (keys
//!   mode 0600) or supplied as files, signing workload leaves from CSRs for the identity the
//!   caller's credential decides; the trust bundle. No HTTP in it.
//! - [`inject`]: sidecar injection for Kubernetes — the one mutation behind `pilotfish inject`
//!   and the admission webhook (`POST /inject`), its inverse, and the webhook's JSONPatch.
//! - [`kubernetes`]: `--kubernetes` — Services, EndpointSlices and Pods into the registry
//!   (through [`core::Discovered`], never the log), TokenReview for sidecars' ServiceAccount
//!   tokens, the trust-bundle ConfigMaps and the injector webhook's `caBundle`.
//! - [`names`]: a service and namespace as requests name them (DNS labels, `default`).
//! - [`history`]: the configuration at earlier points of the log, from checkpoints, at a
//!   bounded cost per request.
//! - [`listener`]: [`listener::serve`], the one way a control plane runs (`pilotfish
//!   control-plane` and `pilotfish up`), plaintext or TLS.
//! - [`rollout`]: progressive delivery as a saga — each `Rollout`'s steps, verdicts and
//!   compensations as events, the decisions over them, and the driver that takes them.
//! - [`telemetry`]: the sidecars' telemetry reports in per-edge rolling windows (bounded
//!   memory), and the rows of `/v1/stats`. No HTTP in it.
//! - [`tls`]: when the API is served over TLS (not loopback only, unless `--insecure`), its
//!   certificate from the mesh CA, and accepting TLS connections.
//!
//! # Where to add things
//!
//! - **A resource kind**: its type, validation and schema in `pilotfish-api` (a `Resource`
//!   variant, its branch in `api/src/schema.rs`), then its name in [`core::KINDS`]; apply,
//!   list, get, delete, history and push carry it as they carry the others.
//! - **An API endpoint**: the operation as a method on `ControlPlane` in the `core` file of its
//!   resource group (typed inputs, [`core::Error`] out); its request/response types in
//!   `pilotfish_api::wire` (deriving `utoipa::ToSchema`); a handler with `#[utoipa::path]` in
//!   that group's `http` file, added to the file's `routes()`. The route and its OpenAPI entry
//!   come from the same `routes!` line; a new error case gets its status in `http/error.rs`; a
//!   rule the server checks that a type's schema cannot say (a pattern, a range) goes into
//!   `http/doc.rs`, so schemathesis (`tests/control_plane/openapi.rs`) keeps finding nothing.

#![forbid(unsafe_code)]

pub mod ca;
pub mod core;
pub mod history;
pub mod http;
pub mod inject;
pub mod kubernetes;
pub mod listener;
pub mod model;
pub mod names;
pub mod ndjson;
pub mod push;
pub mod rollout;
pub mod store;
pub mod telemetry;
pub mod tls;
