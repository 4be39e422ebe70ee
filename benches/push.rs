//! Push fan-out benchmark: a real `pilotfish control-plane` process and N simulated sidecars in
//! this process (each one long-lived push stream that ACKs every snapshot, as a sidecar does).
//! For each of K writes it measures the time from the write being acknowledged to every sidecar
//! having ACKed the new version, and reports p50/p99/max with the control plane's RSS and CPU.
//!
//!   cargo build --release && cargo bench --bench push            (N=1000, K=20)
//!   PILOTFISH_BENCH_PROXIES=200 PILOTFISH_BENCH_WRITES=10 cargo bench --bench push

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TOKEN: &str = "bench-token";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let proxies = env("PILOTFISH_BENCH_PROXIES", 1000);
    let writes = env("PILOTFISH_BENCH_WRITES", 20);
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/pilotfish");
    assert!(std::path::Path::new(bin).exists(), "build the release binary first: cargo build --release");
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
    let base = format!("http://{addr}");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let latencies = runtime.block_on(run(base.clone(), proxies, writes));
    let (rss, cpu) = usage(cp.id());
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
    println!("  control plane: RSS {rss} KiB, CPU {cpu:.2} s in total");
}

async fn run(base: String, proxies: usize, writes: usize) -> Vec<Duration> {
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build_http();
    let acked = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    for i in 0..proxies {
        let (client, base, acked, target) = (client.clone(), base.clone(), acked.clone(), target.clone());
        tokio::spawn(async move { sidecar(i, client, base, acked, target).await });
    }
    // Everyone connected and on the initial (empty) version.
    target.store(0, Ordering::SeqCst);
    wait_for(&acked, proxies).await;

    let mut latencies = Vec::new();
    for w in 1..=writes {
        let doc = format!(
            "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: svc-{w}}}\nspec:\n  endpoints: [{{address: 127.0.0.1:9000}}]\n"
        );
        acked.store(0, Ordering::SeqCst);
        let req = hyper::Request::post(format!("{base}/v1/resources"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::from(doc)))
            .unwrap();
        let res = client.request(req).await.unwrap();
        let written = Instant::now();
        let body: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let seq = body["applied"][0]["seq"].as_u64().expect("the write was applied");
        target.store(seq, Ordering::SeqCst);
        wait_for(&acked, proxies).await;
        latencies.push(written.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies
}

/// One simulated sidecar: reads snapshots, ACKs each, counts the ACK of the target version.
async fn sidecar(
    i: usize,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: String,
    acked: Arc<AtomicUsize>,
    target: Arc<AtomicU64>,
) {
    let stream_client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::get(format!("{base}/v1/push?id=bench-{i}&service=svc-{}", i % 50))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = stream_client.request(req).await.expect("push stream").into_body();
    let mut buf = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let Ok(snapshot) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
            let version = snapshot["version"].as_u64().unwrap_or(0);
            let ack = hyper::Request::post(format!("{base}/v1/proxies/bench-{i}/ack"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!("{{\"version\": {version}}}"))))
                .unwrap();
            if let Ok(res) = client.request(ack).await {
                let _ = res.into_body().collect().await;
            }
            if version >= target.load(Ordering::SeqCst) {
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

/// Resident memory (KiB) and CPU time (s) of a process, from /proc.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (rss, ticks as f64 / 100.0)
}
