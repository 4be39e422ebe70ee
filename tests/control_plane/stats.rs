//! Mesh telemetry end to end: known traffic across a local mesh (a client's sidecar, greeter's
//! sidecar and app) and what `/v1/stats`, `pilotfish stat`, `pilotfish edges` and
//! `pilotfish routes` make of it on both sides; gRPC calls whose status comes in the trailers;
//! opaque TCP bytes; an ejected endpoint as a breaker open; windows, sidecars ageing out,
//! reports that try to speak for another service, and bad windows.

use std::process::Command;
use std::time::Duration;

use pilotfish_api::wire::stats::{latency_bucket, LATENCY_BOUNDS_MS};
use pilotfish_api::wire::{StatsBy, StatsList, StatsQuery, StatsRow, StatsSide};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::managed::{eventually, managed_with_token};
use crate::mesh::{control_plane, greeter_and_client};
use crate::support::{self, backend, App, Sidecar};
use crate::{curl, table_cells, ControlPlane, TOKEN};

const REQUESTS: usize = 1000;

async fn stats_from(
    cp: &ControlPlane,
    window: &str,
    side: StatsSide,
    by: StatsBy,
    service: &str,
) -> StatsList {
    let q = StatsQuery {
        window: Some(window.into()),
        by: Some(by),
        service: Some(service.into()),
        side: Some(side),
    };
    cp.client().stats(&q).await.unwrap()
}

async fn stats(cp: &ControlPlane, window: &str, by: StatsBy, service: &str) -> StatsList {
    stats_from(cp, window, StatsSide::Client, by, service).await
}

/// The one row of `service` (by service) or of the edge into it (by edge).
async fn row(cp: &ControlPlane, window: &str, by: StatsBy, service: &str) -> Option<StatsRow> {
    side_row(cp, window, StatsSide::Client, by, service).await
}

async fn side_row(
    cp: &ControlPlane,
    window: &str,
    side: StatsSide,
    by: StatsBy,
    service: &str,
) -> Option<StatsRow> {
    let list = stats_from(cp, window, side, by, service).await;
    assert!(list.items.len() <= 1, "{list:?}");
    list.items.into_iter().next()
}

/// Sends `REQUESTS` requests for `service` through `outbound` in one curl (one connection):
/// every tenth answered 500 by the app at once, the rest after 5 ms. Returns each request's
/// status and latency as curl saw it.
fn traffic(outbound: &str, service: &str) -> Vec<(u16, Duration)> {
    let host = format!("Host: {service}");
    let mut args: Vec<String> =
        ["-s", "-H", &host, "-w", "%{http_code} %{time_total}\n"].map(String::from).to_vec();
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

/// Asserts that a row's counts are the known traffic's within 2%, and its latency quantiles
/// within one bucket of what curl saw.
fn agrees(row: &Value, seen: &[(u16, Duration)], what: &str) {
    let sent = seen.len() as f64;
    let succeeded = seen.iter().filter(|(code, _)| *code == 200).count() as f64;
    let number = |field: &str| row[field].as_f64().unwrap_or_else(|| panic!("{what}: no {field}: {row}"));
    assert!(within(number("requests"), sent, 0.02), "{what}: {row}");
    assert!(within(number("successes"), succeeded, 0.02), "{what}: {row}");
    assert!(within(number("successRate"), succeeded / sent, 0.02), "{what}: {row}");
    assert!(within(number("rps"), sent / 60.0, 0.02), "{what}: {row}");
    for (q, field) in [(0.5, "p50Ms"), (0.95, "p95Ms"), (0.99, "p99Ms")] {
        let (want, got) = (bucket_at(seen, q), bucket_of(Some(number(field) as u32)));
        assert!(want.abs_diff(got) <= 1, "{what} p{q}: bucket {got}, curl saw bucket {want}: {row}");
    }
}

/// The rows `pilotfish ARGS -o json` prints.
fn cli_rows(cp: &ControlPlane, args: &[&str]) -> Vec<Value> {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let out = tokio::task::block_in_place(|| cp.cli_ok(&args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pilotfish {args:?}: {e}: {out}"))
}

/// Until `sidecar`'s configuration in force holds every one of `needles`.
async fn configured(sidecar: &Sidecar, needles: &[&str]) {
    eventually("the sidecar's configuration has what the test needs", async || {
        let config = String::from_utf8_lossy(&sidecar.admin_get("/config").await.body).into_owned();
        needles.iter().all(|n| config.contains(n)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_stat_edges_and_routes_agree_with_known_traffic_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &[]);
    let (_app, greeter, client) = greeter_and_client(&cp, &[]).await;
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: greeter}\nspec:\n  parentRefs: [{name: greeter}]\n  rules:\n  - timeouts: {request: 5s}\n";
    cp.client().apply(route).await.unwrap();
    // No warm-up request (it would count): the client's sidecar knows greeter's endpoint and
    // route, and both sidecars hold their identities (ready).
    configured(&client, &[&greeter.inbound.unwrap().to_string(), "HTTPRoute"]).await;
    for sidecar in [&greeter, &client] {
        eventually("the sidecar is ready", async || {
            (sidecar.admin_get("/ready").await.status == 200).then_some(())
        })
        .await;
    }

    let seen = tokio::task::block_in_place(|| traffic(&client.outbound.to_string(), "greeter"));
    assert_eq!(seen.iter().filter(|(code, _)| *code == 500).count(), REQUESTS / 10);
    let sent = REQUESTS as f64;
    for side in [StatsSide::Client, StatsSide::Server] {
        eventually("reports with every request arrived", async || {
            side_row(&cp, "1m", side, StatsBy::Service, "greeter")
                .await
                .filter(|r| r.golden.requests as f64 >= sent * 0.98)
        })
        .await;
    }
    // One more report period: whatever was still in flight has arrived; nothing more comes.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    for side in ["client", "server"] {
        let api = |by: StatsBy| {
            let side = if side == "client" { StatsSide::Client } else { StatsSide::Server };
            let cp = &cp;
            async move { serde_json::to_value(stats_from(cp, "1m", side, by, "greeter").await.items).unwrap() }
        };
        // Per service.
        let rows = api(StatsBy::Service).await;
        let svc =
            rows.as_array().unwrap().iter().find(|r| r["service"] == "greeter.default").unwrap().clone();
        agrees(&svc, &seen, &format!("{side} side, by service"));
        assert_eq!(svc["meshed"], json!({"current": 1, "total": 1}), "{svc}");
        assert_eq!(svc["breakersOpen"], 0, "{svc}");
        let stat = cli_rows(&cp, &["stat", "greeter", "--side", side]);
        assert_eq!(stat, rows.as_array().unwrap().clone(), "pilotfish stat --side {side}");
        // Per edge.
        let rows = api(StatsBy::Edge).await;
        let [edge] = rows.as_array().unwrap().as_slice() else { panic!("one edge into greeter: {rows}") };
        agrees(edge, &seen, &format!("{side} side, by edge"));
        let id = |sa: &str| format!("spiffe://pilotfish.local/ns/default/sa/{sa}");
        assert_eq!(
            (&edge["src"], &edge["dst"], &edge["srcIdentity"], &edge["dstIdentity"], &edge["secured"]),
            (
                &json!("client.default"),
                &json!("greeter.default"),
                &json!(id("client")),
                &json!(id("greeter")),
                &json!(true)
            ),
            "{side}: {edge}"
        );
        let edges = cli_rows(&cp, &["edges", "greeter", "--side", side]);
        assert_eq!(edges, rows.as_array().unwrap().clone(), "pilotfish edges --side {side}");
        // Per route: the client side knows the HTTPRoute; the server side knows none.
        let rows = api(StatsBy::Route).await;
        let [route] = rows.as_array().unwrap().as_slice() else { panic!("one route into greeter: {rows}") };
        agrees(route, &seen, &format!("{side} side, by route"));
        let name = if side == "client" { "default/greeter" } else { "" };
        assert_eq!(
            (&route["service"], &route["route"]),
            (&json!("greeter.default"), &json!(name)),
            "{route}"
        );
        let routes = cli_rows(&cp, &["routes", "greeter", "--side", side]);
        assert_eq!(routes, rows.as_array().unwrap().clone(), "pilotfish routes --side {side}");
    }

    // The tables print the same numbers.
    let g = row(&cp, "1m", StatsBy::Service, "greeter").await.unwrap().golden;
    let rate = format!("{:.2}%", g.success_rate.unwrap() * 100.0);
    let (p50, p99) = (format!("{}ms", g.p50_ms.unwrap()), format!("{}ms", g.p99_ms.unwrap()));
    let table =
        table_cells(&tokio::task::block_in_place(|| cp.cli_ok(&["stat", "greeter", "--window", "1m"])));
    assert_eq!(
        table[0],
        ["SERVICE", "MESHED", "SUCCESS", "RPS", "P50", "P95", "P99", "TCP_CONN", "BREAKERS_OPEN"]
    );
    assert_eq!(table[1][0], "greeter.default");
    assert_eq!(
        [&table[1][2], &table[1][4], &table[1][6], &table[1][7], &table[1][8]],
        [&rate, &p50, &p99, "0", "0"]
    );
    let table = table_cells(&tokio::task::block_in_place(|| cp.cli_ok(&["edges", "greeter"])));
    assert_eq!(table[0], ["SRC", "DST", "CLIENT_ID", "SERVER_ID", "SECURED", "RPS", "SUCCESS", "P99"]);
    assert_eq!(table[1][..2], ["client.default", "greeter.default"]);
    assert_eq!([&table[1][4], &table[1][6], &table[1][7]], ["yes", &rate, &p99]);
    let table = table_cells(&tokio::task::block_in_place(|| cp.cli_ok(&["routes", "greeter"])));
    assert_eq!(table[0], ["ROUTE", "SERVICE", "SUCCESS", "RPS", "P50", "P95", "P99"]);
    assert_eq!(
        [&table[1][0], &table[1][1], &table[1][2], &table[1][4]],
        ["default/greeter", "greeter.default", &rate, &p50]
    );
    let table =
        table_cells(&tokio::task::block_in_place(|| cp.cli_ok(&["routes", "greeter", "--side", "server"])));
    assert_eq!(table[1][0], "[default]");

    // Five seconds later the traffic is out of a 5 s window, still in the minute.
    eventually("the traffic leaves the 5 s window", async || {
        let requests = row(&cp, "5s", StatsBy::Service, "greeter").await.map_or(0, |r| r.golden.requests);
        (requests == 0).then_some(())
    })
    .await;
    assert_eq!(row(&cp, "1m", StatsBy::Service, "greeter").await.unwrap().golden.requests, g.requests);

    // A sidecar that stops reporting is no longer current, though the window still counts it.
    drop(client);
    let meshed = eventually("client's sidecar ages out", async || {
        row(&cp, "1m", StatsBy::Service, "client").await.and_then(|r| r.meshed).filter(|m| m.current == 0)
    })
    .await;
    assert_eq!(meshed.total, 1);
}

/// greeter's app is a gRPC server whose answers carry their status in the trailers, after the
/// response headers: half the calls fail there, the other half succeed 250 ms after their
/// headers. Both sides count the failures, and the latency of the calls to their end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_failing_in_their_trailers_are_failures_timed_to_their_end() {
    const CALLS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &[]);
    let app = App::python_with("grpc_server.py", &["--fail-in-trailers"]);
    let app_addr = app.addr().to_string();
    let token = |service: &str| {
        let token = tokio::task::block_in_place(|| cp.cli_ok(&["token", "create", "--service", service]));
        token.trim().to_owned()
    };
    let greeter_args = ["--app", &app_addr, "--inbound", "127.0.0.1:0", "--lease-ttl", "120s"];
    let greeter = managed_with_token(&cp, "greeter", &token("greeter"), &greeter_args);
    let client = managed_with_token(&cp, "client", &token("client"), &[]);
    configured(&client, &[&greeter.inbound.unwrap().to_string()]).await;
    for sidecar in [&greeter, &client] {
        eventually("the sidecar is ready", async || {
            (sidecar.admin_get("/ready").await.status == 200).then_some(())
        })
        .await;
    }
    let target = client.outbound.to_string();
    support::run_python("grpc_client.py", &[&target, "greeter", "--mix", &CALLS.to_string()]).await;

    for side in [StatsSide::Client, StatsSide::Server] {
        let svc = eventually("the calls are reported", async || {
            side_row(&cp, "1m", side, StatsBy::Service, "greeter")
                .await
                .filter(|r| r.golden.requests >= CALLS)
        })
        .await;
        let g = &svc.golden;
        assert_eq!((g.requests, g.successes), (CALLS, CALLS / 2), "{side:?}: {svc:?}");
        // The slow half took 250 ms from their headers to their trailers: the p99 is theirs.
        assert!(matches!(g.p99_ms, Some(300 | 500)), "{side:?}: {svc:?}");
        assert!(g.p50_ms.unwrap() < 200, "the failures are fast: {side:?}: {svc:?}");
    }
}

/// A client's sidecar calls `db` over opaque TCP (its local port) and `flaky`, one of whose two
/// endpoints answers 500: the TCP edge counts the bytes exactly, and once the failing
/// endpoint's breaker opens (5 failures in a row) `flaky` shows a breaker open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bytes_are_exact_and_an_ejected_endpoint_is_a_breaker_open() {
    let dir = tempfile::tempdir().unwrap();
    let cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path()));
    // db answers "ok:" and the bytes it got, once the client has sent them all.
    let db = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let db_addr = db.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = db.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                conn.read_to_end(&mut got).await.unwrap();
                conn.write_all(b"ok:").await.unwrap();
                conn.write_all(&got).await.unwrap();
            });
        }
    });
    let local = support::free_port();
    let db_doc = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: db}}\nspec:\n  ports: [{{port: 5432, protocol: tcp}}]\n  localPort: {local}\n  endpoints: [{{address: {db_addr}}}]\n"
    );
    cp.client().apply(&db_doc).await.unwrap();
    let (good, bad) = (backend("flaky-good").await, backend("flaky-bad").await);
    bad.fail_with(500);
    let flaky = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: flaky}}\nspec:\n  ports: [{{port: 80, protocol: http}}]\n  endpoints: [{{address: {}}}, {{address: {}}}]\n",
        good.addr, bad.addr
    );
    cp.client().apply(&flaky).await.unwrap();
    // Round-robin, so the bad endpoint gets every other request (the default balancer soon
    // learns to avoid it).
    let policy = "apiVersion: pilotfish.io/v1alpha1\nkind: BackendPolicy\nmetadata: {name: flaky}\nspec:\n  targetRef: {kind: Service, name: flaky}\n  loadBalancer: round-robin\n";
    cp.client().apply(policy).await.unwrap();
    let web = managed_with_token(&cp, "web", TOKEN, &[]);
    configured(&web, &[&db_addr.to_string(), &bad.addr.to_string(), "round-robin"]).await;

    // Three connections, each sending 1000 bytes and getting 1003 back.
    let mut sent = 0;
    for _ in 0..3 {
        let mut conn = eventually("db's local port is open", async || {
            tokio::net::TcpStream::connect(("127.0.0.1", local)).await.ok()
        })
        .await;
        conn.write_all(&[7u8; 1000]).await.unwrap();
        conn.shutdown().await.unwrap();
        let mut back = Vec::new();
        conn.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), 1003);
        sent += 1;
    }
    let tcp = eventually("the connections are reported", async || {
        row(&cp, "1m", StatsBy::Service, "db").await.filter(|r| r.golden.tcp_opened >= sent)
    })
    .await;
    let g = &tcp.golden;
    assert_eq!((g.tcp_opened, g.tcp_open, g.bytes_sent, g.bytes_received), (3, 0, 3000, 3009), "{tcp:?}");
    let edge = row(&cp, "1m", StatsBy::Edge, "db").await.unwrap();
    assert_eq!((edge.src.as_deref(), edge.secured), (Some("web.default"), Some(false)), "db has no sidecar");
    assert_eq!((edge.golden.bytes_sent, edge.golden.bytes_received), (3000, 3009));

    // flaky's bad endpoint fails five times in a row (of 20 requests, half its share).
    let url = format!("http://{}/", web.outbound);
    support::curl_many(20, 1, &["-H", "Host: flaky"], &url).await;
    let row_of_flaky = eventually("flaky shows a breaker open", async || {
        row(&cp, "1m", StatsBy::Service, "flaky").await.filter(|r| r.breakers_open >= 1)
    })
    .await;
    assert_eq!(row_of_flaky.breakers_open, 1, "a lone bad endpoint of two");
    let edge = row(&cp, "1m", StatsBy::Edge, "flaky").await.unwrap();
    assert_eq!(edge.breakers_open, 1, "{edge:?}");
    let table = table_cells(&tokio::task::block_in_place(|| cp.cli_ok(&["stat", "flaky"])));
    assert_eq!(table[1][8], "1", "{table:?}");
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
