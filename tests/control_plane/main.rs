//! End-to-end tests of the control plane: the real `pilotfish control-plane` process on a real
//! data directory, driven by the `pilotfish` CLI, the typed API client, and curl where a test
//! sends what no client would or looks at raw HTTP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pilotfish_api::client::{Client, ClientError, Preconditions};
use pilotfish_api::wire::{DiffQuery, EndpointQuery, EventsQuery, Registration};
use serde_json::Value;

mod auth;
mod authz;
mod ca;
mod dashboard;
mod ha;
mod inject;
mod kubernetes;
mod managed;
mod mesh;
mod openapi;
mod rollout;
mod stats;
#[path = "../sidecar/support.rs"]
#[allow(dead_code)]
mod support;
mod tap;
mod up;

const BIN: &str = env!("CARGO_BIN_EXE_pilotfish");
const TOKEN: &str = "test-admin-token";
/// The seal key of the CA that replicas sharing etcd share.
const SEAL_KEY: &str = "test-seal-key-0123456789abcdef0123456789";

/// A running control plane, killed on drop.
struct ControlPlane {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl ControlPlane {
    fn start(data_dir: &Path) -> Self {
        Self::start_on(data_dir, "127.0.0.1:0")
    }

    fn start_on(data_dir: &Path, listen: &str) -> Self {
        Self::launch(&["--listen", listen, "--data-dir", data_dir.to_str().unwrap()])
    }

    /// A replica sharing its log (and, sealed under [`SEAL_KEY`], its CA) through etcd.
    fn start_etcd(etcd: &str) -> Self {
        Self::launch(&["--listen", "127.0.0.1:0", "--store", etcd, "--ca-seal-key", SEAL_KEY])
    }

    fn launch(args: &[&str]) -> Self {
        Self::launch_with_env(args, &[])
    }

    fn launch_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["control-plane", "--admin-token", TOKEN])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let found =
                log.lock().unwrap().lines().find(|l| l.contains("control plane listening")).and_then(|l| {
                    l.split_whitespace().find_map(|w| w.strip_prefix("listen=")).and_then(|a| a.parse().ok())
                });
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("control plane exited with {status}: {}", log.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "control plane did not start: {}", log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { child, addr, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The typed API client, with the admin token.
    fn client(&self) -> Client {
        // As curl's --max-time did: a stalled control plane fails the test instead of hanging it.
        Client::builder(&self.url("")).token(Some(TOKEN.into())).timeout(Duration::from_secs(20)).build()
    }

    /// [`ControlPlane::client`] with a runtime of its own, for the synchronous tests.
    fn api(&self) -> Api {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Api { runtime, client: self.client() }
    }

    /// The CLI against this control plane.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("PILOTFISH_SERVER", self.url(""))
            .env("PILOTFISH_TOKEN", TOKEN)
            .output()
            .unwrap()
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "pilotfish {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The typed client and a runtime to run its calls on.
struct Api {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Api {
    fn run<F: std::future::Future>(&self, call: F) -> F::Output {
        self.runtime.block_on(call)
    }

    /// The whole event log (one page: these tests write fewer than a page).
    fn log(&self) -> Vec<pilotfish_api::wire::Event> {
        self.run(self.client.events(&EventsQuery::default())).unwrap().events
    }
}

impl std::ops::Deref for Api {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// curl: (status, JSON body).
fn curl(args: &[&str]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80, protocol: http}}]\n  endpoints: [{{address: 127.0.0.1:{port}}}]\n"
    )
}

/// Splits a printed table into its cells, asserting it is laid out the kubectl way: every cell
/// starts at its header's column, each column as wide as its widest cell plus three spaces,
/// nothing after the last cell, no empty cell (`<none>` instead).
fn table_cells(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header = lines.next().expect("a header line");
    // A column starts after three spaces (a header may hold one space, as `LAST NACK` does).
    let starts: Vec<usize> = (0..header.len())
        .filter(|&i| {
            header.as_bytes()[i] != b' ' && (i == 0 || header.get(i.saturating_sub(3)..i) == Some("   "))
        })
        .collect();
    let rows: Vec<Vec<String>> = std::iter::once(header)
        .chain(lines)
        .map(|line| {
            assert_eq!(line.trim_end(), line, "trailing spaces:\n{table}");
            let bounds = starts.iter().zip(starts.iter().skip(1).map(Some).chain([None]));
            bounds
                .map(|(&start, end)| {
                    let cell = match end {
                        Some(&end) => {
                            line.get(start..end).unwrap_or_else(|| panic!("short row {line:?}:\n{table}"))
                        }
                        None => line.get(start..).unwrap_or_else(|| panic!("short row {line:?}:\n{table}")),
                    };
                    assert!(
                        !cell.starts_with(' ') && !cell.trim().is_empty(),
                        "misaligned {line:?}:\n{table}"
                    );
                    if end.is_some() {
                        assert!(cell.ends_with("   "), "no three-space gap in {line:?}:\n{table}");
                    }
                    cell.trim_end().to_owned()
                })
                .collect()
        })
        .collect();
    for (k, pair) in starts.windows(2).enumerate() {
        let widest = rows.iter().map(|r| r[k].len()).max().unwrap();
        assert_eq!(widest + 3, pair[1] - pair[0], "column {k} is not as wide as its widest cell:\n{table}");
    }
    rows
}

const ROUTE: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: users}\nspec:\n  parentRefs: [{name: users}]\n  rules:\n  - timeouts: {request: 2s}\n";

#[test]
fn apply_get_history_diff_and_rollback_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, format!("{}{ROUTE}", service("users", 9001))).unwrap();
    let out = cp.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("Service/default/users configured (version 1, seq 1)"), "{out}");
    assert!(out.contains("HTTPRoute/default/users configured (version 1, seq 2)"), "{out}");
    // The same file again changes nothing.
    assert!(cp.cli_ok(&["apply", "-f", file.to_str().unwrap()]).contains("unchanged"));

    let json: Value = serde_json::from_str(&cp.cli_ok(&["get", "service", "users", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["endpoints"][0]["address"], "127.0.0.1:9001");
    let table = table_cells(&cp.cli_ok(&["get", "httproute"]));
    assert_eq!(
        table,
        [["KIND", "NAMESPACE", "NAME", "VERSION", "SEQ"], ["HTTPRoute", "default", "users", "1", "2"]]
    );

    std::fs::write(&file, service("users", 9002)).unwrap();
    assert!(cp.cli_ok(&["apply", "-f", file.to_str().unwrap()]).contains("version 2, seq 3"));
    let diff = cp.cli_ok(&["diff", "2", "3"]);
    assert!(diff.contains("~ changed Service/default/users") && diff.contains("127.0.0.1:9002"), "{diff}");

    let history = table_cells(&cp.cli_ok(&["history"]));
    assert_eq!(history.len(), 4, "{history:?}");
    assert_eq!(history[0], ["SEQ", "AT", "KIND", "AGGREGATE", "VERSION", "ACTOR"]);
    assert_eq!(
        [&history[3][0], &history[3][2], &history[3][3], &history[3][4], &history[3][5]],
        ["3", "ResourceApplied", "Service/default/users", "2", "admin"]
    );

    // Roll back to after seq 1: the route goes, the endpoint goes back to 9001.
    let out = cp.cli_ok(&["rollback", "--to", "1"]);
    assert!(out.contains("2 change(s)"), "{out}");
    let json: Value = serde_json::from_str(&cp.cli_ok(&["get", "service", "users", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["endpoints"][0]["address"], "127.0.0.1:9001");
    let missing = cp.cli(&["get", "httproute", "users"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let history = cp.cli_ok(&["history", "--since", "3"]);
    assert!(history.contains("rollback to 1"), "{history}");
    table_cells(&history);

    assert!(cp.cli_ok(&["delete", "service", "users"]).contains("deleted"));
    assert_eq!(table_cells(&cp.cli_ok(&["get", "service"])).len(), 1, "only the header is left");
}

/// An HTTPRoute as `kubectl get httproute -o yaml` prints it, applied through the CLI: accepted,
/// the fields without effect warned about, status and what the cluster set not stored, labels
/// and annotations kept.
#[test]
fn a_route_exported_from_a_cluster_applies_with_warnings_and_stores_only_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kubectl-httproute.yaml");
    let out = cp.cli(&["apply", "-f", file]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("HTTPRoute/shop/users configured (version 1, seq 1)"), "{stdout}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Warning: ")).collect();
    assert_eq!(
        warnings,
        [
            format!("Warning: {file}: document 1 (HTTPRoute shop/users): spec.parentRefs[0].sectionName: not implemented: the route applies to every port of Service users, not only to port \"http\""),
            format!("Warning: {file}: document 1 (HTTPRoute shop/users): spec.parentRefs[0].port: not implemented: the route applies to every port of Service users, not only to port 80"),
        ],
        "{stderr}"
    );

    let yaml = cp.cli_ok(&["get", "httproute", "users", "-n", "shop", "-o", "yaml"]);
    let shown: Value = serde_yaml_ng::from_str(yaml.trim_start_matches("---\n")).unwrap();
    let mut meta: Vec<&String> = shown["metadata"].as_object().unwrap().keys().collect();
    meta.sort();
    assert_eq!(meta, ["annotations", "labels", "name", "namespace"], "{yaml}");
    assert_eq!(shown["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm", "{yaml}");
    assert_eq!(shown["metadata"]["annotations"]["team.example.com/owner"], "payments", "{yaml}");
    assert!(shown.get("status").is_none(), "{yaml}");
    assert_eq!(shown["spec"]["parentRefs"][0]["sectionName"], "http", "{yaml}");
    assert_eq!(shown["spec"]["rules"][0]["backendRefs"][1]["weight"], 10, "{yaml}");

    // Nothing the cluster set reached the log either.
    let api = cp.api();
    let logged = serde_json::to_string(&api.log()).unwrap();
    for field in ["managedFields", "resourceVersion", "uid", "creationTimestamp", "status", "last-applied"] {
        assert!(!logged.contains(field), "{field} was stored: {logged}");
    }

    // The API's answer carries the warnings too, also when nothing changed.
    let text = std::fs::read_to_string(file).unwrap();
    let out = api.run(api.apply(&text)).unwrap();
    assert!(out.applied[0].unchanged, "{out:?}");
    assert_eq!(out.warnings[1].document, 1, "{out:?}");
    assert_eq!(out.warnings[1].object, "HTTPRoute shop/users", "{out:?}");
    assert_eq!(out.warnings[1].field, "spec.parentRefs[0].port", "{out:?}");
    let auth = format!("Authorization: Bearer {TOKEN}");

    // What changes the route's meaning is still refused.
    let gateway = text.replacen("kind: Service\n    name: users", "kind: Gateway\n    name: users", 1);
    let (status, body) =
        curl(&["-X", "POST", "-H", &auth, "--data-binary", &gateway, &cp.url("/v1/resources")]);
    assert_eq!((status, body["field"].as_str()), (400, Some("spec.parentRefs[0].kind")), "{body}");
}

#[test]
fn writes_need_the_token_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let url = cp.url("/v1/resources");
    let doc = service("users", 9001);
    let (status, body) = curl(&["-X", "POST", "--data-binary", &doc, &url]);
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let wrong = "Authorization: Bearer nope";
    assert_eq!(curl(&["-X", "POST", "-H", wrong, "--data-binary", &doc, &url]).0, 401);
    // Authentication comes before reading the request: a malformed body without a valid token
    // is 401, not 400.
    let register = cp.url("/v1/endpoints");
    let json = "content-type: application/json";
    for token in [None, Some(wrong), Some("Authorization: Bearer made.up")] {
        let mut args = vec!["-X", "POST", "-H", json, "--data", "{not json", &register];
        if let Some(token) = token {
            args.extend(["-H", token]);
        }
        let (status, body) = curl(&args);
        assert_eq!(status, 401, "{token:?}: {body}");
    }

    // Two documents, the second invalid: rejected whole, with the field path.
    let bad = format!("{doc}---\n{}", service("billing", 0).replace("127.0.0.1:0", "127.0.0.1:http"));
    let (status, body) = curl(&["-X", "POST", "-H", &auth, "--data-binary", &bad, &url]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["document"], 2);
    assert_eq!(body["field"], "spec.endpoints[0].address");
    assert_eq!(cp.api().log().len(), 0, "nothing was half-applied");

    let (status, body) = curl(&["-X", "POST", "-H", &auth, "--data-binary", "{not yaml: [", &url]);
    assert_eq!(status, 400, "{body}");
    let (status, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "content-type: application/json",
        "--data",
        "{}",
        &cp.url("/v1/rollback"),
    ]);
    assert_eq!(status, 400, "a malformed rollback request is refused");
    let (status, body) = curl(&[&cp.url("/v1/nothing-here")]);
    assert_eq!(status, 404);
    assert!(body["error"].is_string(), "{body}");
    let (status, _) = curl(&["-H", &auth, &cp.url("/v1/resources?kind=widget")]);
    assert_eq!(status, 400, "an unknown kind is an error, not an empty list");
}

#[test]
fn optimistic_concurrency_and_idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let api = cp.api();
    api.run(api.apply(&service("users", 9001))).unwrap();

    // Two writers both expecting version 1: exactly one wins, the other hears 409.
    let writers: Vec<_> = [9002, 9003]
        .into_iter()
        .map(|port| {
            let api = cp.api();
            std::thread::spawn(move || {
                let expect_1 = Preconditions { if_match: Some(1), ..Preconditions::default() };
                api.run(api.apply_with(&service("users", port), &expect_1))
            })
        })
        .collect();
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results.iter().filter(|r| matches!(r, Err(ClientError::Conflict(_)))).count();
    assert_eq!((won, conflicts), (1, 1), "{results:?}");

    // The same Idempotency-Key twice: one event, the same answer.
    let key = Preconditions { idempotency_key: Some("deploy-42".into()), ..Preconditions::default() };
    let first = api.run(api.apply_with(&service("billing", 9100), &key)).unwrap();
    let again = api.run(api.apply_with(&service("billing", 9100), &key)).unwrap();
    assert_eq!(first.applied[0].seq, again.applied[0].seq);
    let events = api.log();
    assert_eq!(events.len(), 3, "{events:?}");
}

#[test]
fn registered_endpoints_expire_without_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let api = cp.api();
    let register = |addr: &str, ttl: u64| {
        let registration = Registration::new("users", "default", addr.parse().unwrap(), ttl);
        api.run(api.register(&registration)).unwrap()
    };
    let kept = register("127.0.0.1:9001", 30);
    let lapsing = register("127.0.0.1:9002", 1);
    let users = EndpointQuery { service: Some("users".into()) };
    let count = || api.run(api.endpoints(&users)).unwrap().items.len();
    // The 1 s lease lapses; the 30 s one, heartbeated, stays.
    let deadline = Instant::now() + Duration::from_secs(20);
    while count() != 1 {
        assert!(Instant::now() < deadline, "the endpoint without heartbeats never expired");
        api.run(api.heartbeat(&kept.id)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = api.log();
    let expired: Vec<_> = events.iter().filter(|e| e.kind == "EndpointExpired").collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].aggregate, format!("Endpoint/{}", lapsing.id));
    api.run(api.deregister(&kept.id)).unwrap();
    assert_eq!(count(), 0);
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(dir.path());
    let api = cp.api();
    let (acks, acked) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        for i in 0..2000 {
            let Ok(out) = api.run(api.apply(&service(&format!("svc-{i}"), 9000))) else { break };
            acknowledged.push((out.applied[0].seq.unwrap(), format!("Service/default/svc-{i}")));
            let _ = acks.send(());
        }
        acknowledged
    });
    // Kill it at an arbitrary moment while writes are in flight (once at least 20 have landed).
    for _ in 0..20 {
        acked.recv_timeout(Duration::from_secs(20)).expect("writes are acknowledged");
    }
    std::thread::sleep(Duration::from_millis(u64::from(std::process::id() % 300)));
    cp.kill();
    let acknowledged = writer.join().unwrap();
    assert!(!acknowledged.is_empty(), "no write finished before the kill: {}", cp.log.lock().unwrap());

    let cp = ControlPlane::start(dir.path());
    let events = cp.api().log();
    // Every acknowledged write is there, in order, exactly once; at most one unacknowledged
    // write (in flight at the kill) may follow.
    for (i, (seq, aggregate)) in acknowledged.iter().enumerate() {
        assert_eq!(events[i].seq, *seq);
        assert_eq!(&events[i].aggregate, aggregate);
    }
    assert!(
        events.len() <= acknowledged.len() + 1,
        "{} events for {} writes",
        events.len(),
        acknowledged.len()
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "seq has gaps: {seqs:?}");
}

#[test]
fn the_openapi_document_is_valid_and_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let out = Command::new("curl").args(["-s", &cp.url("/v1/openapi.json")]).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Checked by an OpenAPI validator nobody here wrote.
    let mut validator = Command::new(support::python())
        .arg(support::script("validate_openapi.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut validator.stdin.take().unwrap(), &out.stdout).unwrap();
    let verdict = validator.wait_with_output().unwrap();
    assert!(
        verdict.status.success(),
        "invalid OpenAPI document: {}",
        String::from_utf8_lossy(&verdict.stdout)
    );
    // Every documented operation is routed (the fallback answers anything else).
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 9, "{paths:?}");
    for (path, methods) in paths {
        let concrete =
            path.replace("{kind}", "service").replace("{namespace}", "default").replace(['{', '}'], "");
        for method in methods.as_object().unwrap().keys() {
            let (_, body) = curl(&["-X", &method.to_uppercase(), "--max-time", "2", &cp.url(&concrete)]);
            let fallback = body["error"].as_str().is_some_and(|e| e.contains("no such API path"));
            assert!(!fallback, "{method} {path} is documented but not routed");
        }
    }
}

/// `GET /v1/diff` on a log of 10,000 events: each request costs about the same as on a short log,
/// not a replay of the whole log. Prints the figures.
#[test]
fn a_diff_on_a_long_log_costs_about_what_it_costs_on_a_short_one() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let api = cp.api();
    let write_events = |from: usize, to: usize| {
        for chunk in (from..to).collect::<Vec<_>>().chunks(100) {
            let docs: Vec<String> =
                chunk.iter().map(|i| service(&format!("svc-{}", i % 100), 9000 + (i / 100) as u16)).collect();
            api.run(api.apply(&docs.join("---\n"))).unwrap();
        }
    };
    // Each request diffs the last ten events; the median of 15 is what it costs.
    let median_diff = || {
        let head = api.run(api.events(&EventsQuery { since: 0, limit: Some(1) })).unwrap().head;
        let last_ten = DiffQuery { from: head - 10, to: Some(head) };
        let mut times: Vec<Duration> = (0..15)
            .map(|_| {
                let started = Instant::now();
                api.run(api.diff(&last_ten)).unwrap();
                started.elapsed()
            })
            .collect();
        times.sort();
        (head, times[times.len() / 2])
    };
    write_events(0, 1000);
    let (short_log, short) = median_diff();
    write_events(1000, 10_000);
    let (long_log, long) = median_diff();
    println!("GET /v1/diff median: {short:?} on a log of {short_log} events, {long:?} on {long_log}");
    assert!(
        long < short * 3 + Duration::from_millis(30),
        "{long:?} on {long_log} events vs {short:?} on {short_log}"
    );
}
