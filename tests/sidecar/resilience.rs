//! Resilience end to end: retries and their budget, circuit breakers, timeouts, traffic split,
//! header routing, rate limits, P2C-EWMA balancing and gRPC retries — against real backends
//! that fail, stall and die on demand.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;

fn route_doc(name: &str, parent: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{kind: Service, name: {parent}}}]\n  rules:\n{rules}"
    )
}

fn backend_policy(service: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: pilotfish.io/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {service}}}\nspec:\n  targetRef: {{kind: Service, name: {service}}}\n{spec}"
    )
}

fn count(codes: &[u16]) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for c in codes {
        *m.entry(*c).or_default() += 1;
    }
    m
}

/// A sidecar whose `users` service has these endpoints, one localPort, and `extra` documents.
fn users_mesh(endpoints: &[SocketAddr], extra: &str) -> (Sidecar, String) {
    let port = free_port();
    let config = format!(
        "{}{}{extra}",
        sidecar_doc(None, ""),
        service_doc(
            "users",
            endpoints,
            &format!("  ports: [{{port: 80, protocol: http}}]\n  localPort: {port}\n")
        )
    );
    (Sidecar::start(&config), format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_failing_endpoint_whose_breaker_opens_then_closes() {
    let (a, b, bad) = (backend("a").await, backend("b").await, backend("bad").await);
    bad.fail_with(503);
    let extra = format!(
        "{}{}",
        route_doc("users", "users", "  - retry: {attempts: 3, backoff: 5ms, codes: [503]}\n"),
        backend_policy(
            "users",
            "  circuitBreaker: {consecutiveFailures: 5, baseEjectionTime: 2s, maxEjectionTime: 10s}\n"
        ),
    );
    let (sc, url) = users_mesh(&[a.addr, b.addr, bad.addr], &extra);

    let codes = curl_many(1000, 10, &[], &format!("{url}/get")).await;
    assert_eq!(count(&codes), BTreeMap::from([(200, 1000)]), "clients saw failures");
    let bad_label = bad.addr.to_string();
    let bad_circuit = [("service", "users.default"), ("endpoint", bad_label.as_str())];
    let m = sc.metrics().await;
    assert!(
        sample(&m, "pilotfish_circuit_transitions_total", &[("endpoint", &bad_label), ("to", "open")]) >= 1.0
    );
    assert!(
        sample(&m, "pilotfish_retries_total", &[("service", "users.default"), ("reason", "status")]) >= 5.0
    );
    let share = bad.served() as f64 / (a.served() + b.served() + bad.served()) as f64;
    println!(
        "bad endpoint share with its breaker: {:.1}% ({} of {})",
        share * 100.0,
        bad.served(),
        a.served() + b.served() + bad.served()
    );
    assert!(share < 0.05, "the ejected endpoint kept getting traffic: {share}");

    // It recovers: after the ejection time a probe gets through and closes the breaker.
    bad.fail_with(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sample(&sc.metrics().await, "pilotfish_circuit_state", &bad_circuit) != 0.0 {
        assert!(std::time::Instant::now() < deadline, "the breaker never closed");
        curl_many(20, 1, &[], &format!("{url}/get")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_is_invisible_to_idempotent_requests_but_post_is_not_retried() {
    let (a, b, doomed) = (backend("a").await, backend("b").await, backend("doomed").await);
    let extra = route_doc("users", "users", "  - retry: {attempts: 3, backoff: 5ms}\n");
    let (sc, url) = users_mesh(&[a.addr, b.addr, doomed.addr], &extra);
    for s in [&a, &b, &doomed] {
        s.delay(100); // 1,000 requests, 10 at a time, take ~10 s
    }
    let load = tokio::spawn({
        let url = format!("{url}/get");
        async move { curl_many(1000, 10, &[], &url).await }
    });
    while doomed.served() < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill();
    let codes = load.await.unwrap();
    assert_eq!(count(&codes), BTreeMap::from([(200, 1000)]), "a client saw the endpoint die");

    // A POST without an Idempotency-Key is sent once, even though it fails.
    let (x, y) = (backend("x").await, backend("y").await);
    x.fail_with(503);
    y.fail_with(503);
    drop(sc);
    let (_sc, url) = users_mesh(
        &[x.addr, y.addr],
        &route_doc("users", "users", "  - retry: {attempts: 3, backoff: 5ms, codes: [503]}\n"),
    );
    let r = curl(&["-X", "POST", "-d", "order=1", &format!("{url}/orders")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(x.served() + y.served(), 1, "a POST was retried");
    let r =
        curl(&["-X", "POST", "-H", "Idempotency-Key: k1", "-d", "order=1", &format!("{url}/orders")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(x.served() + y.served(), 5, "a keyed POST gets its 3 retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_attempts_when_everything_fails() {
    let dead = backend("dead").await;
    dead.fail_with(503);
    let extra = format!(
        "{}{}",
        route_doc("users", "users", "  - retry: {attempts: 3, backoff: 1ms, codes: [503]}\n"),
        backend_policy("users", "  retryBudget: {ratio: 0.2, minPerSecond: 10}\n"),
    );
    let (sc, url) = users_mesh(&[dead.addr], &extra);
    let n = 500;
    let started = std::time::Instant::now();
    let codes = curl_many(n, 10, &[], &format!("{url}/get")).await;
    assert_eq!(count(&codes), BTreeMap::from([(503, n)]));
    // Without a budget: 4 attempts each. With it: 20% of requests, plus the floor of
    // minPerSecond over the budget's 10 s window (or over the run, if it took longer).
    let attempts = dead.served();
    let window = started.elapsed().as_secs().max(10) as usize + 1;
    let bound = (n as f64 * 1.2) as usize + 10 * window;
    println!("{n} requests → {attempts} upstream attempts (bound {bound}, unbudgeted {})", n * 4);
    assert!(attempts <= bound, "{attempts} attempts for {n} requests");
    assert!(attempts > n, "no retries at all");
    let m = sc.metrics().await;
    assert!(sample(&m, "pilotfish_retry_budget_exhausted_total", &[("service", "users.default")]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_and_header_match_route_a_canary() {
    let (stable, canary) = (backend("stable").await, backend("canary").await);
    let port = free_port();
    let config = format!(
        "{}{}{}{}{}",
        sidecar_doc(None, ""),
        service_doc("web", &[], &format!("  localPort: {port}\n")),
        service_doc("web-stable", &[stable.addr], ""),
        service_doc("web-canary", &[canary.addr], ""),
        route_doc(
            "web",
            "web",
            concat!(
                "  - matches: [{headers: [{name: x-canary, value: always}]}]\n    backendRefs: [{name: web-canary}]\n",
                "  - backendRefs: [{name: web-stable, weight: 90}, {name: web-canary, weight: 10}]\n"
            )
        ),
    );
    let _sc = Sidecar::start(&config);
    let out = tokio::process::Command::new("h2load")
        .args(["-n", "10000", "-c", "4", "-m", "10", &format!("http://127.0.0.1:{port}/split")])
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10000 succeeded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let share = canary.served() as f64 / 10_000.0;
    println!("canary share over 10,000 requests: {:.2}%", share * 100.0);
    assert!((0.08..=0.12).contains(&share), "canary got {share}");

    let before = canary.served();
    let codes =
        curl_many(20, 1, &["-H", "x-canary: always"], &format!("http://127.0.0.1:{port}/pinned")).await;
    assert_eq!(count(&codes), BTreeMap::from([(200, 20)]));
    assert_eq!(canary.served() - before, 20, "the header match did not pin requests to the canary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_gateway_example_allows_exactly_100_per_minute() {
    let (a, b) = (backend("a").await, backend("b").await);
    let port = free_port();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/api-gateway.yaml")).unwrap();
    let config = example
        .replace("127.0.0.1:15000", "127.0.0.1:0")
        .replace("127.0.0.1:15001", "127.0.0.1:0")
        .replace("127.0.0.1:9001", &a.addr.to_string())
        .replace("127.0.0.1:9002", &b.addr.to_string())
        .replace("localPort: 18080", &format!("localPort: {port}"));
    let sc = Sidecar::start(&config);
    let url = format!("http://127.0.0.1:{port}/api/users");
    // A sliding minute: however quickly or slowly the 120 go (within the minute), exactly the
    // first 100 pass.
    let started = std::time::Instant::now();
    let codes = curl_many(120, 1, &[], &url).await;
    assert!(
        started.elapsed() < Duration::from_secs(55),
        "too slow to test a minute: {:?}",
        started.elapsed()
    );
    assert_eq!(codes[..100], [200; 100], "{codes:?}");
    assert_eq!(codes[100..], [429; 20], "{codes:?}");
    assert_eq!(a.served() + b.served(), 100);
    let r = curl(&["-X", "PUT", &url]).await;
    assert_eq!(r.status, 429, "the limit covers every method of the route");
    assert_eq!(r.header("pilotfish-error"), Some("rate-limited"));
    // The first 100 stop counting 60 to 64 s after they were admitted.
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    let elapsed = started.elapsed().as_secs();
    assert!((60 - elapsed - 1..=64).contains(&retry_after), "Retry-After: {retry_after} after {elapsed}s");
    assert_eq!(r.header("ratelimit-reset"), r.header("retry-after"), "both say when the next one passes");
    assert_eq!(r.header("ratelimit-limit"), Some("100"));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    let m = sc.metrics().await;
    assert!(sample(&m, "pilotfish_ratelimited_total", &[("route", "default/user-service")]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_count_down() {
    let a = backend("a").await;
    let extra = "---\napiVersion: pilotfish.io/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: users}\nspec:\n  targetRef: {kind: Service, name: users}\n  perMinute: 5\n  key: {header: x-api-key}\n";
    let (_sc, url) = users_mesh(&[a.addr], extra);
    for remaining in (0..5).rev() {
        let r = curl(&["-H", "x-api-key: alice", &url]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-limit"), Some("5"));
        assert_eq!(r.header("ratelimit-remaining"), Some(remaining.to_string().as_str()));
        assert!(r.header("ratelimit-reset").is_some());
    }
    assert_eq!(curl(&["-H", "x-api-key: alice", &url]).await.status, 429);
    assert_eq!(curl(&["-H", "x-api-key: bob", &url]).await.status, 200, "keys have their own budgets");
}

/// The sidecar's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends one request per key in `keys`, each with a distinct 8 KiB `x-api-key`, on one
/// keep-alive connection; the statuses.
async fn send_long_keys(addr: SocketAddr, keys: std::ops::Range<u32>) -> Vec<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut key = vec![b'k'; 8 * 1024];
    let mut codes = Vec::with_capacity(keys.len());
    for i in keys {
        key[..8].copy_from_slice(format!("{i:08x}").as_bytes());
        let req = http::Request::get("/get")
            .header("host", "users")
            .header("x-api-key", http::HeaderValue::from_bytes(&key).unwrap())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.ready().await.unwrap();
        let res = sender.send_request(req).await.unwrap();
        codes.push(res.status().as_u16());
        http_body_util::BodyExt::collect(res.into_body()).await.unwrap();
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_keys_cost_a_fixed_size_whatever_their_length() {
    let a = backend("a").await;
    let extra = "---\napiVersion: pilotfish.io/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: users}\nspec:\n  targetRef: {kind: Service, name: users}\n  perMinute: 1\n  key: {header: x-api-key}\n";
    let (sc, url) = users_mesh(&[a.addr], extra);
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    // Warm the sidecar's buffers and pools first, so that what grows afterwards is key state.
    assert!(send_long_keys(addr, 0..2_000).await.iter().all(|c| *c == 200));
    let before = rss_kib(sc.pid());
    let started = std::time::Instant::now();
    let mut batches = tokio::task::JoinSet::new();
    for i in 0..4u32 {
        batches.spawn(send_long_keys(addr, 2_000 + i * 10_000..2_000 + (i + 1) * 10_000));
    }
    let codes: Vec<u16> = batches.join_all().await.into_iter().flatten().collect();
    let after = rss_kib(sc.pid());
    println!(
        "sidecar RSS {before} KiB before and {after} KiB after 40,000 distinct 8 KiB keys (+{} KiB) in {:?}",
        after.saturating_sub(before),
        started.elapsed()
    );
    assert_eq!(count(&codes), BTreeMap::from([(200, 40_000)]), "each key has a budget of its own");
    // Raw keys would be 40,000 × 8 KiB = 320 MiB; digests and two rings are about 200 bytes each.
    assert!(after.saturating_sub(before) < 48 * 1024, "RSS grew from {before} to {after} KiB");
    // And each key is still limited: the first one again is refused.
    assert_eq!(send_long_keys(addr, 0..1).await, [429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_answer_504_and_a_per_try_timeout_retries_elsewhere() {
    let (slow, fast) = (backend("slow").await, backend("fast").await);
    slow.delay(3000);
    // Round-robin, so the slow endpoint keeps being tried (P2C would learn to avoid it).
    let extra = format!(
        "{}{}",
        route_doc(
            "users",
            "users",
            concat!(
                "  - matches: [{path: {type: PathPrefix, value: /whole}}]\n    timeouts: {request: 500ms}\n",
                "  - timeouts: {request: 5s, backendRequest: 300ms}\n    retry: {attempts: 2, backoff: 1ms}\n",
            ),
        ),
        backend_policy("users", "  loadBalancer: round-robin\n"),
    );
    let (sc, url) = users_mesh(&[slow.addr, fast.addr], &extra);
    let mut timed_out = 0;
    for _ in 0..4 {
        let r = curl(&[&format!("{url}/whole")]).await;
        if r.status == 504 {
            assert_eq!(r.header("pilotfish-error"), Some("timeout"));
            timed_out += 1;
        }
    }
    assert!(timed_out >= 1, "the slow endpoint never produced a 504");
    for _ in 0..10 {
        let r = curl(&[&format!("{url}/retried")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["backend"], "fast");
    }
    let m = sc.metrics().await;
    assert!(sample(&m, "pilotfish_retries_total", &[("reason", "timeout")]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_sends_little_to_a_slow_endpoint() {
    let (slow, quick1, quick2) = (backend("slow").await, backend("q1").await, backend("q2").await);
    slow.delay(50);
    quick1.delay(5);
    quick2.delay(5);
    let (_sc, url) = users_mesh(&[slow.addr, quick1.addr, quick2.addr], "");
    let codes = curl_many(600, 8, &[], &format!("{url}/get")).await;
    assert_eq!(count(&codes), BTreeMap::from([(200, 600)]));
    let share = slow.served() as f64 / 600.0;
    println!(
        "P2C-EWMA: the 10x slower endpoint got {:.1}% of 600 requests (round-robin: 33.3%)",
        share * 100.0
    );
    assert!(share < 0.15, "slow endpoint got {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_is_retried_on_another_endpoint() {
    let good = App::python_with("grpc_server.py", &[]);
    let bad = App::python_with("grpc_server.py", &["--unavailable"]);
    let extra = format!(
        "{}{}",
        route_doc("echo", "echo", "  - retry: {attempts: 2, backoff: 5ms, codes: []}\n"),
        backend_policy("echo", "  loadBalancer: round-robin\n  retry: {grpcCodes: [unavailable]}\n"),
    );
    let config = format!(
        "{}{}{extra}",
        sidecar_doc(None, ""),
        service_doc("echo", &[bad.addr(), good.addr()], "  ports: [{port: 50051, protocol: grpc}]\n"),
    );
    let sc = Sidecar::start(&config);
    let out = run_python("grpc_client.py", &[&sc.outbound.to_string(), "echo:50051", "--unary-only"]).await;
    assert_eq!(out.trim(), "ok");
    let m = sc.metrics().await;
    assert!(sample(&m, "pilotfish_retries_total", &[("reason", "grpc-status")]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_trace_context_propagate() {
    let (users, sc) = users_behind_a_sidecar("  accessLog: true\n").await;
    let _ = &users;
    let url = format!("http://{}/", sc.outbound);
    let r = curl(&["-H", "Host: users", &url]).await;
    let id = r.header("x-request-id").expect("a generated request id is echoed").to_owned();
    assert_eq!(id.len(), 36);
    let j = r.json();
    assert_eq!(j["headers"]["x-request-id"], id.as_str());
    let tp = j["headers"]["traceparent"].as_str().unwrap();
    assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");

    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = curl(&[
        "-H",
        "Host: users",
        "-H",
        &format!("traceparent: {incoming}"),
        "-H",
        "tracestate: v=1",
        "-H",
        "x-request-id: given",
        &url,
    ])
    .await;
    assert_eq!(r.header("x-request-id"), Some("given"));
    let j = r.json();
    let tp = j["headers"]["traceparent"].as_str().unwrap();
    assert!(tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{tp}");
    assert_ne!(tp, incoming, "the span id is this hop's");
    assert_eq!(j["headers"]["tracestate"], "v=1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sc.stdout().contains("\"request_id\":\"given\"") {
        assert!(std::time::Instant::now() < deadline, "{}", sc.stdout());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sc.stdout().contains("0af7651916cd43dd8448eb211c80319c"), "traceparent in the access log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_an_endpoint_out_and_back() {
    let (good, sick) = (backend("good").await, backend("sick").await);
    sick.fail_with(500);
    let extra = backend_policy(
        "users",
        "  loadBalancer: round-robin\n  healthCheck: {path: /healthz, interval: 100ms, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 2}\n",
    );
    let (_sc, url) = users_mesh(&[good.addr, sick.addr], &extra);
    // Two failed probes mark `sick` unhealthy; after that no client request reaches it.
    while sick.faults.probes.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = sick.served();
    let codes = curl_many(20, 1, &[], &format!("{url}/get")).await;
    assert_eq!(count(&codes), BTreeMap::from([(200, 20)]));
    assert_eq!(sick.served(), before, "an unhealthy endpoint got client requests");
    sick.fail_with(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let before = sick.served();
        curl_many(10, 1, &[], &format!("{url}/get")).await;
        if sick.served() - before >= 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the healed endpoint never got traffic back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_limits_fail_fast_with_503_overloaded() {
    let slow = backend("slow").await;
    slow.delay(1000);
    let (sc, url) = users_mesh(&[slow.addr], &backend_policy("users", "  limits: {maxRequests: 2}\n"));
    let codes = curl_many(6, 6, &[], &format!("{url}/get")).await;
    let counts = count(&codes);
    assert_eq!(counts.get(&200), Some(&2), "{counts:?}");
    assert_eq!(counts.get(&503), Some(&4), "{counts:?}");
    let m = sc.metrics().await;
    assert_eq!(sample(&m, "pilotfish_overflow_total", &[("limit", "maxRequests")]), 4.0);
    drop(sc);

    // One connection allowed: parallel HTTP/1.1 requests need more and are refused, not queued.
    let (sc, url) = users_mesh(&[slow.addr], &backend_policy("users", "  limits: {maxConnections: 1}\n"));
    let slow_url = format!("{url}/get");
    let served = slow.served();
    let first = tokio::spawn(async move { curl(&[&slow_url]).await });
    while slow.served() == served {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = curl(&[&format!("{url}/get")]).await;
    assert_eq!(
        (r.status, r.header("pilotfish-error"), r.header("pilotfish-limit")),
        (503, Some("overloaded"), Some("maxConnections"))
    );
    assert_eq!(first.await.unwrap().status, 200);
    let m = sc.metrics().await;
    assert_eq!(sample(&m, "pilotfish_overflow_total", &[("limit", "maxConnections")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_replay_limit_are_sent_once() {
    let (x, y) = (backend("x").await, backend("y").await);
    x.fail_with(503);
    y.fail_with(503);
    let extra = route_doc("users", "users", "  - retry: {attempts: 3, backoff: 1ms, codes: [503]}\n");
    let (_sc, url) = users_mesh(&[x.addr, y.addr], &extra);
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("small"), dir.path().join("large"));
    std::fs::write(&small, vec![b's'; 1024]).unwrap();
    std::fs::write(&large, vec![b'l'; 100 * 1024]).unwrap();
    let put = |file: &std::path::Path| format!("@{}", file.display());
    let r = curl(&["-X", "PUT", "--data-binary", &put(&small), &format!("{url}/doc")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(x.served() + y.served(), 4, "a small idempotent body is replayed for each retry");
    let r = curl(&["-X", "PUT", "--data-binary", &put(&large), &format!("{url}/doc")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(x.served() + y.served(), 5, "a body over 64 KiB is sent once");
    // Chunked (no Content-Length) past the limit: also sent once, whole.
    let r = curl(&[
        "-X",
        "PUT",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &put(&large),
        &format!("{url}/doc"),
    ])
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(x.served() + y.served(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_and_rewrite_filters() {
    let users = backend("users").await;
    let extra = route_doc(
        "users",
        "users",
        concat!(
            "  - matches: [{path: {type: PathPrefix, value: /old}}]\n",
            "    filters: [{type: RequestRedirect, requestRedirect: {hostname: new.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}}]\n",
            "  - matches: [{path: {type: PathPrefix, value: /api}}]\n",
            "    filters:\n",
            "    - {type: URLRewrite, urlRewrite: {hostname: users.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}\n",
            "    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-route, value: api}], remove: [x-drop]}}\n",
            "    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-served-by, value: pilotfish}]}}\n",
        ),
    );
    let (_sc, url) = users_mesh(&[users.addr], &extra);
    let r = curl(&[&format!("{url}/old/page?q=1")]).await;
    assert_eq!(r.status, 301);
    let port = url.rsplit(':').next().unwrap();
    assert_eq!(r.header("location"), Some(format!("http://new.example:{port}/new/page?q=1").as_str()));
    assert_eq!(users.served(), 0, "a redirect is answered by the sidecar");

    let r = curl(&["-H", "x-drop: 1", &format!("{url}/api/users?q=1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-served-by"), Some("pilotfish"));
    let j = r.json();
    assert_eq!(j["uri"], "/v2/users?q=1");
    assert_eq!(j["headers"]["host"], "users.internal");
    assert_eq!(j["headers"]["x-route"], "api");
    assert!(j["headers"].get("x-drop").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_open_breaker_open() {
    let (good, bad) = (backend("good").await, backend("bad").await);
    bad.fail_with(503);
    let extra = backend_policy(
        "users",
        "  loadBalancer: round-robin\n  circuitBreaker: {consecutiveFailures: 3, baseEjectionTime: 5m, maxEjectionTime: 10m}\n",
    );
    let (sc, url) = users_mesh(&[good.addr, bad.addr], &extra);
    let bad_label = bad.addr.to_string();
    let state = [("service", "users.default"), ("endpoint", bad_label.as_str())];
    curl_many(10, 1, &[], &format!("{url}/get")).await;
    assert_eq!(
        sample(&sc.metrics().await, "pilotfish_circuit_state", &state),
        1.0,
        "the breaker did not open"
    );
    // Change something unrelated; the breaker must stay open and the endpoint unused.
    let text = std::fs::read_to_string(&sc.config).unwrap();
    std::fs::write(&sc.config, format!("{text}  # touched\n")).unwrap();
    sc.wait_for_log("config reloaded").await;
    let before = bad.served();
    let codes = curl_many(10, 1, &[], &format!("{url}/get")).await;
    assert_eq!(count(&codes), BTreeMap::from([(200, 10)]));
    assert_eq!(bad.served(), before, "the reload readmitted an ejected endpoint");
}

/// A request whose connection failed never went out, so it is retried on another endpoint
/// whatever its method, without a retry policy and with its streamed body intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_is_retried_for_any_method() {
    let live = backend("live").await;
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // No breaker to hide the dead endpoint: every request may meet it.
    let policy = backend_policy(
        "users",
        "  loadBalancer: round-robin\n  circuitBreaker: {consecutiveFailures: 1000}\n",
    );
    let (sc, url) = users_mesh(&[dead, live.addr], &policy);
    let body = "x".repeat(100 * 1024); // over the replay buffer: streamed, sent once
    for _ in 0..10 {
        let r = curl(&["-X", "POST", "-d", &body, &format!("{url}/orders")]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["body_bytes"], 100 * 1024);
    }
    assert_eq!(live.served(), 10);
    let m = sc.metrics().await;
    let retried =
        sample(&m, "pilotfish_retries_total", &[("service", "users.default"), ("reason", "connect-failure")]);
    assert!(retried >= 5.0, "round-robin met the dead endpoint half the time: {retried} retries");
}

/// Reading a body kept for retries is bounded even when the route sets no timeout: a stalled
/// body gets 408 and gives its place under maxRequests back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_does_not_hold_a_request_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let users = backend("users").await;
    let port = free_port();
    let config = format!(
        "{}{}{}{}",
        sidecar_doc(None, "  timeouts: {requestBody: 1s}\n"),
        service_doc(
            "users",
            &[users.addr],
            &format!("  ports: [{{port: 80, protocol: http}}]\n  localPort: {port}\n")
        ),
        route_doc("users", "users", "  - retry: {attempts: 2}\n"),
        backend_policy("users", "  limits: {maxRequests: 1}\n"),
    );
    let _sc = Sidecar::start(&config);
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled
        .write_all(b"PUT /x HTTP/1.1\r\nHost: users\r\nContent-Length: 100\r\n\r\nonly ten!!")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), stalled.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 408");
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = curl(&[&format!("http://127.0.0.1:{port}/after")]).await;
    assert_eq!(r.status, 200, "the slot was given back: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(users.served(), 1);
}
