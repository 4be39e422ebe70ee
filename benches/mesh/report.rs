//! One result row per scenario, and the three ways out: the table on stdout, the JSON list for
//! machines, and (in [`crate::chart`]) the SVG of latency percentiles.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::scenario::{Load, Protocol, Proxy, Scenario, Topology};

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
    /// Successful requests in the window (TCP: 0).
    pub requests: u64,
    pub errors: u64,
    pub window_s: f64,
}

impl Row {
    pub fn new(scenario: &Scenario, rate: Option<f64>, window_s: f64) -> Row {
        Row {
            name: scenario.to_string(),
            proxy: scenario.proxy,
            topology: scenario.topology,
            tls: scenario.tls,
            protocol: scenario.protocol,
            rate_rps: rate.filter(|_| scenario.load == Load::Fixed),
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
        }
    }

    /// Whether the scenario moved anything: requests answered, or bytes for TCP.
    pub fn made_progress(&self) -> bool {
        self.requests > 0 || self.throughput_mib_s.is_some_and(|t| t > 0.0)
    }
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

/// The legend printed under the table.
pub const LEGEND: &str =
    "rate: offered req/s (open loop; '-' = closed loop) · req/s: achieved · p50…p99.9: latency \
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
