//! Push fan-out benchmark: a real `pilotfish control-plane` process and N simulated sidecars in
//! this process (each one long-lived push stream that ACKs every snapshot, as a sidecar does).
//! For each of K writes it measures the time from the write being acknowledged to every sidecar
//! having ACKed the new version, and reports p50/p99/max with the control plane's RSS and CPU.
//!
//!   cargo build --release && cargo bench --bench push            (N=1000, K=20)
//!   PILOTFISH_BENCH_PROXIES=10000 PILOTFISH_BENCH_WRITES=10 cargo bench --bench push
//!
//! A simulated sidecar speaks to the control plane as a sidecar does over TLS, where the two
//! negotiate HTTP/2: one connection carries its push stream and its ACKs. Here it is HTTP/2
//! with prior knowledge over plaintext loopback, so the numbers leave out TLS (a handshake per
//! sidecar, once, before anything is measured) and the bench spends its CPU — taken from the
//! same two cores as the control plane's — on as little as it can: it reads each line's
//! version and nothing else of it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pilotfish_api::wire::Ack;

const TOKEN: &str = "bench-token";
/// Sidecars connecting at once: enough to connect 10,000 in seconds, few enough for the
/// listen backlog.
const CONNECTING: usize = 256;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let proxies = env("PILOTFISH_BENCH_PROXIES", 1000);
    let writes = env("PILOTFISH_BENCH_WRITES", 20);
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/pilotfish");
    assert!(std::path::Path::new(bin).exists(), "build the release binary first: cargo build --release");
    // A socket per sidecar at each end: both processes need that many descriptors.
    raise_open_files(proxies + 1024);
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Command::new(bin)
        .args(["control-plane", "--listen", "127.0.0.1:0", "--admin-token", TOKEN, "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn,pilotfish_control_plane=info,pilotfish=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cp.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("control plane output").unwrap();
        if let Some(a) = line.split_whitespace().find_map(|w| w.strip_prefix("listen=")) {
            break a.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let idle = usage(cp.id());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (connected, latencies) = runtime.block_on(run(addr, proxies, writes, cp.id()));
    let done = usage(cp.id());
    let _ = cp.kill();
    let _ = cp.wait();

    let mut sorted = latencies.clone();
    sorted.sort();
    let pct =
        |p: f64| sorted[((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1).min(sorted.len() - 1)];
    println!(
        "push fan-out to {proxies} sidecars, {writes} writes (write acknowledged → every sidecar ACKed):"
    );
    println!("  p50 {:?}  p99 {:?}  max {:?}", pct(0.50), pct(0.99), sorted[sorted.len() - 1]);
    let per_sidecar = connected.rss_kib.saturating_sub(idle.rss_kib) as f64 / proxies as f64;
    println!(
        "  control plane: RSS {} KiB idle, {} KiB with the sidecars connected ({per_sidecar:.1} KiB each), {} KiB at the end",
        idle.rss_kib, connected.rss_kib, done.rss_kib
    );
    println!(
        "  control plane CPU: {:.2} s to connect them, {:.2} s over the writes ({:.2} s in total)",
        connected.cpu_s - idle.cpu_s,
        done.cpu_s - connected.cpu_s,
        done.cpu_s
    );
}

/// Connects the sidecars, then makes the writes; answers the control plane's usage once every
/// sidecar is connected and on the first version, and each write's time to be ACKed by all.
async fn run(addr: String, proxies: usize, writes: usize, pid: u32) -> (Usage, Vec<Duration>) {
    let acked = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(AtomicU64::new(0));
    let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    for i in 0..proxies {
        let (addr, acked, target) = (addr.clone(), acked.clone(), target.clone());
        let permit = connecting.clone().acquire_owned().await.unwrap();
        tokio::spawn(async move { sidecar(i, addr, acked, target, permit).await });
    }
    // Everyone connected and on the initial (empty) version.
    wait_for(&acked, proxies).await;
    let connected = usage(pid);

    let (mut admin, _) = connect(&addr).await;
    let mut latencies = Vec::new();
    for w in 1..=writes {
        let doc = format!(
            "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: svc-{w}}}\nspec:\n  endpoints: [{{address: 127.0.0.1:9000}}]\n"
        );
        acked.store(0, Ordering::SeqCst);
        let req = hyper::Request::post(format!("http://{addr}/v1/resources"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::from(doc)))
            .unwrap();
        let res = admin.send_request(req).await.unwrap();
        let written = Instant::now();
        let body: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let seq = body["applied"][0]["seq"].as_u64().expect("the write was applied");
        target.store(seq, Ordering::SeqCst);
        wait_for(&acked, proxies).await;
        latencies.push(written.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (connected, latencies)
}

/// An HTTP/2 connection to the control plane.
async fn connect(addr: &str) -> (http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("control plane reachable");
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    (send, tokio::spawn(async move { drop(conn.await) }))
}

/// The version of a push line: all a simulated sidecar reads of it.
#[derive(serde::Deserialize)]
struct Version {
    version: u64,
}

/// One simulated sidecar: reads snapshots, ACKs each, counts the ACK of the target version.
async fn sidecar(
    i: usize,
    addr: String,
    acked: Arc<AtomicUsize>,
    target: Arc<AtomicU64>,
    connecting: tokio::sync::OwnedSemaphorePermit,
) {
    let (mut send, _conn) = connect(&addr).await;
    let req = hyper::Request::get(format!("http://{addr}/v1/push?id=bench-{i}&service=svc-{}", i % 50))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = send.send_request(req).await.expect("push stream").into_body();
    drop(connecting);
    let ack_uri = format!("http://{addr}/v1/proxies/bench-{i}/ack?service=svc-{}", i % 50);
    let mut buf = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let Ok(Version { version }) = serde_json::from_slice(&line) else { continue };
            let ack = hyper::Request::post(&ack_uri)
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&Ack::accepted(version)).unwrap())))
                .unwrap();
            let recorded = match send.send_request(ack).await {
                Ok(res) => res.status().is_success() && res.into_body().collect().await.is_ok(),
                Err(_) => false,
            };
            if recorded && version >= target.load(Ordering::SeqCst) {
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

async fn wait_for(counter: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "only {} of {n} sidecars acked", counter.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Raises this process's limit of open files (which the control plane inherits) to `needed`,
/// within the hard limit.
fn raise_open_files(needed: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    assert!(
        hard >= needed as u64,
        "{needed} open files are needed, the hard limit is {hard}: raise it (ulimit -Hn, as root)"
    );
    if limit.current.is_some_and(|soft| soft < needed as u64) {
        setrlimit(Resource::Nofile, Rlimit { current: Some(needed as u64), maximum: limit.maximum })
            .expect("raising the soft limit of open files");
    }
}

/// Resident memory and CPU time of a process, from /proc.
struct Usage {
    rss_kib: u64,
    cpu_s: f64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Usage { rss_kib, cpu_s: ticks as f64 / 100.0 }
}
