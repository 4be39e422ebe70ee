//! Mesh telemetry: the sidecars' reports folded into per-edge rolling windows
//! ([`window::Window`], 1 s resolution, one hour back), and the rows of `/v1/stats` computed
//! from them. No HTTP and no caller here: `core::stats` decides who may report and read.
//!
//! # What is kept
//! Each edge twice, once per side ([`StatsSide`]). The client side is what callers' sidecars
//! saw (outbound reports): it covers every call, destinations without a sidecar included, and
//! counts each request once. The server side is what the destinations' sidecars saw on their
//! inbound listener (inbound reports): every attempt that reached them, retries included.
//! An edge is its source service and identity, its destination service and identity, route,
//! and whether it was mTLS. The reporter's side of it comes from its credential; the other
//! side is what the report names — for a caller seen by a server, the service its mesh
//! identity names (empty for a plaintext caller).
//!
//! With every report a sidecar says how many endpoints of each destination its circuit
//! breakers keep out; the latest report of each sidecar replaces what it said before, and a
//! row shows the most any one sidecar reporting within the window keeps open.
//!
//! # Bounds
//! At most [`MAX_EDGES`] edges; a new edge beyond that evicts the one updated longest ago. Each
//! holds at most [`window::RETAIN_SECONDS`] slots of [`window::SLOT_BYTES`] (152 bytes: about
//! 550 KB for an edge reported every second for an hour), so the windows never take more than
//! about `MAX_EDGES × 550 KB` ≈ 280 MB, and an edge with one sidecar reporting every 2 s half
//! that (both sides share the bound). Sidecars are remembered for the hour too, at most
//! [`MAX_SIDECARS`], with at most [`MAX_BREAKER_ENTRIES`] breaker counts among them.
//!
//! # Ageing out
//! A sidecar is current while it reported within [`CURRENT_FOR`]; one that stops reporting
//! leaves `meshed.current` then, `meshed.total` once the window no longer reaches its last
//! report, and memory an hour later. Its edges' counts stay, in the windows they fell in.

pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use pilotfish_api::wire::{EdgeDirection, Meshed, StatsBy, StatsReport, StatsRow, StatsSide};
use tokio::time::Instant;

use window::{Totals, Window, RETAIN_SECONDS};

/// Edges kept at most.
pub const MAX_EDGES: usize = 512;
// The bound the module documents: slots of 152 bytes, under 300 MB in all.
const _: () = assert!(window::SLOT_BYTES <= 152);
const _: () = assert!(MAX_EDGES as u64 * RETAIN_SECONDS * window::SLOT_BYTES as u64 <= 300 << 20);

/// Sidecars remembered at most.
pub const MAX_SIDECARS: usize = 65_536;
/// Breaker counts (sidecar, destination) remembered at most.
pub const MAX_BREAKER_ENTRIES: usize = 65_536;
/// A sidecar that reported within this long is current (five report periods).
pub const CURRENT_FOR: Duration = Duration::from_secs(10);

/// Who sent a report, as its credential (not the report) says.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub service: String,
    pub namespace: String,
    /// The sidecar's id (its name in `/v1/proxies`).
    pub proxy: String,
    /// Its mesh identity, once checked against the credential.
    pub identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EdgeKey {
    side: StatsSide,
    /// `name.namespace` (empty: a caller not known to the mesh)
    src: String,
    src_identity: Option<String>,
    dst: String,
    dst_identity: Option<String>,
    route: Option<String>,
    secured: bool,
}

#[derive(Debug, Default)]
struct Edge {
    window: Window,
    /// The second of its last report.
    last: u64,
    /// Opaque TCP connections open, by reporting sidecar, as of its last report (second).
    open: HashMap<String, (u64, u64)>,
}

/// A reporting sidecar, as of its latest report.
#[derive(Debug, Default)]
struct Sidecar {
    /// The second of its latest report.
    last: u64,
    /// Endpoints of each destination (`name.namespace`) its breakers keep out.
    breakers: Box<[(String, u64)]>,
}

#[derive(Default)]
struct Inner {
    edges: HashMap<EdgeKey, Edge>,
    /// By (`name.namespace`, proxy id).
    sidecars: HashMap<(String, String), Sidecar>,
    /// The breaker counts the sidecars hold, all together.
    breaker_entries: usize,
}

/// Every edge's window and every reporting sidecar.
pub struct Telemetry {
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self { epoch: Instant::now(), inner: Mutex::default() }
    }
}

/// A service's name and namespace as rows show them (empty for no service).
fn qualified(name: &str, namespace: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    format!("{name}.{namespace}")
}

impl Telemetry {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds in `report` from `from`.
    pub fn ingest(&self, from: &Reporter, report: &StatsReport) {
        let now = self.now();
        let src = qualified(&from.service, &from.namespace);
        let mut inner = self.lock();
        let sidecar = (src.clone(), from.proxy.clone());
        if !inner.sidecars.contains_key(&sidecar) && inner.sidecars.len() >= MAX_SIDECARS {
            sweep(&mut inner, now);
        }
        if inner.sidecars.len() < MAX_SIDECARS || inner.sidecars.contains_key(&sidecar) {
            let Inner { sidecars, breaker_entries, .. } = &mut *inner;
            let kept = sidecars.entry(sidecar).or_default();
            kept.last = now;
            *breaker_entries -= kept.breakers.len();
            let room = MAX_BREAKER_ENTRIES - *breaker_entries;
            kept.breakers = report
                .breakers
                .iter()
                .filter(|b| b.open > 0)
                .take(room)
                .map(|b| (qualified(&b.service, &b.namespace), b.open))
                .collect();
            *breaker_entries += kept.breakers.len();
        }
        for edge in &report.edges {
            let peer = qualified(&edge.peer.service, &edge.peer.namespace);
            let key = match edge.direction {
                EdgeDirection::Outbound => EdgeKey {
                    side: StatsSide::Client,
                    src: src.clone(),
                    src_identity: from.identity.clone(),
                    dst: peer,
                    dst_identity: edge.peer.identity.clone(),
                    route: edge.route.clone(),
                    secured: edge.secured,
                },
                EdgeDirection::Inbound => EdgeKey {
                    side: StatsSide::Server,
                    src: peer,
                    src_identity: edge.peer.identity.clone(),
                    dst: src.clone(),
                    dst_identity: from.identity.clone(),
                    route: edge.route.clone(),
                    secured: edge.secured,
                },
            };
            if !inner.edges.contains_key(&key) && inner.edges.len() >= MAX_EDGES {
                evict_oldest(&mut inner.edges);
            }
            let kept = inner.edges.entry(key).or_default();
            kept.window.add(now, &edge.counts);
            kept.last = now;
            if edge.counts.tcp_open > 0 {
                kept.open.insert(from.proxy.clone(), (edge.counts.tcp_open, now));
            } else {
                kept.open.remove(&from.proxy);
            }
        }
    }

    /// The rows of `GET /v1/stats` over the last `seconds`, seen from `side`, grouped `by`,
    /// only those naming `service` (`name` or `name.namespace`) when given.
    pub fn rows(&self, seconds: u64, side: StatsSide, by: StatsBy, service: Option<&str>) -> Vec<StatsRow> {
        let now = self.now();
        let mut inner = self.lock();
        sweep(&mut inner, now);
        let breakers = Breakers::within(&inner, now, seconds);
        let edges = || inner.edges.iter().filter(|(k, _)| k.side == side);
        let matches = |qualified: &str| {
            service.is_none_or(|s| qualified == s || qualified.split_once('.').is_some_and(|(n, _)| n == s))
        };
        let current = CURRENT_FOR.as_secs();
        let open_now = |edge: &Edge| -> u64 {
            edge.open.values().filter(|(_, at)| at + current > now).map(|(n, _)| n).sum()
        };
        // Grouped in BTreeMaps so rows come out in a stable order.
        match by {
            StatsBy::Service => {
                let mut rows: BTreeMap<String, (Totals, u64, Meshed)> = BTreeMap::new();
                for ((svc, _), sidecar) in &inner.sidecars {
                    let last = sidecar.last;
                    if last + seconds > now && matches(svc) {
                        let meshed = &mut rows.entry(svc.clone()).or_default().2;
                        meshed.total += 1;
                        meshed.current += u64::from(last + current > now);
                    }
                }
                for (key, edge) in edges().filter(|(k, _)| matches(&k.dst)) {
                    let row = rows.entry(key.dst.clone()).or_default();
                    edge.window.add_to(&mut row.0, now, seconds);
                    row.1 += open_now(edge);
                }
                rows.into_iter()
                    .map(|(svc, (totals, open, meshed))| StatsRow {
                        breakers_open: breakers.to(&svc),
                        service: Some(svc),
                        meshed: Some(meshed),
                        golden: totals.golden(seconds, open),
                        ..StatsRow::default()
                    })
                    .collect()
            }
            StatsBy::Route => {
                let mut rows: BTreeMap<(String, String), (Totals, u64)> = BTreeMap::new();
                for (key, edge) in edges().filter(|(k, _)| matches(&k.dst)) {
                    let route = key.route.clone().unwrap_or_default();
                    let row = rows.entry((key.dst.clone(), route)).or_default();
                    edge.window.add_to(&mut row.0, now, seconds);
                    row.1 += open_now(edge);
                }
                rows.into_iter()
                    .map(|((svc, route), (totals, open))| StatsRow {
                        breakers_open: breakers.to(&svc),
                        service: Some(svc),
                        route: Some(route),
                        golden: totals.golden(seconds, open),
                        ..StatsRow::default()
                    })
                    .collect()
            }
            StatsBy::Edge => {
                type Row = (String, String, Option<String>, Option<String>, bool);
                let mut rows: BTreeMap<Row, (Totals, u64)> = BTreeMap::new();
                for (key, edge) in edges().filter(|(k, _)| matches(&k.src) || matches(&k.dst)) {
                    let id = (
                        key.src.clone(),
                        key.dst.clone(),
                        key.src_identity.clone(),
                        key.dst_identity.clone(),
                        key.secured,
                    );
                    let row = rows.entry(id).or_default();
                    edge.window.add_to(&mut row.0, now, seconds);
                    row.1 += open_now(edge);
                }
                rows.into_iter()
                    .filter(|(_, (totals, open))| *totals != Totals::default() || *open > 0)
                    .map(|((src, dst, src_identity, dst_identity, secured), (totals, open))| StatsRow {
                        breakers_open: breakers.between(&src, &dst),
                        src: Some(src),
                        dst: Some(dst),
                        src_identity,
                        dst_identity,
                        secured: Some(secured),
                        golden: totals.golden(seconds, open),
                        ..StatsRow::default()
                    })
                    .collect()
            }
        }
    }
}

/// The most breakers any one sidecar reporting within a window keeps open, by destination
/// and by (source service, destination).
struct Breakers<'a> {
    to: HashMap<&'a str, u64>,
    from_to: HashMap<(&'a str, &'a str), u64>,
}

impl<'a> Breakers<'a> {
    fn within(inner: &'a Inner, now: u64, seconds: u64) -> Self {
        let mut breakers = Breakers { to: HashMap::new(), from_to: HashMap::new() };
        for ((src, _), sidecar) in inner.sidecars.iter().filter(|(_, s)| s.last + seconds > now) {
            for (dst, open) in sidecar.breakers.iter() {
                let most = breakers.to.entry(dst).or_default();
                *most = (*most).max(*open);
                let most = breakers.from_to.entry((src, dst)).or_default();
                *most = (*most).max(*open);
            }
        }
        breakers
    }

    fn to(&self, dst: &str) -> u64 {
        self.to.get(dst).copied().unwrap_or(0)
    }

    fn between(&self, src: &str, dst: &str) -> u64 {
        self.from_to.get(&(src, dst)).copied().unwrap_or(0)
    }
}

/// Forgets what fell out of the hour: slots, then edges left with none, and sidecars.
fn sweep(inner: &mut Inner, now: u64) {
    inner.edges.retain(|_, edge| {
        edge.window.age_out(now);
        !edge.window.is_empty()
    });
    let mut entries = 0;
    inner.sidecars.retain(|_, sidecar| {
        let keep = sidecar.last + RETAIN_SECONDS > now;
        entries += if keep { sidecar.breakers.len() } else { 0 };
        keep
    });
    inner.breaker_entries = entries;
}

fn evict_oldest(edges: &mut HashMap<EdgeKey, Edge>) {
    if let Some(oldest) = edges.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| k.clone()) {
        edges.remove(&oldest);
    }
}

#[cfg(test)]
mod tests;
