//! Progressive delivery end to end: Rollouts on a local mesh with load running the whole time,
//! judged from what the load's sidecar reports. A healthy canary is promoted step by step with
//! the weights seen in traffic; a canary answering 20% 5xx is aborted after `failureLimit`
//! intervals and its traffic goes back to stable; canaries without traffic pause or abort as
//! `onNoData` says; a killed control plane resumes at the same step; a rollout moves to the
//! other replica on etcd when its driver dies; history shows every step; a rollback under a
//! running rollout is refused.
//!
//! Intervals are 5 s (the shortest), so each test takes 15-20 s; they share nothing and run in
//! parallel.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use pilotfish_api::wire::{Event, EventsQuery, RolloutPhase, RolloutStatus, VerdictResult};
use serde_json::Value;

use crate::ha::Etcd;
use crate::managed::{eventually, managed_at, managed_with_token};
use crate::support::{self, backend, Sidecar};
use crate::{service, ControlPlane, TOKEN};

/// How far the canary's share of traffic may be from its weight, in percentage points, over a
/// step of at least 300 requests (p = 0.5: 2.9 points is one standard deviation).
const SHARE_ERROR: f64 = 0.10;
/// How long after a weight is written the sidecar surely routes by it (push and debounce).
const SETTLE: Duration = Duration::from_secs(2);

/// A parent Service `name` (no endpoints of its own), its two versions on `stable` and
/// `canary`, and an HTTPRoute sending everything to `name-v1`.
fn mesh_docs(name: &str, stable: u16, canary: u16, retry: bool) -> String {
    let retry = if retry { "    retry: {attempts: 3, backoff: 1ms, codes: [500]}\n" } else { "" };
    format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80, protocol: http}}]\n---\n{}---\n{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{name: {name}}}]\n  rules:\n  - backendRefs: [{{name: {name}-v1, port: 80}}]\n{retry}",
        service(&format!("{name}-v1"), stable),
        service(&format!("{name}-v2"), canary),
    )
}

/// A sidecar of `service` on its own join token, so it proves that service's identity (mTLS to
/// the canary's sidecar).
fn joined(cp: &ControlPlane, service: &str, extra: &[&str]) -> Sidecar {
    let token = tokio::task::block_in_place(|| cp.cli_ok(&["token", "create", "--service", service]));
    managed_with_token(cp, service, token.trim(), extra)
}

fn rollout_doc(name: &str, steps: &str, analysis: &str) -> String {
    format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Rollout\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: HTTPRoute, name: {name}}}\n  stable: {name}-v1\n  canary: {name}-v2\n  steps: {steps}\n  analysis: {{interval: 5s, minRequests: 20, {analysis}}}\n"
    )
}

/// A backend answering 500 to every fifth request (and 200 to the rest), with its name in a
/// JSON body either way; killed when dropped.
struct Flaky {
    port: u16,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn flaky(name: &'static str) -> Flaky {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU64::new(0));
    let server = tokio::spawn(async move {
        let mut open = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let served = served.clone();
            open.spawn(async move {
                let answer = hyper::service::service_fn(move |_req| {
                    let n = served.fetch_add(1, Ordering::Relaxed);
                    let status = if n % 5 == 4 { 500 } else { 200 };
                    let body = Full::new(Bytes::from(format!("{{\"backend\": \"{name}\"}}")));
                    let mut res = http::Response::new(body);
                    *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    async move { Ok::<_, Infallible>(res) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, answer).await;
            });
        }
    });
    Flaky { port, server }
}

/// One response the load saw.
#[derive(Debug, Clone)]
struct Seen {
    at: Duration,
    host: &'static str,
    /// Who answered (`name-v1`, `name-v2`), or empty when the body does not say.
    backend: String,
    status: u16,
}

/// Requests to each host, one at a time on one keep-alive connection per host, about 150 a
/// second each, through `caller`'s outbound listener, every response kept.
struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(caller: &Sidecar, hosts: &[&'static str]) -> Load {
        let mut load =
            Load { started: Instant::now(), stop: Arc::default(), seen: Arc::default(), tasks: Vec::new() };
        let url = format!("http://{}/hello", caller.outbound);
        for &host in hosts {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
            let (stop, seen, url, started) =
                (load.stop.clone(), load.seen.clone(), url.clone(), load.started);
            load.tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let req = http::Request::get(&url).header("host", host).body(Empty::new()).unwrap();
                    let (status, body) = match client.request(req).await {
                        Ok(res) => {
                            let status = res.status().as_u16();
                            (
                                status,
                                res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default(),
                            )
                        }
                        Err(_) => (0, Bytes::new()),
                    };
                    let backend = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["backend"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    seen.lock().unwrap().push(Seen { at: started.elapsed(), host, backend, status });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        load
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// What `host` got between `from` and `to` (load time).
    fn between(&self, host: &str, from: Duration, to: Duration) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.host == host && s.at >= from && s.at < to).cloned().collect()
    }

    /// Stops the load; what it saw stays.
    async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            task.await.unwrap();
        }
    }
}

async fn status(cp: &ControlPlane, name: &str) -> Option<RolloutStatus> {
    cp.client().rollout("default", name).await.ok()
}

/// The log's events of `name`'s saga (aggregate `RolloutRun/default/name`).
async fn saga_events(cp: &ControlPlane, name: &str) -> Vec<Event> {
    let page = cp.client().events(&EventsQuery::default()).await.unwrap();
    let aggregate = format!("RolloutRun/default/{name}");
    page.events.into_iter().filter(|e| e.aggregate == aggregate).collect()
}

/// Each step's index as its `RolloutStepStarted` events give them, in order.
fn steps_taken(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.kind == "RolloutStepStarted")
        .map(|e| e.data["step"].as_u64().unwrap())
        .collect()
}

/// The canary weights as a poller saw them change: (load time, canary weight).
type Timeline = Vec<(Duration, u32)>;

fn record(timeline: &mut Timeline, at: Duration, status: &RolloutStatus) {
    if timeline.last().is_none_or(|(_, w)| *w != status.canary_weight) {
        timeline.push((at, status.canary_weight));
    }
}

/// Checks the canary's share of `host`'s traffic in each period of `timeline` (after the
/// weight settled) against the weight, and prints them.
fn assert_shares(load: &Load, host: &str, timeline: &Timeline, end: Duration) {
    let canary = format!("{host}-v2");
    for (i, (from, weight)) in timeline.iter().enumerate() {
        let to = timeline.get(i + 1).map_or(end, |(t, _)| *t);
        let seen = load.between(host, *from + SETTLE, to);
        if seen.len() < 300 {
            continue;
        }
        let share = seen.iter().filter(|s| s.backend == canary).count() as f64 / seen.len() as f64;
        println!(
            "{host}: weight {weight}% from {from:?}: canary share {:.1}% of {}",
            share * 100.0,
            seen.len()
        );
        assert!(
            (share - f64::from(*weight) / 100.0).abs() <= SHARE_ERROR,
            "{host} at weight {weight}%: the canary got {:.1}% of {} requests",
            share * 100.0,
            seen.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_are_promoted_aborted_or_paused_from_the_meshs_own_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path()));
    let (web_v1, web_v2, api_v1) =
        (backend("web-v1").await, backend("web-v2").await, backend("api-v1").await);
    let api_v2 = flaky("api-v2").await;
    // The retried route's canary fails a fifth of its requests behind a sidecar of its own, which
    // reports what it saw on inbound: every attempt, also those the caller's retries hide.
    let (retry_v1, retry_app) = (backend("retry-v1").await, flaky("retry-v2").await);
    let (idle_v1, idle_v2, gone_v1, gone_v2) = (
        backend("idle-v1").await,
        backend("idle-v2").await,
        backend("gone-v1").await,
        backend("gone-v2").await,
    );
    let docs = [
        mesh_docs("web", web_v1.addr.port(), web_v2.addr.port(), false),
        mesh_docs("api", api_v1.addr.port(), api_v2.port, false),
        mesh_docs("idle", idle_v1.addr.port(), idle_v2.addr.port(), false),
        mesh_docs("gone", gone_v1.addr.port(), gone_v2.addr.port(), false),
        mesh_docs("retry", retry_v1.addr.port(), 0, true)
            .replace("  endpoints: [{address: 127.0.0.1:0}]\n", ""),
    ];
    cp.client().apply(&docs.join("---\n")).await.unwrap();
    let app = format!("127.0.0.1:{}", retry_app.port);
    let _canary =
        joined(&cp, "retry-v2", &["--app", &app, "--inbound", "127.0.0.1:0", "--lease-ttl", "120s"]);
    let caller = joined(&cp, "load", &[]);
    let url = format!("http://{}/hello", caller.outbound);
    for host in ["web", "api", "retry"] {
        eventually("the caller's sidecar routes to the stable versions", async || {
            let reply = support::curl(&["-H", &format!("Host: {host}"), &url]).await;
            (reply.status == 200).then_some(())
        })
        .await;
    }
    let mut load = Load::start(&caller, &["web", "api", "retry"]);
    eventually("the retry canary's sidecar registered", async || {
        let q = pilotfish_api::wire::EndpointQuery { service: Some("retry-v2".into()) };
        (!cp.client().endpoints(&q).await.unwrap().items.is_empty()).then_some(())
    })
    .await;
    let seq_before = cp.client().events(&EventsQuery::default()).await.unwrap().head;

    let rollouts = [
        rollout_doc("web", "[{setWeight: 20}, {setWeight: 50}]", "failureLimit: 2"),
        rollout_doc("api", "[{setWeight: 20}, {setWeight: 50}]", "failureLimit: 2"),
        rollout_doc("idle", "[{setWeight: 50}]", "onNoData: pause"),
        rollout_doc("gone", "[{setWeight: 50}]", "onNoData: abort"),
        rollout_doc("retry", "[{setWeight: 20}, {setWeight: 50}]", "failureLimit: 2"),
    ];
    cp.client().apply(&rollouts.join("---\n")).await.unwrap();
    let applied = load.now();

    // Follow the rollouts until each has settled, noting when the weights changed.
    let (mut web, mut api) = (Timeline::new(), Timeline::new());
    let (mut promoted, mut aborted, mut refused) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (w, a) = (status(&cp, "web").await, status(&cp, "api").await);
        let now = load.now();
        if let Some(w) = &w {
            record(&mut web, now, w);
            if w.phase == RolloutPhase::Progressing && w.canary_weight > 0 && refused.is_none() {
                // Under a running rollout, a rollback of its route is refused, saying why.
                refused = Some(tokio::task::block_in_place(|| {
                    cp.cli(&["rollback", "--to", &seq_before.to_string()])
                }));
            }
            if w.phase == RolloutPhase::Promoted && promoted.is_none() {
                promoted = Some(now);
            }
        }
        if let Some(a) = &a {
            record(&mut api, now, a);
            if a.phase == RolloutPhase::Aborted && aborted.is_none() {
                aborted = Some(now);
            }
        }
        let retry_ended = status(&cp, "retry").await.is_some_and(|r| r.phase.is_final());
        if promoted.is_some()
            && retry_ended
            && aborted.is_some_and(|t| now > t + SETTLE + Duration::from_secs(2))
        {
            break;
        }
        assert!(Instant::now() < deadline, "web: {w:?}\napi: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = load.now();
    load_checks(&load, &web, &api, applied, promoted.unwrap(), aborted.unwrap(), end);
    load.stop().await;

    let refused = refused.expect("web was seen progressing");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a rollback under a running rollout went through");
    // (web's route and api's are both under a running rollout; either is named.)
    assert!(stderr.contains("409") && stderr.contains("is being shifted by Rollout default/"), "{stderr}");
    assert!(
        stderr.contains("overwritten by its next step") && stderr.contains("`pilotfish rollout abort "),
        "{stderr}"
    );

    // The healthy canary: every interval a success, each step once, promoted.
    let web = status(&cp, "web").await.unwrap();
    assert_eq!(
        (web.phase, web.stable_weight, web.canary_weight, web.step, web.steps),
        (RolloutPhase::Promoted, 0, 100, 3, 3)
    );
    assert!(web.verdicts.iter().all(|v| v.result == VerdictResult::Success), "{web:?}");
    assert!(web.verdicts.iter().all(|v| v.requests >= 20 && v.success_rate == Some(1.0)), "{web:?}");
    let events = saga_events(&cp, "web").await;
    assert_eq!(steps_taken(&events), [0, 1, 2], "each step once");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "RolloutStarted",
            "RolloutStepStarted",
            "RolloutVerdict",
            "RolloutStepStarted",
            "RolloutVerdict",
            "RolloutStepStarted",
            "RolloutVerdict",
            "RolloutPromoted"
        ]
    );

    // The 20% 5xx canary: two failed intervals, then everything back to stable.
    let api = status(&cp, "api").await.unwrap();
    assert_eq!(
        (api.phase, api.stable_weight, api.canary_weight, api.failures),
        (RolloutPhase::Aborted, 100, 0, 2)
    );
    assert!(api.message.contains("2 failed intervals (failureLimit 2)"), "{api:?}");
    let failed: Vec<_> = api.verdicts.iter().filter(|v| v.result == VerdictResult::Failure).collect();
    assert_eq!(failed.len(), 2, "{api:?}");
    for v in failed {
        let rate = v.success_rate.unwrap();
        assert!((0.7..=0.9).contains(&rate) && v.requests >= 20, "{v:?}");
        assert!(v.reason.contains("under successRate.min 99%"), "{v:?}");
    }
    let events = saga_events(&cp, "api").await;
    let tail: Vec<&str> = events.iter().rev().take(3).map(|e| e.kind.as_str()).collect();
    assert_eq!(tail, ["RolloutCompensated", "RolloutAborted", "RolloutVerdict"], "{events:?}");

    // With retries on, the same failing canary: its callers saw no failure, its own sidecars
    // saw a fifth of its attempts fail, and it was aborted all the same.
    let retry = status(&cp, "retry").await.unwrap();
    assert_eq!(
        (retry.phase, retry.canary_weight, retry.failures),
        (RolloutPhase::Aborted, 0, 2),
        "{retry:?}"
    );
    assert!(retry.verdicts[0].reason.contains("as the canary's sidecars saw it"), "{retry:?}");
    let retried = load.between("retry", applied, end);
    assert!(retried.len() > 500, "{}", retried.len());
    let failed: Vec<_> = retried.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} retried requests failed: {:?}",
        failed.len(),
        retried.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(retried.iter().any(|s| s.backend == "retry-v2"), "the canary served some");

    // No traffic: paused (never promoted), or aborted as onNoData says.
    let idle = status(&cp, "idle").await.unwrap();
    assert_eq!((idle.phase, idle.canary_weight), (RolloutPhase::Paused, 50), "{idle:?}");
    assert!(idle.message.contains("no data"), "{idle:?}");
    assert_eq!(idle.verdicts[0].result, VerdictResult::NoData);
    let gone = status(&cp, "gone").await.unwrap();
    assert_eq!(
        (gone.phase, gone.stable_weight, gone.canary_weight),
        (RolloutPhase::Aborted, 100, 0),
        "{gone:?}"
    );
    assert!(gone.message.contains("onNoData: abort"), "{gone:?}");

    // The CLI: status with the verdicts' numbers, JSON, and an action.
    let text = tokio::task::block_in_place(|| cp.cli_ok(&["rollout", "status", "api"]));
    assert!(text.contains("Phase:    Aborted") && text.contains("api-v1 100%, api-v2 0%"), "{text}");
    assert!(text.contains("failure") && text.contains("under successRate.min"), "{text}");
    let json: Value = serde_json::from_str(&tokio::task::block_in_place(|| {
        cp.cli_ok(&["rollout", "status", "web", "-o", "json"])
    }))
    .unwrap();
    assert_eq!((json["phase"].as_str(), json["canaryWeight"].as_u64()), (Some("Promoted"), Some(100)));
    let out = tokio::task::block_in_place(|| cp.cli_ok(&["rollout", "promote", "idle"]));
    assert!(out.contains("Rollout default/idle promoted: Promoted, idle-v1 0% / idle-v2 100%"), "{out}");
    let again = tokio::task::block_in_place(|| cp.cli(&["rollout", "pause", "idle"]));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is Promoted"), "{again:?}");

    // `history` shows every step, and the route's versions it wrote.
    let history = tokio::task::block_in_place(|| cp.cli_ok(&["history", "--since", &seq_before.to_string()]));
    let web_steps =
        history.lines().filter(|l| l.contains("RolloutStepStarted") && l.contains("RolloutRun/default/web"));
    assert_eq!(web_steps.count(), 3, "{history}");
    let route_writes =
        history.lines().filter(|l| l.contains("HTTPRoute/default/web") && l.contains("rollout default/web"));
    assert_eq!(route_writes.count(), 3, "weights 20, 50 and 100: {history}");
}

/// What the load saw: each of web's weights in its traffic, promotion in the expected time;
/// api's failures only while its canary had traffic, about its share of it, none after.
fn load_checks(
    load: &Load,
    web: &Timeline,
    api: &Timeline,
    applied: Duration,
    promoted: Duration,
    aborted: Duration,
    end: Duration,
) {
    let weights: Vec<u32> = web.iter().map(|(_, w)| *w).collect();
    assert_eq!(weights, [0, 20, 50, 100], "{web:?}");
    assert_shares(load, "web", web, end);
    // Three judged intervals of 5 s (20%, 50%, 100%), plus a tick and a poll.
    let took = promoted - applied;
    println!("web promoted {took:?} after the apply");
    assert!(took >= Duration::from_secs(15) && took <= Duration::from_secs(20), "{took:?}");

    assert_shares(load, "api", api, aborted);
    let before = load.between("api", applied, aborted);
    let failures = before.iter().filter(|s| s.status != 200).count() as f64 / before.len() as f64;
    println!("api: {:.2}% of {} requests failed before the abort", failures * 100.0, before.len());
    // 20% of the 20% that reached the canary: 4%.
    assert!((0.015..=0.07).contains(&failures), "{failures}");
    assert!(
        before.iter().filter(|s| s.status != 200).all(|s| s.backend == "api-v2"),
        "only the canary fails"
    );
    let after = load.between("api", aborted + SETTLE, end);
    assert!(after.len() > 100, "{}", after.len());
    assert!(after.iter().all(|s| s.status == 200 && s.backend == "api-v1"), "traffic back to stable");
}

/// Load through `caller` to web once it routes there, and a two-step rollout applied through
/// `cp`, at its first step (30%).
async fn load_at_first_step(cp: &ControlPlane, caller: &Sidecar) -> Load {
    let url = format!("http://{}/hello", caller.outbound);
    eventually("the caller routes to web", async || {
        (support::curl(&["-H", "Host: web", &url]).await.status == 200).then_some(())
    })
    .await;
    let load = Load::start(caller, &["web"]);
    let doc = rollout_doc("web", "[{setWeight: 30}, {setWeight: 60}]", "onNoData: continue");
    cp.client().apply(&doc).await.unwrap();
    eventually("the first step", async || status(cp, "web").await.filter(|s| s.canary_weight == 30)).await;
    load
}

/// Kills the control plane (SIGKILL) while a rollout is at its first step; the one restarted on
/// the same data directory and address goes on from that step, and no step is taken twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_control_plane_resumes_the_rollout_at_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let mut cp = tokio::task::block_in_place(|| ControlPlane::start_on(dir.path(), &listen));
    let (web_v1, web_v2) = (backend("web-v1").await, backend("web-v2").await);
    cp.client().apply(&mesh_docs("web", web_v1.addr.port(), web_v2.addr.port(), false)).await.unwrap();
    let caller = managed_with_token(&cp, "load", TOKEN, &[]);
    let mut load = load_at_first_step(&cp, &caller).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = saga_events(&cp, "web").await;
    cp.kill();

    let cp = tokio::task::block_in_place(|| ControlPlane::start_on(dir.path(), &listen));
    let resumed = status(&cp, "web").await.expect("the rollout after the restart");
    assert_eq!((resumed.phase, resumed.step, resumed.canary_weight), (RolloutPhase::Progressing, 0, 30));
    let done = eventually("promoted after the restart", async || {
        status(&cp, "web").await.filter(|s| s.phase == RolloutPhase::Promoted)
    })
    .await;
    load.stop().await;
    assert_eq!((done.step, done.canary_weight), (3, 100));
    let events = saga_events(&cp, "web").await;
    assert_eq!(events[..before.len()], before[..], "the log before the kill is kept as it was");
    assert_eq!(steps_taken(&events), [0, 1, 2], "no step twice: {events:?}");
    assert_eq!(events.iter().filter(|e| e.kind == "RolloutStarted").count(), 1, "one run");
}

/// Two replicas on etcd: one drives the rollout (its lock); killed, the other takes the lock
/// and finishes the rollout from the log, no step twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_moves_to_the_other_replica_when_its_driver_dies() {
    let etcd = tokio::task::block_in_place(Etcd::start);
    let mut a = tokio::task::block_in_place(|| ControlPlane::start_etcd(&etcd.url));
    let mut b = tokio::task::block_in_place(|| ControlPlane::start_etcd(&etcd.url));
    let (web_v1, web_v2) = (backend("web-v1").await, backend("web-v2").await);
    a.client().apply(&mesh_docs("web", web_v1.addr.port(), web_v2.addr.port(), false)).await.unwrap();
    let servers = format!("{},{}", a.url(""), b.url(""));
    let caller = managed_at(&servers, "load", TOKEN, &[], &[]);
    let mut load = load_at_first_step(&a, &caller).await;

    let drives = |cp: &ControlPlane| cp.log.lock().unwrap().contains("driving the rollout");
    let (driver, survivor) = match (drives(&a), drives(&b)) {
        (true, false) => (&mut a, &b),
        (false, true) => (&mut b, &a),
        other => panic!("one replica drives the rollout, not {other:?}"),
    };
    let step = status(survivor, "web").await.unwrap().step;
    driver.kill();
    let done = eventually("the survivor promotes it", async || {
        status(survivor, "web").await.filter(|s| s.phase == RolloutPhase::Promoted)
    })
    .await;
    load.stop().await;
    assert!(survivor.log.lock().unwrap().contains("driving the rollout"), "the survivor took it over");
    assert_eq!((done.step, done.canary_weight), (3, 100));
    let events = saga_events(survivor, "web").await;
    assert_eq!(steps_taken(&events), [0, 1, 2], "no step twice (killed at step {step}): {events:?}");
}
