//! Scale (`--scale`): one Pilotfish sidecar configured with 10, 1,000 and 10,000 services (two
//! endpoints and an HTTPRoute each), idle: how long from start to `/ready`, its resident memory
//! once ready, and what each service costs over the smallest configuration.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::pki::path;
use crate::procs::{free_port, peak_rss_kib, Proc};
use crate::proxies::Setup;
use crate::upstream::loopback;

pub struct ScaleRow {
    pub services: usize,
    pub ready_ms: f64,
    /// `VmRSS` once ready, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (loading the configuration included), KiB.
    pub rss_peak_kib: u64,
}

pub fn run(setup: &Setup, counts: &[usize]) -> Result<Vec<ScaleRow>> {
    // A first start reads the binary from disk; it is not what a restart costs.
    one(setup, 1)?;
    counts.iter().map(|&n| one(setup, n)).collect()
}

fn one(setup: &Setup, services: usize) -> Result<ScaleRow> {
    let admin = loopback(free_port());
    let file = setup.dir.join(format!("scale-{services}.yaml"));
    std::fs::write(&file, config(admin, services, setup.upstream.http1))?;
    let started = Instant::now();
    let mut sidecar = Proc::spawn(
        setup.dir,
        &format!("scale-{services}"),
        setup.pilotfish,
        &["sidecar", "--config", path(&file)],
        &[("TOKIO_WORKER_THREADS", "1"), ("RUST_LOG", "warn")],
    )?;
    while !ready(admin) {
        sidecar.check_alive()?;
        if started.elapsed() > Duration::from_secs(120) {
            bail!("a sidecar with {services} services was not ready after 120 s\n{}", sidecar.tail());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    let pid = sidecar.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok(ScaleRow { services, ready_ms, rss_kib, rss_peak_kib: peak_rss_kib(&[pid])[0] })
}

/// Whether `GET /ready` on `admin` answers 200.
fn ready(admin: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(100)) else { return false };
    let mut head = [0u8; 12];
    s.write_all(b"GET /ready HTTP/1.0\r\n\r\n").is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
        && &head[9..12] == b"200"
}

/// A sidecar with `n` services, each with two endpoints (both `upstream`: nothing is dialled
/// while idle) and an HTTPRoute.
fn config(admin: SocketAddr, n: usize, upstream: SocketAddr) -> String {
    let mut out = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: scale}}\nspec:\n  admin: {admin}\n  outbound: {{listen: {}}}\n",
        loopback(free_port())
    );
    for i in 0..n {
        let _ = write!(
            out,
            "---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  ports: [{{port: 80, protocol: http}}]\n  endpoints: [{{address: {upstream}}}, {{address: {}}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: svc-{i}}}\nspec:\n  parentRefs: [{{kind: Service, name: svc-{i}}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /api/svc-{i}}}}}]\n    backendRefs: [{{name: svc-{i}, port: 80}}]\n",
            SocketAddr::new(upstream.ip(), upstream.port() + 1)
        );
    }
    out
}

/// The scale table: each configuration, and KiB per service over the smallest one.
pub fn table(rows: &[ScaleRow]) -> String {
    let mut out = format!(
        "{:>9} {:>10} {:>10} {:>10} {:>13}\n",
        "services", "ready-ms", "rss-KiB", "peak-KiB", "KiB/service"
    );
    let first = rows.first();
    for r in rows {
        let per = first
            .filter(|f| r.services > f.services)
            .map(|f| (r.rss_kib as f64 - f.rss_kib as f64) / (r.services - f.services) as f64);
        let per = per.map_or("-".to_owned(), |k| format!("{k:.1}"));
        let _ = writeln!(
            out,
            "{:>9} {:>10.0} {:>10} {:>10} {:>13}",
            r.services, r.ready_ms, r.rss_kib, r.rss_peak_kib, per
        );
    }
    out
}
