//! Mesh telemetry: the sidecars' reports folded into per-edge rolling windows
//! ([`window::Window`], 1 s resolution, one hour back), and the rows of `/v1/stats` computed
//! from them. No HTTP and no caller here: `core::stats` decides who may report and read.
//!
//! # What is kept
//! Edges as their callers saw them (outbound reports): the client side covers every call,
//! destinations without a sidecar included, and each request is counted once. (Inbound
//! reports, the server's side, are for the later tap and dashboard work and are not kept.)
//! An edge is its source service and identity — the reporter's, from its credential — its
//! destination service and identity, route, and whether it was mTLS.
//!
//! # Bounds
//! At most [`MAX_EDGES`] edges; a new edge beyond that evicts the one updated longest ago. Each
//! holds at most [`window::RETAIN_SECONDS`] slots of [`window::SLOT_BYTES`] (152 bytes: about
//! 550 KB for an edge reported every second for an hour), so the windows never take more than
//! about `MAX_EDGES × 550 KB` ≈ 280 MB, and an edge with one sidecar reporting every 2 s half
//! that. Sidecars are remembered for the hour too, at most [`MAX_SIDECARS`].
//!
//! # Ageing out
//! A sidecar is current while it reported within [`CURRENT_FOR`]; one that stops reporting
//! leaves `meshed.current` then, `meshed.total` once the window no longer reaches its last
//! report, and memory an hour later. Its edges' counts stay, in the windows they fell in.

pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use pilotfish_api::wire::{EdgeDirection, Meshed, StatsBy, StatsReport, StatsRow};
use tokio::time::Instant;

use window::{Totals, Window, RETAIN_SECONDS};

/// Edges kept at most.
pub const MAX_EDGES: usize = 512;
// The bound the module documents: slots of 152 bytes, under 300 MB in all.
const _: () = assert!(window::SLOT_BYTES <= 152);
const _: () = assert!(MAX_EDGES as u64 * RETAIN_SECONDS * window::SLOT_BYTES as u64 <= 300 << 20);

/// Sidecars remembered at most.
pub const MAX_SIDECARS: usize = 65_536;
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
    /// `name.namespace`
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

#[derive(Default)]
struct Inner {
    edges: HashMap<EdgeKey, Edge>,
    /// The second each sidecar last reported, by (`name.namespace`, proxy id).
    sidecars: HashMap<(String, String), u64>,
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

/// A service's name and namespace as rows show them.
fn qualified(name: &str, namespace: &str) -> String {
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
            inner.sidecars.insert(sidecar, now);
        }
        for edge in report.edges.iter().filter(|e| e.direction == EdgeDirection::Outbound) {
            let key = EdgeKey {
                src: src.clone(),
                src_identity: from.identity.clone(),
                dst: qualified(&edge.peer.service, &edge.peer.namespace),
                dst_identity: edge.peer.identity.clone(),
                route: edge.route.clone(),
                secured: edge.secured,
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

    /// The rows of `GET /v1/stats` over the last `seconds`, grouped `by`, only those naming
    /// `service` (`name` or `name.namespace`) when given.
    pub fn rows(&self, seconds: u64, by: StatsBy, service: Option<&str>) -> Vec<StatsRow> {
        let now = self.now();
        let mut inner = self.lock();
        sweep(&mut inner, now);
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
                for ((svc, _), &last) in &inner.sidecars {
                    if last + seconds > now && matches(svc) {
                        let meshed = &mut rows.entry(svc.clone()).or_default().2;
                        meshed.total += 1;
                        meshed.current += u64::from(last + current > now);
                    }
                }
                for (key, edge) in inner.edges.iter().filter(|(k, _)| matches(&k.dst)) {
                    let row = rows.entry(key.dst.clone()).or_default();
                    edge.window.add_to(&mut row.0, now, seconds);
                    row.1 += open_now(edge);
                }
                rows.into_iter()
                    .map(|(svc, (totals, open, meshed))| StatsRow {
                        service: Some(svc),
                        meshed: Some(meshed),
                        golden: totals.golden(seconds, open),
                        ..StatsRow::default()
                    })
                    .collect()
            }
            StatsBy::Route => {
                let mut rows: BTreeMap<(String, String), (Totals, u64)> = BTreeMap::new();
                for (key, edge) in inner.edges.iter().filter(|(k, _)| matches(&k.dst)) {
                    let route = key.route.clone().unwrap_or_default();
                    let row = rows.entry((key.dst.clone(), route)).or_default();
                    edge.window.add_to(&mut row.0, now, seconds);
                    row.1 += open_now(edge);
                }
                rows.into_iter()
                    .map(|((svc, route), (totals, open))| StatsRow {
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
                for (key, edge) in inner.edges.iter().filter(|(k, _)| matches(&k.src) || matches(&k.dst)) {
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

/// Forgets what fell out of the hour: slots, then edges left with none, and sidecars.
fn sweep(inner: &mut Inner, now: u64) {
    inner.edges.retain(|_, edge| {
        edge.window.age_out(now);
        !edge.window.is_empty()
    });
    inner.sidecars.retain(|_, last| *last + RETAIN_SECONDS > now);
}

fn evict_oldest(edges: &mut HashMap<EdgeKey, Edge>) {
    if let Some(oldest) = edges.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| k.clone()) {
        edges.remove(&oldest);
    }
}

#[cfg(test)]
mod tests;
