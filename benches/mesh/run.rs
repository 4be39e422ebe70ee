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
use crate::upstream::{serve_grpc, serve_tcp_sink, Upstream};
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
    if let Some(addr) = &options.grpc_server {
        serve_grpc(addr)?;
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
        false => (Duration::from_millis(500), options.seconds.unwrap_or(3.0)),
    };
    let window = Duration::from_secs_f64(window);
    let runs = options.runs.unwrap_or(if options.quick { 1 } else { 3 }).max(1);
    eprintln!(
        "mesh bench: {} scenarios, {runs} run(s) of {:.1} s each, pilotfish = {}",
        scenarios.len(),
        (warmup + window).as_secs_f64(),
        pilotfish.display()
    );

    let mut progress = Progress {
        total: scenarios.len() * runs,
        done: 0,
        started: Instant::now(),
        tty: std::io::stderr().is_terminal(),
    };
    // Runs go round the whole set, so a burst of noise on this shared machine lands in one run
    // of several scenarios rather than in every run of one.
    let mut results: Vec<Vec<Row>> = vec![Vec::new(); scenarios.len()];
    let mut failed: Vec<String> = Vec::new();
    let mut bases = BaseRates { fixed: options.base_rate, found: Vec::new() };
    for run in 0..runs {
        for (i, s) in scenarios.iter().enumerate() {
            if failed.contains(&s.to_string()) {
                continue;
            }
            let rate = match s.load {
                Load::Closed => None,
                Load::Fixed(percent) => {
                    Some((bases.of(s.protocol, &results) * f64::from(percent) / 100.0).round())
                }
            };
            progress.starting(s, run, runs);
            let plan = plan(s, warmup, window, rate);
            match runtime.block_on(measure(&setup, s, plan)) {
                Ok(row) => {
                    progress.done(&row);
                    results[i].push(row);
                }
                Err(e) => {
                    progress.failed(s, &e);
                    failed.push(s.to_string());
                }
            }
        }
    }
    progress.finish();
    let mut rows: Vec<Row> = results.iter().filter(|r| !r.is_empty()).map(|r| report::median(r)).collect();
    report::add_direct_deltas(&mut rows);

    if !rows.is_empty() {
        print!("{}", report::table(&rows));
        println!("\n{}", report::LEGEND);
        let comparison = report::comparison(&rows);
        if !comparison.is_empty() {
            print!("\n{comparison}");
        }
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

/// The base (100%) of each protocol's open-loop rates, fixed the first time a protocol needs
/// it, so every run of a scenario is offered the same load: `--base-rate`, else the slowest
/// HAProxy closed loop of the protocol in this run's first round (every proxy then gets an
/// offered load that one of them has shown it can carry), else the slowest closed loop of the
/// protocol, else 1,000 req/s.
struct BaseRates {
    fixed: Option<f64>,
    found: Vec<(Protocol, f64)>,
}

impl BaseRates {
    fn of(&mut self, protocol: Protocol, results: &[Vec<Row>]) -> f64 {
        if let Some(rate) = self.fixed {
            return rate;
        }
        if let Some(&(_, rate)) = self.found.iter().find(|(p, _)| *p == protocol) {
            return rate;
        }
        let slowest = |proxy: Option<Proxy>| {
            results
                .iter()
                .filter_map(|runs| runs.first())
                .filter(|r| r.protocol == protocol && r.rate_rps.is_none())
                .filter(|r| proxy.is_none_or(|p| r.proxy == p))
                .filter_map(|r| r.achieved_rps)
                .filter(|&rps| rps > 0.0)
                .reduce(f64::min)
        };
        let rate = slowest(Some(Proxy::Haproxy)).or_else(|| slowest(None)).unwrap_or(1000.0).round();
        self.found.push((protocol, rate));
        rate
    }
}

fn plan(s: &Scenario, warmup: Duration, window: Duration, rate: Option<f64>) -> load::Plan {
    let multiplexed = matches!(s.protocol, Protocol::Http2 | Protocol::Grpc);
    load::Plan {
        warmup,
        window,
        rate,
        connections: if multiplexed { HTTP2_CONNECTIONS } else { HTTP1_CONNECTIONS },
        streams: if multiplexed { HTTP2_STREAMS } else { 1 },
        protocol: s.protocol,
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
            _ => load::probe(running.entry, plan.protocol).await,
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

/// The progress line on stderr: rewritten in place on a terminal, a line per measurement
/// otherwise.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    fn starting(&self, s: &Scenario, run: usize, runs: usize) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = match self.done {
            0 => String::new(),
            done => format!(", ~{:.0} s left", elapsed / done as f64 * (self.total - done) as f64),
        };
        let run = if runs > 1 { format!(" (run {}/{runs})", run + 1) } else { String::new() };
        if self.tty {
            eprint!("\r\x1b[K[{}/{}] {s}{run}{left}", self.done + 1, self.total);
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("[{}/{}] {s}{run}{left}", self.done + 1, self.total);
        }
    }

    fn done(&mut self, row: &Row) {
        self.done += 1;
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

    fn failed(&mut self, s: &Scenario, e: &anyhow::Error) {
        self.done += 1;
        eprintln!("\n{s} failed: {e:#}");
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
        eprintln!("mesh bench: done in {:.0} s", self.started.elapsed().as_secs_f64());
    }
}
