//! The zero-trust mesh end to end: a real control plane as the mesh CA, managed sidecars that
//! get their identities from it with their own join tokens, and mutual TLS between them. What
//! the app behind a sidecar learns of its caller, what a capture of the wire shows,
//! authorization by identity, and what must hold over time under continuous load: short-lived
//! leaf certificates renewed, a root rotation, and the CA down for 30 s, with no failed request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use crate::managed::{eventually, managed_at, managed_with_token};
use crate::support::{self, backend, Sidecar};
use crate::ControlPlane;

const TRUST_DOMAIN: &str = "spiffe://pilotfish.local/ns/default/sa";

/// A control plane on `dir` with `extra` flags.
pub(crate) fn control_plane(dir: &std::path::Path, extra: &[&str]) -> ControlPlane {
    let mut args = vec!["--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    tokio::task::block_in_place(|| ControlPlane::launch(&args))
}

/// A sidecar of `service` on its own join token, so it proves that service's identity.
fn joined(cp: &ControlPlane, service: &str, extra: &[&str]) -> Sidecar {
    let token = tokio::task::block_in_place(|| cp.cli_ok(&["token", "create", "--service", service]));
    managed_with_token(cp, service, token.trim(), extra)
}

/// `greeter`'s app and sidecar, and a `client` sidecar calling it; `extra` goes to both sidecars.
pub(crate) async fn greeter_and_client(
    cp: &ControlPlane,
    extra: &[&str],
) -> (support::Backend, Sidecar, Sidecar) {
    let app = backend("greeter-app").await;
    let app_addr = app.addr.to_string();
    let mut args = vec!["--app", &app_addr, "--inbound", "127.0.0.1:0", "--lease-ttl", "120s"];
    args.extend_from_slice(extra);
    let greeter = joined(cp, "greeter", &args);
    let client = joined(cp, "client", extra);
    (app, greeter, client)
}

/// Curls `service` through `caller`'s outbound listener until the answer is `status`.
pub(crate) async fn call_until(
    caller: &Sidecar,
    service: &str,
    status: u16,
    extra: &[&str],
) -> support::Reply {
    let url = format!("http://{}/hello", caller.outbound);
    let host = format!("Host: {service}");
    eventually(&format!("{service} answers {status} through the caller's sidecar"), async || {
        let mut args = vec!["-H", &host];
        args.extend_from_slice(extra);
        args.push(&url);
        let r = support::curl(&args).await;
        (r.status == status).then_some(r)
    })
    .await
}

async fn metric(sidecar: &Sidecar, name: &str, labels: &[(&str, &str)]) -> f64 {
    support::sample(&sidecar.metrics().await, name, labels)
}

async fn renewals(sidecar: &Sidecar, result: &str) -> f64 {
    metric(sidecar, "pilotfish_identity_cert_renewals_total", &[("result", result)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_call_each_other_over_mtls_and_authorize_by_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &["--authz-default", "deny"]);
    let (_app, greeter, client) = greeter_and_client(&cp, &[]).await;
    let intruder = joined(&cp, "intruder", &[]);

    // Under the `deny` default with no policy, the call reaches greeter's sidecar and is refused
    // there (the callee enforces, so the caller learns the service exists).
    let r = call_until(&client, "greeter", 403, &[]).await;
    assert_eq!(r.header("pilotfish-error"), Some("forbidden"));

    let policy = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: greeter-callers}}\n\
         spec:\n  targetRef: {{kind: Service, name: greeter}}\n  action: ALLOW\n  rules:\n  \
         - from: [{{identity: \"{TRUST_DOMAIN}/client\"}}]\n"
    );
    cp.client().apply(&policy).await.unwrap();
    // The app sees the caller's identity as the CA issued it, whatever the caller's app claims.
    let spoof = format!("x-pilotfish-peer-identity: {TRUST_DOMAIN}/admin");
    let r = call_until(&client, "greeter", 200, &["-H", &spoof]).await;
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-pilotfish-peer-identity"], format!("{TRUST_DOMAIN}/client"), "{seen}");

    // Another identity is refused by the policy.
    let r = call_until(&intruder, "greeter", 403, &[]).await;
    assert_eq!(r.header("pilotfish-error"), Some("forbidden"));

    // Plaintext straight to greeter's inbound port: refused (managed sidecars are strict) and
    // counted.
    let inbound = greeter.inbound.unwrap();
    let r = support::curl(&[&format!("http://{inbound}/hello")]).await;
    assert_eq!((r.status, r.header("pilotfish-error")), (403, Some("forbidden")));
    assert!(metric(&greeter, "pilotfish_inbound_tls_refused_total", &[("reason", "plaintext")]).await >= 1.0);

    // A capture of the loopback traffic into greeter's inbound port while a marked request
    // crosses it: TLS records, never the marker the app receives.
    let pcap = dir.path().join("mesh.pcap");
    let mut capture = tokio::process::Command::new("tcpdump")
        .args([
            "-i",
            "lo",
            "--immediate-mode",
            "-U",
            "-n",
            "-w",
            pcap.to_str().unwrap(),
            "tcp",
            "port",
            &inbound.port().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump is installed");
    let mut stderr = tokio::io::BufReader::new(capture.stderr.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stderr, &mut line).await.unwrap();
    assert!(line.contains("listening on"), "tcpdump: {line}");
    // "listening" comes a moment before the first packet is seen.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let marker = format!("marker-{}", std::process::id());
    let r = support::curl(&[
        "-H",
        "Host: greeter",
        "-H",
        &format!("x-capture: {marker}"),
        &format!("http://{}/hello", client.outbound),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-capture"], marker.as_str(), "the marker reached the app");
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix_interrupt(capture.id().unwrap());
    capture.wait().await.unwrap();
    let mut said = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut said).await.unwrap();
    let captured = std::fs::read(&pcap).unwrap();
    let contains = |needle: &[u8]| captured.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(&[0x17, 0x03, 0x03]),
        "TLS application data crossed the port ({} bytes)",
        captured.len()
    );
    assert!(!contains(marker.as_bytes()), "the marker crossed the wire in plaintext");
    assert!(!contains(b"GET /hello"), "an HTTP request line crossed the wire in plaintext");
}

/// Ends tcpdump the way a user would (Ctrl-C), so it flushes its file.
fn nix_interrupt(pid: u32) {
    let status = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

/// Requests from `concurrency` keep-alive connections until stopped, each counted as a 200 or
/// kept as a failure (status or error), as an app's clients would see them.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(caller: &Sidecar, service: &str, concurrency: usize) -> Load {
        let (stop, ok, failed) = Default::default();
        let mut load = Load { stop, ok, failed, tasks: Vec::new() };
        let url = format!("http://{}/hello", caller.outbound);
        for _ in 0..concurrency {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
            let (stop, ok, failed, url) =
                (load.stop.clone(), load.ok.clone(), load.failed.clone(), url.clone());
            let host = service.to_owned();
            load.tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let req = http::Request::get(&url).header("host", &host).body(Empty::new()).unwrap();
                    match client.request(req).await {
                        Ok(resp) if resp.status() == 200 => match resp.into_body().collect().await {
                            Ok(_) => _ = ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => failed.lock().unwrap().push(format!("body: {e}")),
                        },
                        Ok(resp) => {
                            let why = resp.headers().get("pilotfish-error").cloned();
                            failed.lock().unwrap().push(format!("{} {why:?}", resp.status()));
                        }
                        Err(e) => failed.lock().unwrap().push(format!("{e:?}")),
                    }
                }
            }));
        }
        load
    }

    /// Stops the load and checks what the clients saw: not one failed request, and at least
    /// `at_least` that succeeded. Returns how many succeeded.
    async fn stop_without_failures(self, at_least: u64) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        let ok = self.ok.load(Ordering::Relaxed);
        let total = ok + failed.len() as u64;
        assert!(
            failed.is_empty(),
            "{} of {total} requests failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(10)]
        );
        assert!(ok >= at_least, "only {ok} requests succeeded");
        ok
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_certificates_renew_under_continuous_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    // 6 s leaves renew every ~4 s; mesh connections live 1 s, so renewed certificates are
    // presented in new handshakes while the load runs.
    let cp = control_plane(dir.path(), &["--cert-ttl", "6s"]);
    let (_app, greeter, client) = greeter_and_client(&cp, &["--mesh-max-age", "1s"]).await;
    // The `authenticated` default with no policy: meshed calls pass, plaintext ones do not.
    call_until(&client, "greeter", 200, &[]).await;
    let r = support::curl(&[&format!("http://{}/hello", greeter.inbound.unwrap())]).await;
    assert_eq!(r.status, 403, "plaintext refused");

    let renewed_before = [renewals(&greeter, "ok").await, renewals(&client, "ok").await];
    let dialled_before =
        metric(&client, "pilotfish_mesh_connections_opened_total", &[("direction", "outbound")]).await;
    let load = Load::start(&client, "greeter", 8);
    tokio::time::sleep(Duration::from_secs(14)).await;
    let ok = load.stop_without_failures(200).await;
    for (sidecar, before) in [(&greeter, renewed_before[0]), (&client, renewed_before[1])] {
        let renewed = renewals(sidecar, "ok").await - before;
        assert!(renewed >= 2.0, "{renewed} renewals during the load: {}", sidecar.stderr());
    }
    let dialled =
        metric(&client, "pilotfish_mesh_connections_opened_total", &[("direction", "outbound")]).await;
    assert!(
        dialled - dialled_before >= 5.0,
        "mesh connections were replaced as they aged ({dialled_before} → {dialled})"
    );
    println!("{ok} requests, 0 failed, across renewals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_continues_while_the_ca_is_down_and_renewal_resumes_after() {
    let dir = tempfile::tempdir().unwrap();
    // 40 s leaves renew 26-30 s after issue: inside the 30 s outage below, and again after the
    // control plane is back, before they expire.
    let mut cp = control_plane(dir.path(), &["--cert-ttl", "40s"]);
    let (_app, greeter, client) = greeter_and_client(&cp, &[]).await;
    call_until(&client, "greeter", 200, &[]).await;
    let expiry =
        async |sc: &Sidecar| metric(sc, "pilotfish_identity_cert_expiry_timestamp_seconds", &[]).await;
    let issued = [expiry(&greeter).await, expiry(&client).await];

    let load = Load::start(&client, "greeter", 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let addr = cp.addr.to_string();
    tokio::task::block_in_place(|| cp.kill());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let cp = tokio::task::block_in_place(|| ControlPlane::start_on(dir.path(), &addr));
    for (sidecar, first) in [(&greeter, issued[0]), (&client, issued[1])] {
        assert!(renewals(sidecar, "error").await >= 1.0, "a renewal was due while the CA was down");
        eventually("the sidecar renewed once the CA was back", async || {
            (expiry(sidecar).await > first).then_some(())
        })
        .await;
    }
    load.stop_without_failures(200).await;
    drop(cp);
}

/// The roots `GET /v1/ca` lists, and which of them issues.
async fn roots(cp: &ControlPlane) -> Vec<(String, bool)> {
    let status = cp.client().ca_status().await.unwrap();
    status.roots.into_iter().map(|r| (r.fingerprint, r.active)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_under_continuous_load_fails_no_request_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Day-long leaves: only the rotation makes the sidecars renew. Mesh connections live 1 s, so
    // new handshakes keep proving each phase's certificates and bundles.
    let mut cp = control_plane(dir.path(), &[]);
    let (_app, greeter, client) = greeter_and_client(&cp, &["--mesh-max-age", "1s"]).await;
    call_until(&client, "greeter", 200, &[]).await;
    let old = roots(&cp).await;
    assert_eq!(old.len(), 1);
    let old_root = old[0].0.clone();
    let renewed_before = [renewals(&greeter, "ok").await, renewals(&client, "ok").await];

    let load = Load::start(&client, "greeter", 8);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rotate = ["ca", "rotate", "--overlap", "3s", "--wait"];
    let out = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::task::block_in_place(|| cp.cli_ok(&rotate))
    })
    .await
    .expect("the rotation ends within a minute");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ok = load.stop_without_failures(200).await;

    assert!(
        out.contains("distributing the new root") && out.contains("renewing under the new root"),
        "{out}"
    );
    let new = roots(&cp).await;
    assert_eq!(new.len(), 1, "the old root is retired: {new:?}");
    let (new_root, active) = &new[0];
    assert!(*active && *new_root != old_root, "{new:?}");
    assert!(
        out.contains(&format!("rotation done: every sidecar trusts and presents root {new_root}")),
        "{out}"
    );
    for (sidecar, before) in [(&greeter, renewed_before[0]), (&client, renewed_before[1])] {
        let renewed = renewals(sidecar, "ok").await - before;
        assert!(renewed >= 1.0, "the sidecar renewed under the new root: {}", sidecar.stderr());
        let root = metric(sidecar, "pilotfish_identity_root_info", &[("fingerprint", new_root)]).await;
        assert_eq!(root, 1.0, "the sidecar trusts the new root: {}", sidecar.stderr());
    }
    let proxies = cp.client().proxies().await.unwrap();
    for p in proxies.items.iter().filter(|p| p.connected) {
        let root = p.certificate.as_ref().and_then(|c| c.root.clone());
        assert_eq!(
            root.as_deref(),
            Some(new_root.as_str()),
            "{} reports its certificate under the new root",
            p.id
        );
        assert_eq!(p.certificate_warning, None);
        let trusted = p.trusted_roots.as_deref().unwrap_or_default();
        assert!(trusted.contains(new_root), "{} reports trusting the new root: {trusted:?}", p.id);
    }
    let table = tokio::task::block_in_place(|| cp.cli_ok(&["proxies"]));
    assert_eq!(table.matches(&new_root[..16]).count(), 2, "both sidecars under the new root:\n{table}");
    let log = cp.client().events(&Default::default()).await.unwrap().events;
    let phases: Vec<_> = log.iter().filter(|e| e.kind.starts_with("Ca")).map(|e| e.kind.as_str()).collect();
    assert_eq!(phases, ["CaRootAdded", "CaIssuerActivated", "CaRootRetired"]);
    assert!(log.iter().all(|e| !e.data.to_string().contains("PRIVATE KEY")), "no key in the log");
    println!("{ok} requests, 0 failed, across a root rotation");

    // A restarted control plane resumes from the log: the new root alone, issuing.
    let addr = cp.addr.to_string();
    tokio::task::block_in_place(|| cp.kill());
    let cp = tokio::task::block_in_place(|| ControlPlane::start_on(dir.path(), &addr));
    assert_eq!(roots(&cp).await, new);
    let conflict = tokio::task::block_in_place(|| cp.cli(&["ca", "rotate"]));
    assert!(conflict.status.success(), "a second rotation may start once the first ended");
    let again = tokio::task::block_in_place(|| cp.cli(&["ca", "rotate"]));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && stderr.contains("under way"), "one rotation at a time: {stderr}");
}

/// libfaketime's preload library, as Debian's `faketime` package installs it.
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib").unwrap().flatten().find_map(|dir| {
        let lib = dir.path().join("faketime/libfaketime.so.1");
        lib.exists().then(|| lib.to_str().unwrap().to_owned())
    });
    found.expect("libfaketime is installed (Debian package faketime)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_whose_clock_is_30_s_behind_takes_fresh_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &[]);
    let app = backend("greeter-app").await;
    let app_addr = app.addr.to_string();
    // The callee's node clock is 30 s behind the CA's: a certificate that started at the moment
    // it was issued would not be valid yet there. Leaves start a minute early.
    let token = tokio::task::block_in_place(|| cp.cli_ok(&["token", "create", "--service", "greeter"]));
    let args = ["--app", &app_addr, "--inbound", "127.0.0.1:0", "--lease-ttl", "120s"];
    let lib = libfaketime();
    let behind = [("LD_PRELOAD", lib.as_str()), ("FAKETIME", "-30s"), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")];
    let greeter = managed_at(&cp.url(""), "greeter", token.trim(), &args, &behind);
    let client = joined(&cp, "client", &[]);
    let r = call_until(&client, "greeter", 200, &[]).await;
    let peer = r.json()["headers"]["x-pilotfish-peer-identity"].clone();
    assert_eq!(peer, format!("{TRUST_DOMAIN}/client"), "the call went over mesh mTLS");

    // The greeter really lives 30 s in the past: its log's clock says so.
    let first = greeter.stderr().lines().next().unwrap().split_whitespace().next().unwrap().to_owned();
    let logged =
        humantime::parse_rfc3339_weak(first.trim_end_matches('Z').split('.').next().unwrap()).unwrap();
    let lag = std::time::SystemTime::now().duration_since(logged).unwrap();
    assert!(lag >= Duration::from_secs(25), "the greeter's clock is {lag:?} behind: {first}");
    let early = metric(&greeter, "pilotfish_inbound_tls_refused_total", &[("reason", "not_yet_valid")]).await;
    assert_eq!(early, 0.0, "no certificate was refused as not yet valid: {}", greeter.stderr());
}
