//! One run: the tools, the certificates and the upstream once; then per scenario its proxies
//! started fresh, the path probed, the load offered and measured, the proxies stopped; the
//! open-loop rate chosen from the closed loops before it; then the table, JSON and SVG.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::options::Options;
use crate::pki::Pki;
use crate::procs::{need_tools, peak_rss_kib, pin_self, reset_peak_rss, ticks_per_second};
use crate::proxies::{self, Setup};
use crate::report::{self, Row};
use crate::scenario::{self, Load, Protocol, Proxy, Scenario};
use crate::upstream::{serve_tcp_sink, Upstream};
use crate::{bulk, chart, load, scale};

/// Connections of the HTTP/1.1 load (as `wrk -c32`).
const HTTP1_CONNECTIONS: usize = 32;
/// HTTP/2: connections and concurrent streams on each.
const HTTP2_CONNECTIONS: usize = 4;
const HTTP2_STREAMS: usize = 32;

pub fn main(options: Options) -> Result<ExitCode> {
    if let Some(addr) = &options.tcp_sink {
        serve_tcp_sink(addr)?;
        return Ok(ExitCode::SUCCESS);
    }
    let scenarios = match (&options.scenarios[..], options.quick) {
        ([], true) => scenario::quick(),
        ([], false) => scenario::standard(),
        (names, _) => scenario::select(names),
    };
    if options.list {
        scenario::all().iter().for_each(|s| println!("{s}"));
        return Ok(ExitCode::SUCCESS);
    }
    if scenarios.is_empty() && !options.scale {
        bail!("no scenario matches {:?} (--list shows them)", options.scenarios);
    }
    need_tools(&[
        ("nginx", "nginx-light"),
        ("haproxy", "haproxy"),
        ("openssl", "openssl"),
        ("taskset", "util-linux"),
    ])?;
    pin_self()?;
    let pilotfish = pilotfish_binary()?;
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path())?;
    let upstream = Upstream::start(dir.path())?;
    let setup = Setup { dir: dir.path(), upstream: &upstream, pki: &pki, pilotfish: &pilotfish };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (warmup, window) = match options.quick {
        true => (Duration::from_millis(300), options.seconds.unwrap_or(0.7)),
        false => (Duration::from_secs(1), options.seconds.unwrap_or(5.0)),
    };
    let window = Duration::from_secs_f64(window);
    eprintln!(
        "mesh bench: {} scenarios, {:.1} s each, pilotfish = {}",
        scenarios.len(),
        (warmup + window).as_secs_f64(),
        pilotfish.display()
    );

    let progress =
        Progress { total: scenarios.len(), started: Instant::now(), tty: std::io::stderr().is_terminal() };
    let mut rows: Vec<Row> = Vec::new();
    let mut failed = Vec::new();
    let mut rate = options.rate;
    for (i, s) in scenarios.iter().enumerate() {
        if s.load == Load::Fixed && rate.is_none() {
            rate = Some(fixed_rate(&rows));
        }
        progress.starting(i, s);
        let plan = plan(s, warmup, window, rate);
        match runtime.block_on(measure(&setup, s, plan)) {
            Ok(row) => {
                progress.done(&row);
                rows.push(row);
            }
            Err(e) => {
                progress.failed(s, &e);
                failed.push(s.to_string());
            }
        }
    }
    progress.finish();
    report::add_direct_deltas(&mut rows);

    if !rows.is_empty() {
        print!("{}", report::table(&rows));
        println!("\n{}", report::LEGEND);
    }
    if let Some(file) = &options.json {
        report::write_json(&rows, file).with_context(|| format!("writing {}", file.display()))?;
    }
    if let Some(file) = &options.svg {
        std::fs::write(file, chart::svg(&rows)).with_context(|| format!("writing {}", file.display()))?;
    }
    if options.scale {
        let counts: &[usize] = if options.quick { &[10, 1000] } else { &[10, 1000, 10_000] };
        eprintln!("mesh bench: scale, one idle sidecar with {counts:?} services");
        let scale = scale::run(&setup, counts)?;
        println!("\nOne idle Pilotfish sidecar with N services (2 endpoints and an HTTPRoute each):");
        print!("{}", scale::table(&scale));
    }
    let idle: Vec<&str> = rows.iter().filter(|r| !r.made_progress()).map(|r| r.name.as_str()).collect();
    if !failed.is_empty() || !idle.is_empty() {
        eprintln!("mesh bench: failed: {failed:?}; moved nothing: {idle:?}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `PILOTFISH_BIN`, else the binary cargo built for this bench (target/release/pilotfish under
/// `cargo bench`, target/debug/pilotfish under `cargo bench --profile dev`).
fn pilotfish_binary() -> Result<PathBuf> {
    let bin = std::env::var_os("PILOTFISH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pilotfish")));
    if !bin.is_file() {
        bail!("no pilotfish binary at {} (PILOTFISH_BIN)", bin.display());
    }
    Ok(bin)
}

/// The open loop's rate: half of the slowest HAProxy HTTP/1.1 closed loop of this run (every
/// proxy then gets the same offered load, one most of them can carry); without one, half of
/// the slowest HTTP/1.1 closed loop; without any, 1,000 req/s.
fn fixed_rate(rows: &[Row]) -> f64 {
    let closed = |proxy: Option<Proxy>| {
        rows.iter()
            .filter(|r| r.protocol == Protocol::Http1 && r.rate_rps.is_none())
            .filter(|r| proxy.is_none_or(|p| r.proxy == p))
            .filter_map(|r| r.achieved_rps)
            .filter(|&rps| rps > 0.0)
            .reduce(f64::min)
    };
    let slowest = closed(Some(Proxy::Haproxy)).or_else(|| closed(None));
    slowest.map_or(1000.0, |rps| (rps / 2.0).round())
}

fn plan(s: &Scenario, warmup: Duration, window: Duration, rate: Option<f64>) -> load::Plan {
    let http2 = s.protocol == Protocol::Http2;
    load::Plan {
        warmup,
        window,
        rate: rate.filter(|_| s.load == Load::Fixed),
        connections: if http2 { HTTP2_CONNECTIONS } else { HTTP1_CONNECTIONS },
        streams: if http2 { HTTP2_STREAMS } else { 1 },
        http2,
    }
}

/// One scenario: its proxies, a probe until the path answers, the load, the numbers.
async fn measure(setup: &Setup<'_>, s: &Scenario, plan: load::Plan) -> Result<Row> {
    let mut running = proxies::start(setup, s)?;
    let pids = running.pids();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let probed = match s.protocol {
            Protocol::Tcp => bulk::probe(running.entry).await,
            _ => load::probe(running.entry, plan.http2).await,
        };
        match probed {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => {
                running.procs.iter_mut().try_for_each(|p| p.check_alive())?;
                let tails: Vec<String> = running.procs.iter().map(|p| p.tail()).collect();
                return Err(e.context(format!("{s}: the path never answered\n{}", tails.join("\n"))));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    reset_peak_rss(&pids);
    let mut row = Row::new(s, plan.rate, plan.window.as_secs_f64());
    let window = plan.window.as_secs_f64();
    let ticks = ticks_per_second();
    let cpu_seconds = |each: &[u64]| each.iter().map(|&t| t as f64 / ticks).collect::<Vec<f64>>();
    if s.protocol == Protocol::Tcp {
        let out = bulk::run(running.entry, plan, &pids).await?;
        let mib = out.bytes as f64 / (1024.0 * 1024.0);
        row.throughput_mib_s = Some(mib / window);
        row.proxies_cpu_s = cpu_seconds(&out.cpu_ticks);
        let total: f64 = row.proxies_cpu_s.iter().sum();
        row.cpu_s_per_gib = (!pids.is_empty() && mib > 0.0).then(|| total / (mib / 1024.0));
    } else {
        let out = load::run(running.entry, plan, &pids).await?;
        let ms = |q: f64| out.latency.value_at_quantile(q) as f64 / 1000.0;
        row.requests = out.completed;
        row.errors = out.errors;
        row.achieved_rps = Some(out.completed as f64 / window);
        if !out.latency.is_empty() {
            (row.p50_ms, row.p90_ms, row.p99_ms, row.p999_ms) =
                (Some(ms(0.5)), Some(ms(0.9)), Some(ms(0.99)), Some(ms(0.999)));
        }
        row.proxies_cpu_s = cpu_seconds(&out.cpu_ticks);
        let total: f64 = row.proxies_cpu_s.iter().sum();
        row.cpu_s_per_100k =
            (!pids.is_empty() && out.completed > 0).then(|| total * 100_000.0 / out.completed as f64);
    }
    row.proxies_rss_peak_kib = peak_rss_kib(&pids);
    row.rss_peak_kib = row.proxies_rss_peak_kib.iter().copied().max();
    running.procs.iter_mut().try_for_each(|p| p.check_alive())?;
    Ok(row)
}

/// The progress line on stderr: rewritten in place on a terminal, a line per scenario otherwise.
struct Progress {
    total: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    fn starting(&self, i: usize, s: &Scenario) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if i == 0 {
            String::new()
        } else {
            format!(", ~{:.0} s left", elapsed / i as f64 * (self.total - i) as f64)
        };
        if self.tty {
            eprint!("\r\x1b[K[{}/{}] {s}{left}", i + 1, self.total);
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("[{}/{}] {s}{left}", i + 1, self.total);
        }
    }

    fn done(&self, row: &Row) {
        if !self.tty {
            return;
        }
        let what = match (row.achieved_rps, row.throughput_mib_s) {
            (Some(rps), _) => format!("{rps:.0} req/s, p99 {:.3} ms", row.p99_ms.unwrap_or(f64::NAN)),
            (None, Some(t)) => format!("{t:.0} MiB/s"),
            _ => String::new(),
        };
        eprint!(" — {what}");
    }

    fn failed(&self, s: &Scenario, e: &anyhow::Error) {
        eprintln!("\n{s} failed: {e:#}");
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
        eprintln!("mesh bench: done in {:.0} s", self.started.elapsed().as_secs_f64());
    }
}
