//! The configuration in force, as one immutable snapshot built off the hot path from validated
//! `api` resources and swapped in atomically. Lookups a request needs (service by host name, by
//! `ADDRESS:PORT`, by local port) are precomputed maps; a service's runtime state — metric
//! handles, endpoint connection pools, route table — is built once, when the snapshot is built
//! or the first time a request needs it, and after that a lookup is a map read and an atomic
//! load.
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
use std::sync::{Arc, OnceLock};

use pilotfish_api::{Protocol, Resource, SidecarSpec, Warning};
use tokio_util::sync::CancellationToken;

use self::build::Builder;
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
    /// Every configured service; the maps below point into it.
    slots: Box<[ServiceSlot]>,
    /// By key, `name.namespace` (host names are resolved to a key, not kept per service).
    services: HashMap<Arc<str>, u32>,
    by_addr: HashMap<SocketAddr, (u32, Option<Protocol>)>,
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
    builder: Builder,
}

/// A configured service: where its configuration is, and its runtime state once built.
struct ServiceSlot {
    /// `name.namespace`.
    key: Arc<str>,
    /// Positions in the snapshot's resources: the Service, its HTTPRoutes (in name order), its
    /// BackendPolicy and its service-wide RateLimitPolicy.
    service: u32,
    routes: Box<[u32]>,
    backend: Option<u32>,
    rate_limit: Option<u32>,
    built: OnceLock<Arc<ServiceRt>>,
}

impl Snapshot {
    /// The service with key `name.namespace`, built if this is the first time it is needed.
    pub fn service(&self, key: &str) -> Option<&Arc<ServiceRt>> {
        self.services.get(key).map(|&slot| self.slot(slot))
    }

    /// The service in `slot`; only its first use builds it (once, whoever asks at the same
    /// time), every later one is an atomic load.
    fn slot(&self, slot: u32) -> &Arc<ServiceRt> {
        let slot = &self.slots[slot as usize];
        slot.built.get_or_init(|| self.builder.service(&self.resources, slot, None))
    }

    /// The service with key `name.namespace` if something has needed it (never builds it).
    fn built(&self, key: &str) -> Option<&Arc<ServiceRt>> {
        self.slots[*self.services.get(key)? as usize].built.get()
    }

    /// Builds the services `old` has built and this snapshot has not, carrying their breakers,
    /// budgets and counters over. Called by the build, and again once this snapshot is in force
    /// and before `old`'s series are retired (for a first call that raced the reload), so no
    /// service in use starts afresh or loses its series.
    pub fn catch_up(&self, old: &Snapshot) {
        for slot in self.slots.iter().filter(|s| s.built.get().is_none()) {
            if old.built(&slot.key).is_some() {
                let _ = slot.built.set(self.builder.service(&self.resources, slot, Some(old)));
            }
        }
    }

    /// The services built so far: those requests have needed, and those with health checks.
    pub fn built_services(&self) -> impl Iterator<Item = &Arc<ServiceRt>> {
        self.slots.iter().filter_map(|s| s.built.get())
    }

    /// Every configured service, building those not built yet.
    #[cfg(test)]
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceRt>> {
        (0..self.slots.len() as u32).map(|slot| self.slot(slot))
    }

    /// The service an HTTP authority (`users`, `users.default:80`, ...) names.
    pub fn service_by_authority(&self, authority: &str) -> Option<&Arc<ServiceRt>> {
        let host = strip_port(authority).trim_end_matches('.');
        let slot = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.slot_by_host(&host.to_ascii_lowercase())
        } else {
            self.slot_by_host(host)
        };
        slot.map(|slot| self.slot(slot))
    }

    /// Host names as Kubernetes DNS resolves them: `name.namespace`, with `.svc` or
    /// `.svc.cluster.local` after it, and the bare name within the sidecar's own namespace.
    /// (Names and namespaces are DNS labels, without dots.)
    fn slot_by_host(&self, host: &str) -> Option<u32> {
        let dots = |s: &str| s.bytes().filter(|b| *b == b'.').count();
        for suffix in [".svc.cluster.local", ".svc"] {
            let key = host.strip_suffix(suffix).filter(|key| dots(key) == 1);
            if let Some(&slot) = key.and_then(|key| self.services.get(key)) {
                return Some(slot);
            }
        }
        match dots(host) {
            0 => {
                // `name.namespace` assembled on the stack: no allocation per request.
                let mut key = [0u8; 128];
                let len = host.len() + 1 + self.namespace.len();
                let key = key.get_mut(..len)?;
                key[..host.len()].copy_from_slice(host.as_bytes());
                key[host.len()] = b'.';
                key[host.len() + 1..].copy_from_slice(self.namespace.as_bytes());
                self.services.get(std::str::from_utf8(key).ok()?).copied()
            }
            1 => self.services.get(host).copied(),
            _ => None,
        }
    }

    /// The service dialled as `ADDRESS:PORT` (transparent mode), with the port's protocol.
    pub fn service_by_addr(&self, addr: SocketAddr) -> Option<(&Arc<ServiceRt>, Option<Protocol>)> {
        self.by_addr.get(&addr).map(|&(slot, protocol)| (self.slot(slot), protocol))
    }

    /// The metric series this configuration uses; the rest are retired when it takes over
    /// ([`Metrics::retire`](crate::telemetry::metrics::Metrics::retire)). A service not built
    /// yet has no series of its own to keep, but its name stays live.
    pub fn live_series(&self) -> LiveSeries {
        let mut live = LiveSeries::default();
        for slot in &self.slots {
            live.service(&slot.key);
        }
        for svc in self.built_services() {
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
