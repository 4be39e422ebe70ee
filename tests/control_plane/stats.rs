//! Mesh telemetry end to end: known traffic through a managed sidecar to a real upstream, and
//! what `/v1/stats`, `pilotfish stat` and `pilotfish edges` make of it; windows, sidecars
//! ageing out, reports that try to speak for another service, and bad windows.

use std::process::Command;
use std::time::Duration;

use pilotfish_api::wire::stats::{latency_bucket, LATENCY_BOUNDS_MS};
use pilotfish_api::wire::{StatsBy, StatsList, StatsQuery, StatsRow};
use serde_json::json;

use crate::managed::{eventually, managed_with_token};
use crate::mesh::{call_until, control_plane, greeter_and_client};
use crate::support::{self, backend};
use crate::{curl, service, table_cells, ControlPlane, TOKEN};

const REQUESTS: usize = 1000;

async fn stats(cp: &ControlPlane, window: &str, by: StatsBy, service: &str) -> StatsList {
    let q = StatsQuery { window: Some(window.into()), by: Some(by), service: Some(service.into()) };
    cp.client().stats(&q).await.unwrap()
}

/// The one row of `service` (by service) or of the edge into it (by edge).
async fn row(cp: &ControlPlane, window: &str, by: StatsBy, service: &str) -> Option<StatsRow> {
    let list = stats(cp, window, by, service).await;
    assert!(list.items.len() <= 1, "{list:?}");
    list.items.into_iter().next()
}

/// Sends `REQUESTS` requests for `users` through `outbound` in one curl (one connection): every
/// tenth answered 500 at once, the rest after 5 ms. Returns each request's status and latency
/// as curl saw it.
fn traffic(outbound: &str) -> Vec<(u16, Duration)> {
    let mut args: Vec<String> =
        ["-s", "-H", "Host: users", "-w", "%{http_code} %{time_total}\n"].map(String::from).to_vec();
    for i in 0..REQUESTS {
        let path = if i % 10 == 9 { "/status/500" } else { "/slow/5" };
        // Each URL's body is discarded on its own: `-o` goes with one URL.
        args.extend(["-o".into(), "/dev/null".into(), format!("http://{outbound}{path}")]);
    }
    let out = Command::new("curl").args(&args).output().unwrap();
    let seen: Vec<(u16, Duration)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (code, secs) = l.split_once(' ').unwrap();
            (code.parse().unwrap(), Duration::from_secs_f64(secs.parse().unwrap()))
        })
        .collect();
    assert_eq!(seen.len(), REQUESTS);
    seen
}

/// The bucket the latency at quantile `q` of `seen` falls in.
fn bucket_at(seen: &[(u16, Duration)], q: f64) -> usize {
    let mut micros: Vec<u64> = seen.iter().map(|(_, d)| d.as_micros() as u64).collect();
    micros.sort_unstable();
    let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
    latency_bucket(micros[rank - 1])
}

/// The bucket of a latency `/v1/stats` reported (a bucket's upper bound).
fn bucket_of(ms: Option<u32>) -> usize {
    LATENCY_BOUNDS_MS.iter().position(|&b| Some(b) == ms).unwrap_or_else(|| panic!("not a bound: {ms:?}"))
}

fn within(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= want * tolerance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_stat_and_edges_agree_with_known_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path()));
    let users = backend("users").await;
    cp.client().apply(&service("users", users.addr.port())).await.unwrap();
    let web = managed_with_token(&cp, "web", TOKEN, &[]);
    let warm_up = format!("http://{}/slow/5", web.outbound);
    eventually("the sidecar routes to users", async || {
        (support::curl(&["-H", "Host: users", &warm_up]).await.status == 200).then_some(())
    })
    .await;

    let seen = tokio::task::block_in_place(|| traffic(&web.outbound.to_string()));
    // The warm-up's one success counts too.
    let sent = (REQUESTS + 1) as f64;
    let succeeded = seen.iter().filter(|(code, _)| *code == 200).count() as f64 + 1.0;
    assert_eq!(seen.iter().filter(|(code, _)| *code == 500).count(), REQUESTS / 10);

    let svc = eventually("a report with every request arrived", async || {
        row(&cp, "1m", StatsBy::Service, "users").await.filter(|r| r.golden.requests as f64 >= sent * 0.98)
    })
    .await;
    let g = &svc.golden;
    assert!(within(g.requests as f64, sent, 0.02), "{svc:?}");
    assert!(within(g.successes as f64, succeeded, 0.02), "{svc:?}");
    assert!(within(g.success_rate.unwrap(), succeeded / sent, 0.02), "{svc:?}");
    assert!(within(g.rps, sent / 60.0, 0.02), "{svc:?}");
    for (q, got) in [(0.5, g.p50_ms), (0.95, g.p95_ms), (0.99, g.p99_ms)] {
        let (want, got) = (bucket_at(&seen, q), bucket_of(got));
        assert!(want.abs_diff(got) <= 1, "p{q}: bucket {got}, curl saw bucket {want}: {svc:?}");
    }
    assert_eq!(svc.service.as_deref(), Some("users.default"));

    let edge = row(&cp, "1m", StatsBy::Edge, "users").await.expect("the edge web → users");
    assert_eq!((edge.src.as_deref(), edge.dst.as_deref()), (Some("web.default"), Some("users.default")));
    assert_eq!(edge.secured, Some(false), "users has no sidecar");
    assert_eq!((edge.golden.requests, edge.golden.successes), (g.requests, g.successes));
    let meshed = row(&cp, "1m", StatsBy::Service, "web").await.and_then(|r| r.meshed);
    assert_eq!(meshed.map(|m| (m.current, m.total)), Some((1, 1)), "web's sidecar reports");
    let routes = stats(&cp, "1m", StatsBy::Route, "users").await;
    assert_eq!(routes.items.iter().map(|r| r.golden.requests).sum::<u64>(), g.requests);

    // The CLI prints the same numbers.
    let table = table_cells(&tokio::task::block_in_place(|| cp.cli_ok(&["stat", "users", "--window", "1m"])));
    assert_eq!(table[0], ["SERVICE", "MESHED", "SUCCESS", "RPS", "P50", "P95", "P99", "TCP_CONN"]);
    let rate = format!("{:.2}%", g.success_rate.unwrap() * 100.0);
    let (p50, p99) = (format!("{}ms", g.p50_ms.unwrap()), format!("{}ms", g.p99_ms.unwrap()));
    assert_eq!(table[1][0], "users.default");
    assert_eq!([&table[1][2], &table[1][4], &table[1][6], &table[1][7]], [&rate, &p50, &p99, "0"]);
    let table = table_cells(&tokio::task::block_in_place(|| cp.cli_ok(&["edges", "users"])));
    assert_eq!(table[0], ["SRC", "DST", "CLIENT_ID", "SERVER_ID", "SECURED", "RPS", "SUCCESS", "P99"]);
    assert_eq!(table[1][..5], ["web.default", "users.default", "-", "-", "no"]);
    assert_eq!([&table[1][6], &table[1][7]], [&rate, &p99]);
    let json: serde_json::Value =
        serde_json::from_str(&tokio::task::block_in_place(|| cp.cli_ok(&["stat", "users", "-o", "json"])))
            .unwrap();
    assert_eq!(json[0]["requests"], g.requests);

    // Five seconds later the traffic is out of a 5 s window, still in the minute.
    eventually("the traffic leaves the 5 s window", async || {
        let requests = row(&cp, "5s", StatsBy::Service, "users").await.map_or(0, |r| r.golden.requests);
        (requests == 0).then_some(())
    })
    .await;
    assert_eq!(row(&cp, "1m", StatsBy::Service, "users").await.unwrap().golden.requests, g.requests);

    // A sidecar that stops reporting is no longer current, though the window still counts it.
    drop(web);
    let meshed = eventually("web's sidecar ages out", async || {
        row(&cp, "1m", StatsBy::Service, "web").await.and_then(|r| r.meshed).filter(|m| m.current == 0)
    })
    .await;
    assert_eq!(meshed.total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_speaks_only_for_its_own_service_and_bad_windows_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path()));
    let token = tokio::task::block_in_place(|| cp.cli_ok(&["token", "create", "--service", "a"]));
    let auth = format!("Authorization: Bearer {}", token.trim());
    let report = json!({
        "edges": [{ "direction": "outbound", "peer": { "service": "db" }, "requests": 7, "successes": 7 }]
    })
    .to_string();
    let post = |path: &str, body: &str| {
        let url = cp.url(path);
        curl(&["-X", "POST", "-H", &auth, "-H", "Content-Type: application/json", "-d", body, &url])
    };
    // Claiming service b with a's token: refused.
    let (status, body) = post("/v1/proxies/a-1/stats?service=b", &report);
    assert_eq!(status, 403, "{body}");
    // Claiming b's identity: refused.
    let claims_b = json!({ "identity": "spiffe://pilotfish.local/ns/default/sa/b", "edges": [] }).to_string();
    let (status, body) = post("/v1/proxies/a-1/stats", &claims_b);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("sa/a"), "{body}");
    // Its own report counts as a's, whatever it names.
    let (status, body) = post("/v1/proxies/a-1/stats", &report);
    assert_eq!(status, 204, "{body}");
    let edges = stats(&cp, "1m", StatsBy::Edge, "db").await.items;
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!((edges[0].src.as_deref(), edges[0].golden.requests), (Some("a.default"), 7));
    // A join token cannot read the mesh's stats.
    let (status, _) = curl(&["-H", &auth, &cp.url("/v1/stats")]);
    assert_eq!(status, 401);

    let admin = format!("Authorization: Bearer {TOKEN}");
    for bad in ["window=4s", "window=2h", "window=1500ms", "window=soon", "by=pod"] {
        let (status, body) = curl(&["-H", &admin, &cp.url(&format!("/v1/stats?{bad}"))]);
        assert_eq!(status, 400, "{bad}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(if bad.starts_with("by") { "by" } else { "from 5s to 1h" }), "{bad}: {error}");
    }
    let out = tokio::task::block_in_place(|| cp.cli(&["stat", "--window", "2h"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("from 5s to 1h"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meshed_edge_is_secured_and_names_both_identities() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &[]);
    let (_app, _greeter, client) = greeter_and_client(&cp, &[]).await;
    call_until(&client, "greeter", 200, &[]).await;
    let edge = eventually("the client's report of its calls to greeter", async || {
        row(&cp, "1m", StatsBy::Edge, "greeter").await.filter(|r| r.golden.successes > 0)
    })
    .await;
    assert_eq!((edge.src.as_deref(), edge.dst.as_deref()), (Some("client.default"), Some("greeter.default")));
    assert_eq!(edge.secured, Some(true), "{edge:?}");
    let id = |sa: &str| Some(format!("spiffe://pilotfish.local/ns/default/sa/{sa}"));
    assert_eq!((edge.src_identity, edge.dst_identity), (id("client"), id("greeter")));
    let table = table_cells(&tokio::task::block_in_place(|| cp.cli_ok(&["edges", "greeter"])));
    assert_eq!(table[1][2..5], [id("client").unwrap(), id("greeter").unwrap(), "yes".into()]);
}
