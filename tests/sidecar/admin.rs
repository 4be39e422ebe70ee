//! The admin listener, the metrics it exports, and config reload.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer() {
    let (users, sc) = users_behind_a_sidecar("").await;
    assert_eq!(sc.admin_get("/live").await.status, 200);
    assert_eq!(sc.admin_get("/ready").await.status, 200);
    let config = sc.admin_get("/config").await;
    assert_eq!(config.header("content-type"), Some("application/json"));
    let j = config.json();
    assert_eq!(j["version"], 1);
    let kinds: Vec<_> = j["resources"].as_array().unwrap().iter().map(|r| r["kind"].clone()).collect();
    assert_eq!(kinds, ["Sidecar", "Service"]);
    assert_eq!(j["resources"][1]["spec"]["endpoints"][0]["address"], users.addr.to_string());
    assert_eq!(sc.admin_get("/nope").await.status, 404);
    let r = curl(&["-X", "POST", &format!("http://{}/live", sc.admin)]).await;
    assert_eq!(r.status, 405);
    let r = curl(&[&format!("http://{}/shutdown", sc.admin)]).await;
    assert_eq!(r.status, 405, "GET must not shut the sidecar down");
    assert_eq!(sc.admin_get("/live").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_the_traffic_sent() {
    let (users, sc) = users_behind_a_sidecar("").await;
    let base = format!("http://{}", sc.outbound);
    for _ in 0..3 {
        assert_eq!(curl(&["-H", "Host: users", &format!("{base}/ok")]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(curl(&["-H", "Host: users", &format!("{base}/status/503")]).await.status, 503);
    }
    assert_eq!(curl(&["-H", "Host: nobody", &base]).await.status, 404);

    let m = sc.metrics().await;
    let ep = users.addr.to_string();
    let users_labels = |code| {
        [("direction", "outbound"), ("service", "users.default"), ("endpoint", ep.as_str()), ("code", code)]
    };
    assert_eq!(sample(&m, "pilotfish_requests_total", &users_labels("200")), 3.0);
    assert_eq!(sample(&m, "pilotfish_requests_total", &users_labels("503")), 2.0);
    assert_eq!(sample(&m, "pilotfish_requests_total", &[("service", ""), ("code", "404")]), 1.0);
    assert_eq!(
        sample(
            &m,
            "pilotfish_request_duration_seconds_count",
            &[("direction", "outbound"), ("service", "users.default")]
        ),
        5.0
    );
    assert_eq!(sample(&m, "pilotfish_config_version", &[]), 1.0);
    assert_eq!(sample(&m, "pilotfish_config_errors_total", &[]), 0.0);

    // One connection held open: the gauge shows exactly it (once the curl connections are gone).
    let mut held = tokio::net::TcpStream::connect(sc.outbound).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    held.write_all(b"GET /ok HTTP/1.1\r\nHost: users\r\n\r\n").await.unwrap();
    let mut status = [0u8; 12];
    held.read_exact(&mut status).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = sc.metrics().await;
        let open = sample(&m, "pilotfish_open_connections", &[("direction", "outbound")]);
        if open == 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "open connections: {open}, expected 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_valid_config_and_keeps_the_old_on_error() {
    let a = backend("a").await;
    let b = backend("b").await;
    let head = sidecar_doc(None, "");
    let sc = Sidecar::start(&format!("{head}{}", service_doc("users", &[a.addr], "")));
    let url = format!("http://{}/", sc.outbound);
    assert_eq!(curl(&["-H", "Host: users", &url]).await.json()["backend"], "a");

    // A request in flight across the reload completes.
    let slow_url = format!("http://{}/slow/5000", sc.outbound);
    let in_flight = tokio::spawn(async move { curl(&["-H", "Host: users", &slow_url]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(&sc.config, format!("{head}{}", service_doc("users", &[b.addr], ""))).unwrap();
    sc.wait_for_log("config reloaded").await;
    assert_eq!(curl(&["-H", "Host: users", &url]).await.json()["backend"], "b");
    let slow = in_flight.await.unwrap();
    assert_eq!((slow.status, slow.json()["backend"].as_str()), (200, Some("a")));

    // An invalid file is rejected with file, document, field and reason; b stays in force.
    let invalid = format!("{head}{}", service_doc("users", &[a.addr], ""))
        .replace(&a.addr.to_string(), "127.0.0.1:http");
    std::fs::write(&sc.config, invalid).unwrap();
    sc.wait_for_log("config rejected").await;
    let log = sc.stderr();
    let expected =
        format!("{}: document 2 (Service default/users): spec.endpoints[0].address:", sc.config.display());
    assert!(log.contains(&expected), "{log}");
    assert_eq!(curl(&["-H", "Host: users", &url]).await.json()["backend"], "b");
    let m = sc.metrics().await;
    assert_eq!(sample(&m, "pilotfish_config_errors_total", &[]), 1.0);
    assert_eq!(sample(&m, "pilotfish_config_version", &[]), 2.0);
    assert_eq!(sc.admin_get("/config").await.json()["version"], 2);

    // SIGHUP reloads too: fix the file, then signal.
    std::fs::write(&sc.config, format!("{head}{}", service_doc("users", &[a.addr, b.addr], ""))).unwrap();
    sc.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sc.admin_get("/config").await.json()["version"] != 3 {
        assert!(std::time::Instant::now() < deadline, "{}", sc.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(curl(&["-H", "Host: users", &url]).await.json()["backend"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2, "round-robin over both endpoints: {seen:?}");
}

/// An HTTPRoute exported from a cluster (`kubectl get -o yaml`) loads and is served; what it
/// carries without effect is logged when it first appears, not again at every reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_exported_from_a_cluster_is_served_and_its_warnings_are_logged_once() {
    let users = backend("users").await;
    let service = format!(
        "---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: users, namespace: shop}}\nspec:\n  endpoints: [{{address: {}}}]\n---\n",
        users.addr
    );
    let config = format!(
        "{}{service}{}",
        sidecar_doc(None, ""),
        include_str!("../../examples/kubectl-httproute.yaml")
    );
    let sc = Sidecar::start(&config);
    let r = curl(&["-H", "Host: users.shop", &format!("http://{}/other", sc.outbound)]).await;
    assert_eq!((r.status, r.json()["headers"]["x-route"].as_str()), (200, Some("default")));
    let warned =
        |log: &str, field: &str| log.lines().filter(|l| l.contains("WARN") && l.contains(field)).count();
    let log = sc.stderr();
    let expected = format!(
        "{}: document 3 (HTTPRoute shop/users): spec.parentRefs[0].sectionName: not implemented",
        sc.config.display()
    );
    assert!(log.contains(&expected), "{log}");
    assert_eq!(warned(&log, "spec.parentRefs[0].port"), 1, "{log}");
    let config_json = sc.admin_get("/config").await.json();
    assert!(config_json["resources"][2].get("status").is_none(), "{config_json}");

    // A reload that keeps the warnings does not repeat them; a new one is logged.
    let changed = config.replace("team.example.com/owner: payments", "team.example.com/owner: search");
    std::fs::write(&sc.config, &changed).unwrap();
    sc.wait_for_log("version=2").await;
    let hosts =
        changed.replace("spec:\n  parentRefs:", "spec:\n  hostnames: [users.example.com]\n  parentRefs:");
    std::fs::write(&sc.config, hosts).unwrap();
    sc.wait_for_log("spec.hostnames").await;
    let log = sc.stderr();
    assert_eq!(warned(&log, "spec.parentRefs[0].sectionName"), 1, "{log}");
    assert_eq!(warned(&log, "spec.hostnames"), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_once_crashed_the_reload_task_is_rejected_and_counted() {
    let a = backend("a").await;
    let b = backend("b").await;
    let head = sidecar_doc(None, "");
    let sc = Sidecar::start(&format!("{head}{}", service_doc("users", &[a.addr], "")));
    let url = format!("http://{}/", sc.outbound);

    // tower's retry budget panics on 2^31 retries per second: validation now refuses it.
    let policy = "---\napiVersion: pilotfish.io/v1alpha1\nkind: BackendPolicy\nmetadata: {name: users}\nspec:\n  targetRef: {kind: Service, name: users}\n  retryBudget: {minPerSecond: 2147483648}\n";
    std::fs::write(&sc.config, format!("{head}{}{policy}", service_doc("users", &[b.addr], ""))).unwrap();
    sc.wait_for_log("config rejected").await;
    let log = sc.stderr();
    assert!(
        log.contains(
            "document 3 (BackendPolicy default/users): spec.retryBudget.minPerSecond: must be 0-1000000"
        ),
        "{log}"
    );
    assert_eq!(curl(&["-H", "Host: users", &url]).await.json()["backend"], "a");
    let m = sc.metrics().await;
    assert_eq!(sample(&m, "pilotfish_config_errors_total", &[]), 1.0);
    assert_eq!(sc.admin_get("/ready").await.status, 200);

    // The reload task lives on: the next good file is applied.
    std::fs::write(&sc.config, format!("{head}{}", service_doc("users", &[b.addr], ""))).unwrap();
    sc.wait_for_log("config reloaded").await;
    assert_eq!(curl(&["-H", "Host: users", &url]).await.json()["backend"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_one_json_line_per_request() {
    let (users, sc) = users_behind_a_sidecar("  accessLog: true\n").await;
    let r = curl(&[
        "-H",
        "Host: users",
        "-H",
        "X-Request-Id: req-42",
        &format!("http://{}/logged?q=1", sc.outbound),
    ])
    .await;
    assert_eq!(r.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        if let Some(line) = sc.stdout().lines().find(|l| l.contains("req-42")) {
            break line.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no access log line: {}", sc.stdout());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(j["kind"], "http");
    assert_eq!(j["method"], "GET");
    assert_eq!(j["authority"], "users");
    assert_eq!(j["path"], "/logged?q=1");
    assert_eq!(j["status"], 200);
    assert_eq!(j["upstream"], users.addr.to_string());
    assert_eq!(j["response_bytes"].as_u64(), Some(r.body.len() as u64));
    assert!(j["duration_ms"].as_f64().unwrap() > 0.0);
}
