//! Test support: start the real `pilotfish` binary, real backends on 127.0.0.1:0, and drive them
//! with real clients (curl, h2load, Python grpcio/websockets).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub const BIN: &str = env!("CARGO_BIN_EXE_pilotfish");

/// The Python interpreter with grpcio, websockets and prometheus-client (set up by the test
/// command in `.venv-test`).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("PILOTFISH_TEST_PYTHON") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python")
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(name)
}

/// A port that was free a moment ago (for `localPort`, which must be known up front). Picked
/// below the kernel's ephemeral range (32768-60999), where no `bind(0)` or outgoing connection of
/// a test running in parallel can take it before the sidecar binds it.
pub fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running `pilotfish sidecar`, killed on drop.
pub struct Sidecar {
    child: Child,
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
    pub inbound: Option<SocketAddr>,
    /// The kubelet's status listener, with `--status`.
    pub status: Option<SocketAddr>,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

/// `Sidecar` spec lines for a sidecar whose inbound callers are plaintext (no mesh certificates
/// here): the mesh default `authenticated` would refuse them all, so it admits every caller.
pub const PLAINTEXT_INBOUND: &str = "  authorization: {default: allow}\n";

/// The `Sidecar` document for tests: every listener on an ephemeral port.
pub fn sidecar_doc(app: Option<SocketAddr>, extra: &str) -> String {
    let inbound = match app {
        Some(app) => format!("  inbound: {{listen: 127.0.0.1:0, app: {app}}}\n"),
        None => String::new(),
    };
    format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: test}}\nspec:\n  admin: 127.0.0.1:0\n  outbound: {{listen: 127.0.0.1:0}}\n{inbound}{extra}"
    )
}

pub fn service_doc(name: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("{{address: {e}}}")).collect();
    format!(
        "---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [{}]\n{extra}",
        eps.join(", ")
    )
}

/// The common set-up: a `users` service with one backend, called through a sidecar whose
/// `Sidecar` spec gets `sidecar_extra` (YAML lines under `spec:`).
pub async fn users_behind_a_sidecar(sidecar_extra: &str) -> (Backend, Sidecar) {
    let users = backend("users").await;
    let config = format!("{}{}", sidecar_doc(None, sidecar_extra), service_doc("users", &[users.addr], ""));
    (users, Sidecar::start(&config))
}

impl Sidecar {
    pub fn start(config: &str) -> Self {
        Self::start_in(config, &[], None)
    }

    /// Starts a sidecar, optionally inside a network namespace, and waits until it listens.
    pub fn start_in(config: &str, args: &[&str], netns: Option<&str>) -> Self {
        Self::launch(Some(config), args, netns, None, &[])
    }

    /// [`Sidecar::start_in`] as the user `uid` (as a pod runs its sidecar), which must be able
    /// to read every file `args` names.
    pub fn start_in_as(config: &str, args: &[&str], netns: &str, uid: u32) -> Self {
        Self::launch(Some(config), args, Some(netns), Some(uid), &[])
    }

    /// [`Sidecar::start`] with more arguments and environment variables.
    pub fn start_with(config: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(Some(config), args, None, None, env)
    }

    /// Starts a sidecar configured by its command line alone (managed mode; the control-plane
    /// tests share this module).
    #[allow(dead_code)]
    pub fn start_managed(args: &[&str]) -> Self {
        Self::launch(None, args, None, None, &[])
    }

    /// [`Sidecar::start_managed`] with more environment variables (e.g. a clock moved by
    /// libfaketime).
    #[allow(dead_code)]
    pub fn start_managed_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(None, args, None, None, env)
    }

    fn launch(
        config: Option<&str>,
        args: &[&str],
        netns: Option<&str>,
        uid: Option<u32>,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sidecar.yaml");
        let mut prefix: Vec<String> = Vec::new();
        if let Some(ns) = netns {
            prefix.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if let Some(uid) = uid {
            use std::os::unix::fs::PermissionsExt;
            // The config file is written below; the user must be able to reach it.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            prefix.extend(["setpriv".into(), format!("--reuid={uid}"), format!("--regid={uid}")]);
            prefix.push("--clear-groups".into());
        }
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("sidecar");
        if let Some(config) = config {
            std::fs::write(&path, config).unwrap();
            cmd.arg("--config").arg(&path);
        }
        cmd.args(args);
        cmd.env("RUST_LOG", "info,pilotfish_sidecar=debug");
        cmd.envs(env.iter().copied());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().expect("start pilotfish");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().unwrap(), stderr.clone());
        collect(child.stdout.take().unwrap(), stdout.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = loop {
            if let Some(line) = stderr.lock().unwrap().lines().find(|l| l.contains("sidecar listening")) {
                break line.to_owned();
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("sidecar exited with {status}: {}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "sidecar did not start: {}", stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        };
        let field = |name: &str| -> Option<SocketAddr> {
            let prefix = format!("{name}=");
            line.split_whitespace().find_map(|w| w.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
        };
        Self {
            admin: field("admin").expect("admin address in the log"),
            outbound: field("outbound").expect("outbound address in the log"),
            inbound: field("inbound"),
            status: field("status"),
            child,
            config: path,
            _dir: dir,
            stderr,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits (generously) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "sidecar did not exit: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until the stderr log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.stderr().contains(needle) {
            assert!(Instant::now() < deadline, "log never said {needle:?}: {}", self.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        curl(&[&format!("http://{}{path}", self.admin)]).await
    }

    /// `/metrics`, parsed by the Prometheus project's own Python parser.
    pub async fn metrics(&self) -> Vec<Sample> {
        let text = self.admin_get("/metrics").await;
        assert_eq!(text.status, 200);
        parse_metrics(&text.body).await
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect<R: std::io::Read + Send + 'static>(from: R, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let mut buf = into.lock().unwrap();
            buf.push_str(&line);
            buf.push('\n');
        }
    });
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub async fn parse_metrics(text: &[u8]) -> Vec<Sample> {
    let out =
        run_with_input(python().to_str().unwrap(), &[script("promparse.py").to_str().unwrap()], text).await;
    let samples: Vec<serde_json::Value> = serde_json::from_slice(&out).expect("promparse output");
    samples
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_owned(),
            labels: serde_json::from_value(s["labels"].clone()).unwrap(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of the sample with this name whose labels include all of `labels` (0 if none).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn run_with_input(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{program} {args:?} failed");
    out.stdout
}

/// One HTTP exchange as curl saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Runs curl (`-s -i` plus `args`) and parses the final response.
pub async fn curl(args: &[&str]) -> Reply {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .await
        .expect("curl is installed");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    parse_reply(&out.stdout)
}

/// Parses what `curl -i` printed: the final response's status, headers and body.
pub fn parse_reply(mut raw: &[u8]) -> Reply {
    loop {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
        let head = std::str::from_utf8(&raw[..end]).unwrap();
        raw = &raw[end + 4..];
        let mut lines = head.lines();
        let status_line = lines.next().unwrap();
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap().to_owned();
        let status: u16 = parts.next().unwrap().parse().unwrap();
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return Reply { status, version, headers, body: raw.to_vec() };
    }
}

/// An HTTP/1.1 + HTTP/2 backend. It answers with JSON describing the request it got, and has
/// a few paths that misbehave on purpose:
/// - `/status/NNN` answers with that status;
/// - `/slow/MS` waits that long first;
/// - `/echo` streams the request body back;
/// - `/drip` sends a first chunk at once and the rest 30 s later;
/// - `/trailers` sends a body followed by a trailer.
pub struct Backend {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    /// Misbehaviour switched on and off while a test runs.
    pub faults: Arc<Faults>,
    server: tokio::task::JoinHandle<()>,
}

/// Every request gets this status (0: behave), after this delay.
#[derive(Default)]
pub struct Faults {
    pub status: std::sync::atomic::AtomicU16,
    pub delay_ms: std::sync::atomic::AtomicU64,
    /// Health-check requests (`/healthz`), which `requests` does not count.
    pub probes: AtomicUsize,
}

impl Backend {
    pub fn fail_with(&self, status: u16) {
        self.faults.status.store(status, Ordering::SeqCst);
    }

    pub fn delay(&self, ms: u64) {
        self.faults.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn served(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Dies like a killed process: the listener and every open connection close at once.
    pub fn kill(&self) {
        self.server.abort();
    }
}

pub async fn backend(name: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let faults = Arc::new(Faults::default());
    let (reqs, conns, f) = (requests.clone(), connections.clone(), faults.clone());
    let server = tokio::spawn(async move {
        // Connections live in the set, so aborting this task closes them all.
        let mut open = tokio::task::JoinSet::new();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
                Some(_) = open.join_next() => continue,
            };
            conns.fetch_add(1, Ordering::SeqCst);
            let (reqs, f) = (reqs.clone(), f.clone());
            open.spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    if req.uri().path() == "/healthz" {
                        f.probes.fetch_add(1, Ordering::SeqCst);
                    } else {
                        reqs.fetch_add(1, Ordering::SeqCst);
                    }
                    faulty(name, peer, req, f.clone())
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend { addr, requests, connections, faults, server }
}

async fn faulty(
    name: &'static str,
    peer: SocketAddr,
    req: Request<Incoming>,
    faults: Arc<Faults>,
) -> Result<Response<BoxBody>, Infallible> {
    let delay = faults.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match faults.status.load(Ordering::SeqCst) {
        0 => answer(name, peer, req).await,
        status => {
            // Read the request first, as a well-behaved server does: answering early and closing
            // with unread bytes makes the kernel reset the connection, racing the response.
            let _ = req.into_body().collect().await;
            let body = Full::new(Bytes::from(format!("{name} fails with {status}\n")));
            let mut res = Response::new(body.map_err(|never| match never {}).boxed());
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok(res)
        }
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

async fn answer(
    name: &str,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let full = |b: Bytes| Full::new(b).map_err(|never| match never {}).boxed();
    if path == "/echo" {
        return Ok(Response::new(req.into_body().boxed()));
    }
    if path == "/trailers" {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-trailer", "present".parse().unwrap());
        let body = Full::new(Bytes::from_static(b"body then trailers"))
            .map_err(|never| match never {})
            .with_trailers(async move { Some(Ok(trailers)) });
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    if path == "/drip" {
        // The first chunk now, the rest 30 s later: only a streaming proxy shows the first early.
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, hyper::Error>::new(1);
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from_static(b"first chunk\n")).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            let _ = tx.send_data(Bytes::from_static(b"last chunk\n")).await;
        });
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let uri = req.uri().to_string();
    let headers: BTreeMap<String, String> =
        req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let json = serde_json::json!({
        "backend": name,
        "method": method,
        "uri": uri,
        "version": version,
        "headers": headers,
        "body_bytes": body.len(),
        "peer": peer.to_string(),
    });
    let mut res = Response::new(full(Bytes::from(json.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert("content-type", "application/json".parse().unwrap());
    Ok(res)
}

/// A helper process (a Python app server) that prints `PORT <n>` once listening; killed on drop.
pub struct App {
    child: Child,
    pub port: u16,
}

impl App {
    pub fn python(script_name: &str) -> Self {
        Self::python_with(script_name, &[])
    }

    pub fn python_with(script_name: &str, args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(script(script_name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{}: {e} (run the test command to set up .venv-test)", python().display())
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{script_name} printed {line:?}"));
        Self { child, port }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python test client to completion; panics with its output unless it exits 0.
pub async fn run_python(script_name: &str, args: &[&str]) -> String {
    let out =
        tokio::process::Command::new(python()).arg(script(script_name)).args(args).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script_name} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// Sends `n` requests to `url` with curl (`parallel` at a time, `args` applied to each) and
/// returns their status codes.
pub async fn curl_many(n: usize, parallel: usize, args: &[&str], url: &str) -> Vec<u16> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "--max-time", "60", "-w", "%{http_code}\n"]).args(args);
    if parallel > 1 {
        cmd.args(["-Z", "--parallel-immediate", "--parallel-max", &parallel.to_string()]);
    }
    for _ in 0..n {
        cmd.args(["-o", "/dev/null", url]);
    }
    let out = cmd.output().await.expect("curl is installed");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().parse().unwrap_or(0)).collect()
}
