//! The configuration in force, as one immutable snapshot built off the hot path from validated
//! `api` resources and swapped in atomically. Lookups a request needs (service by host name, by
//! `ADDRESS:PORT`, by local port) are precomputed maps; metric handles and endpoint connection
//! pools are resolved when it is built.
//! - [`build`]: building one from configuration text, carrying state over from the previous one;
//! - [`overrides`]: command-line settings over the `Sidecar` document;
//! - [`route`]: route tables, `HTTPRoute` rules compiled into matchers;
//! - [`policy`]: a service's `BackendPolicy` in the form the request path reads;
//! - `properties` (tests): no stream of documents panics the builder or the request path.
//!
//! Per-service and per-endpoint runtime state lives in [`crate::upstream`].

pub mod build;
pub mod overrides;
pub mod policy;
#[cfg(test)]
mod properties;
pub mod route;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use pilotfish_api::{Protocol, Resource, SidecarSpec, Warning};
use tokio_util::sync::CancellationToken;

pub use self::overrides::Overrides;
use crate::authz::LocalAuthz;
use crate::telemetry::metrics::{EndpointMetrics, LiveSeries, TargetMetrics};
use crate::upstream::app::InboundRt;
use crate::upstream::service::ServiceRt;

pub struct Snapshot {
    /// Increments with every accepted configuration.
    pub version: u64,
    /// Hash of the configuration text, to tell a real change from a touched file.
    pub hash: u64,
    pub source: String,
    pub resources: Vec<Resource>,
    /// Fields of the configuration accepted with a caveat (kept without effect, or dropped).
    pub warnings: Vec<Warning>,
    /// The effective settings of this sidecar (file plus command-line overrides).
    pub sidecar: SidecarSpec,
    pub name: String,
    pub namespace: String,
    services: HashMap<Arc<str>, Arc<ServiceRt>>,
    by_host: HashMap<String, Arc<ServiceRt>>,
    by_addr: HashMap<SocketAddr, (Arc<ServiceRt>, Option<Protocol>)>,
    pub local_ports: Vec<(u16, Arc<str>)>,
    pub inbound: Option<InboundRt>,
    /// The `AuthorizationPolicy` documents by service with the mesh default, as this sidecar's
    /// inbound path checks calls into its service.
    pub authz: LocalAuthz,
    pub passthrough: TargetMetrics,
    /// Labels requests refused before a service was chosen (no route).
    pub unrouted: EndpointMetrics,
    /// Cancelled when this snapshot is replaced: stops its active health checks.
    pub retired: CancellationToken,
}

impl Snapshot {
    pub fn service(&self, key: &str) -> Option<&Arc<ServiceRt>> {
        self.services.get(key)
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceRt>> {
        self.services.values()
    }

    /// The service an HTTP authority (`users`, `users.default:80`, ...) names.
    pub fn service_by_authority(&self, authority: &str) -> Option<&Arc<ServiceRt>> {
        let host = strip_port(authority).trim_end_matches('.');
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&host.to_ascii_lowercase())
        } else {
            self.by_host.get(host)
        }
    }

    /// The service dialled as `ADDRESS:PORT` (transparent mode), with the port's protocol.
    pub fn service_by_addr(&self, addr: SocketAddr) -> Option<&(Arc<ServiceRt>, Option<Protocol>)> {
        self.by_addr.get(&addr)
    }

    /// The metric series this configuration uses; the rest are retired when it takes over
    /// ([`Metrics::retire`](crate::telemetry::metrics::Metrics::retire)).
    pub fn live_series(&self) -> LiveSeries {
        let mut live = LiveSeries::default();
        for svc in self.services.values() {
            live.service(&svc.key);
            for endpoint in &svc.endpoints {
                live.endpoint(&svc.key, &endpoint.label);
            }
            for (route, _) in svc.routes.limiters() {
                live.route(&svc.key, route);
            }
        }
        if let Some(inbound) = &self.inbound {
            live.service(&self.name);
            live.endpoint(&self.name, &inbound.app.label);
        }
        live
    }

    /// The configuration as `GET /config` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "hash": format!("{:016x}", self.hash),
            "source": self.source,
            "sidecar": self.sidecar,
            "resources": self.resources.iter().map(Resource::to_json).collect::<Vec<_>>(),
        })
    }

    /// Keeps the listener addresses and connection limit of the running snapshot (listeners
    /// are bound once), so `/config` shows what is in force. Returns whether the file asked for
    /// something different.
    pub fn keep_listeners_of(&mut self, running: &Snapshot) -> bool {
        let (new, old) = (&mut self.sidecar, &running.sidecar);
        let inbound_listen = |s: &SidecarSpec| s.inbound.as_ref().map(|i| i.listen);
        let differ = new.admin != old.admin
            || new.outbound.listen != old.outbound.listen
            || (new.inbound.is_some() && inbound_listen(new) != inbound_listen(old))
            || new.limits.max_connections != old.limits.max_connections;
        new.admin = old.admin;
        new.outbound.listen = old.outbound.listen;
        new.limits.max_connections = old.limits.max_connections;
        if let (Some(new), Some(old)) = (&mut new.inbound, &old.inbound) {
            new.listen = old.listen;
        }
        differ
    }
}

fn strip_port(authority: &str) -> &str {
    // "[::1]:80" → "[::1]"; "users:80" → "users"; "users" → "users".
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}
