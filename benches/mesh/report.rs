//! One result row per scenario, and the three ways out: the table on stdout, the JSON list for
//! machines, and (in [`crate::chart`]) the SVG of latency percentiles.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::scenario::{Protocol, Proxy, Scenario, Topology};

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub proxy: Proxy,
    pub topology: Topology,
    pub tls: bool,
    pub protocol: Protocol,
    /// The open loop's offered rate; `null` for a closed loop.
    pub rate_rps: Option<f64>,
    /// Successful requests per second in the window; `null` for TCP.
    pub achieved_rps: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    /// p99 minus direct's p99 at the same protocol and load.
    pub added_p99_ms: Option<f64>,
    /// CPU seconds (user + system) of all the topology's proxies per 100,000 requests.
    pub cpu_s_per_100k: Option<f64>,
    /// The same per GiB moved, for TCP.
    pub cpu_s_per_gib: Option<f64>,
    /// The largest peak RSS (VmHWM) of one proxy process during the scenario.
    pub rss_peak_kib: Option<u64>,
    /// TCP only.
    pub throughput_mib_s: Option<f64>,
    /// Each proxy's CPU seconds in the window, the caller's first.
    pub proxies_cpu_s: Vec<f64>,
    /// Each proxy's peak RSS, KiB, the caller's first.
    pub proxies_rss_peak_kib: Vec<u64>,
    /// Successful requests in the windows of all runs (TCP: 0).
    pub requests: u64,
    /// Failed requests in all runs.
    pub errors: u64,
    /// One run's measured window.
    pub window_s: f64,
    /// How many runs the medians are of.
    pub runs: usize,
}

impl Row {
    pub fn new(scenario: &Scenario, rate: Option<f64>, window_s: f64) -> Row {
        Row {
            name: scenario.to_string(),
            proxy: scenario.proxy,
            topology: scenario.topology,
            tls: scenario.tls,
            protocol: scenario.protocol,
            rate_rps: rate.filter(|_| scenario.load.is_fixed()),
            achieved_rps: None,
            p50_ms: None,
            p90_ms: None,
            p99_ms: None,
            p999_ms: None,
            added_p99_ms: None,
            cpu_s_per_100k: None,
            cpu_s_per_gib: None,
            rss_peak_kib: None,
            throughput_mib_s: None,
            proxies_cpu_s: Vec::new(),
            proxies_rss_peak_kib: Vec::new(),
            requests: 0,
            errors: 0,
            window_s,
            runs: 1,
        }
    }

    /// Whether the scenario moved anything: requests answered, or bytes for TCP.
    pub fn made_progress(&self) -> bool {
        self.requests > 0 || self.throughput_mib_s.is_some_and(|t| t > 0.0)
    }
}

/// One scenario's runs as one row: every measurement the median of the runs' (of an even count,
/// the upper middle one), each proxy's CPU and peak RSS too; requests and errors summed.
pub fn median(runs: &[Row]) -> Row {
    let mut out = runs[0].clone();
    let of = |f: fn(&Row) -> Option<f64>| middle(runs.iter().filter_map(f).collect());
    out.achieved_rps = of(|r| r.achieved_rps);
    out.p50_ms = of(|r| r.p50_ms);
    out.p90_ms = of(|r| r.p90_ms);
    out.p99_ms = of(|r| r.p99_ms);
    out.p999_ms = of(|r| r.p999_ms);
    out.cpu_s_per_100k = of(|r| r.cpu_s_per_100k);
    out.cpu_s_per_gib = of(|r| r.cpu_s_per_gib);
    out.throughput_mib_s = of(|r| r.throughput_mib_s);
    out.proxies_cpu_s = (0..out.proxies_cpu_s.len())
        .filter_map(|i| middle(runs.iter().filter_map(|r| r.proxies_cpu_s.get(i).copied()).collect()))
        .collect();
    out.proxies_rss_peak_kib = (0..out.proxies_rss_peak_kib.len())
        .filter_map(|i| middle(runs.iter().filter_map(|r| r.proxies_rss_peak_kib.get(i).copied()).collect()))
        .collect();
    out.rss_peak_kib = out.proxies_rss_peak_kib.iter().copied().max();
    out.requests = runs.iter().map(|r| r.requests).sum();
    out.errors = runs.iter().map(|r| r.errors).sum();
    out.runs = runs.len();
    out
}

/// The median of `values` (of an even count, the upper middle one).
fn middle<T: Copy + PartialOrd>(mut values: Vec<T>) -> Option<T> {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values.get(values.len() / 2).copied()
}

/// Fills in each row's p99 added over direct's at the same protocol and load.
pub fn add_direct_deltas(rows: &mut [Row]) {
    let floors: Vec<(Protocol, Option<f64>, f64)> = rows
        .iter()
        .filter(|r| r.proxy == Proxy::Direct)
        .filter_map(|r| Some((r.protocol, r.rate_rps, r.p99_ms?)))
        .collect();
    for row in rows.iter_mut() {
        let floor = floors.iter().find(|(p, rate, _)| *p == row.protocol && *rate == row.rate_rps);
        row.added_p99_ms = match (row.p99_ms, floor) {
            (Some(p99), Some((_, _, direct))) => Some(p99 - direct),
            _ => None,
        };
    }
}

/// The table: one line per scenario, in run order.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6}",
        "scenario", "rate", "req/s", "p50", "p90", "p99", "p99.9", "+p99", "cpu-s", "rss", "MiB/s", "errors"
    );
    for r in rows {
        let cpu = r.cpu_s_per_100k.or(r.cpu_s_per_gib);
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6}",
            r.name,
            num(r.rate_rps, 0),
            num(r.achieved_rps, 0),
            num(r.p50_ms, 3),
            num(r.p90_ms, 3),
            num(r.p99_ms, 3),
            num(r.p999_ms, 3),
            num(r.added_p99_ms, 3),
            num(cpu, 2),
            num(r.rss_peak_kib.map(|k| k as f64 / 1024.0), 1),
            num(r.throughput_mib_s, 0),
            r.errors,
        );
    }
    out
}

/// Pilotfish against HAProxy in the same scenario, as ratios (below 1 is Pilotfish's win for
/// CPU, memory and added latency; above 1 for req/s and MiB/s); and every proxy's TCP
/// throughput against direct's.
pub fn comparison(rows: &[Row]) -> String {
    let mut out = String::new();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    };
    let peers: Vec<(&Row, &Row)> = rows
        .iter()
        .filter(|r| r.proxy == Proxy::Pilotfish)
        .filter_map(|pf| {
            let same = |r: &&Row| {
                r.proxy == Proxy::Haproxy
                    && (r.protocol, r.topology, r.tls, r.rate_rps)
                        == (pf.protocol, pf.topology, pf.tls, pf.rate_rps)
            };
            Some((pf, rows.iter().find(same)?))
        })
        .collect();
    if !peers.is_empty() {
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "pilotfish / haproxy", "req/s", "MiB/s", "cpu", "rss", "+p50", "+p99"
        );
        // Latency added over direct's, compared at a fixed rate only (a closed loop's latency is
        // its throughput's inverse) and only when HAProxy's is measurable (0.05 ms or more).
        let over = |r: &Row, own: Option<f64>, floor: Option<f64>| {
            Some((own? - floor?).max(0.0))
                .filter(|&d| r.rate_rps.is_some() && (r.proxy == Proxy::Pilotfish || d >= 0.05))
        };
        for (pf, ha) in peers {
            let direct = rows
                .iter()
                .find(|r| r.proxy == Proxy::Direct && r.protocol == pf.protocol && r.rate_rps == pf.rate_rps);
            let (p50, p99) = (direct.and_then(|d| d.p50_ms), direct.and_then(|d| d.p99_ms));
            let _ = writeln!(
                out,
                "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                pf.name,
                ratio(pf.achieved_rps, ha.achieved_rps),
                ratio(pf.throughput_mib_s, ha.throughput_mib_s),
                ratio(pf.cpu_s_per_100k.or(pf.cpu_s_per_gib), ha.cpu_s_per_100k.or(ha.cpu_s_per_gib)),
                ratio(pf.rss_peak_kib.map(|k| k as f64), ha.rss_peak_kib.map(|k| k as f64)),
                ratio(over(pf, pf.p50_ms, p50), over(ha, ha.p50_ms, p50)),
                ratio(over(pf, pf.p99_ms, p99), over(ha, ha.p99_ms, p99)),
            );
        }
    }
    let direct_tcp = rows.iter().find(|r| r.proxy == Proxy::Direct && r.protocol == Protocol::Tcp);
    if let Some(direct) = direct_tcp {
        let _ = writeln!(out, "\n{:<34} {:>8}", "TCP throughput / direct", "MiB/s");
        for r in rows.iter().filter(|r| r.protocol == Protocol::Tcp && r.proxy != Proxy::Direct) {
            let _ = writeln!(out, "{:<34} {:>8}", r.name, ratio(r.throughput_mib_s, direct.throughput_mib_s));
        }
    }
    out
}

/// The legend printed under the table.
pub const LEGEND: &str =
    "each number is the median of the runs · rate: offered req/s (open loop; '-' = closed loop) · req/s: achieved · p50…p99.9: latency \
in ms (open loop: from each request's intended send time) · +p99: p99 over direct's at the same \
protocol and load · cpu-s: CPU seconds of all the scenario's proxies per 100k requests (TCP: per \
GiB) · rss: peak RSS of the largest proxy, MiB · MiB/s: TCP throughput";

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "-".to_owned(),
    }
}

pub fn write_json(rows: &[Row], file: &Path) -> Result<()> {
    std::fs::write(file, serde_json::to_string_pretty(rows)? + "\n")?;
    Ok(())
}
