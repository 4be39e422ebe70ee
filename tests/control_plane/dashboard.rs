//! The dashboard at `/`: the embedded page and its files, served open with a strict
//! Content-Security-Policy and revalidated by ETag, referring to nothing outside the control
//! plane; and the page in a real browser (Debian's headless Chromium driven by selenium,
//! `tests/python/dashboard_check.py`) against a mesh with a healthy plaintext edge, a failing
//! mTLS one, an open circuit breaker and a rollout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use pilotfish_api::wire::{StatsBy, StatsQuery};

use crate::managed::eventually;
use crate::mesh::{call_until, control_plane, greeter_and_client};
use crate::support::{self, backend};
use crate::{curl, service, ControlPlane};

/// A GET with curl: status, headers (lowercase names) and body.
fn get(url: &str, headers: &[&str]) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "10"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().unwrap();
    let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&out.stdout[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, out.stdout[split + 4..].to_vec())
}

/// What the page refers to: every `src` and `href` value of the markup.
fn references(html: &str) -> Vec<String> {
    ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.match_indices(attr).map(move |(at, _)| &html[at + attr.len()..]))
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .collect()
}

/// Every absolute URL (`scheme://…`) in `text`.
fn absolute_urls(text: &str) -> Vec<&str> {
    let scheme = |c: char| c.is_ascii_alphanumeric() || "+.-".contains(c);
    let rest = |c: char| c.is_whitespace() || "\"'`)".contains(c);
    text.match_indices("://")
        .map(|(at, _)| {
            let start = text[..at].rfind(|c| !scheme(c)).map_or(0, |i| i + 1);
            let end = text[at..].find(rest).map_or(text.len(), |i| at + i);
            &text[start..end]
        })
        .collect()
}

#[test]
fn the_page_and_its_files_are_served_open_strict_and_revalidated_and_refer_to_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());

    // Open: no token needed for the page, while the data behind it still needs one.
    let (status, headers, body) = get(&cp.url("/"), &[]);
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(curl(&[&cp.url("/v1/stats")]).0, 401);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<main") && html.contains("lang=\"en\""), "{html}");

    let csp = headers["content-security-policy"].clone();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-cache");

    // Every file the page loads is one of ours, served the same way, and revalidates to 304.
    let mut files: Vec<String> = references(&html).into_iter().filter(|r| !r.starts_with('#')).collect();
    files.sort();
    files.dedup();
    assert!(files.len() >= 3, "{files:?}");
    let mut bodies = vec![(String::from("/"), html.clone(), headers)];
    for file in &files {
        assert!(file.starts_with("/dashboard/"), "{file} is not a file of the control plane");
        let (status, headers, body) = get(&cp.url(file), &[]);
        assert_eq!(status, 200, "{file}");
        assert_eq!(headers["content-security-policy"], csp, "{file}");
        let want = match file.rsplit('.').next().unwrap() {
            "css" => "text/css; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("{file}: unexpected .{other}"),
        };
        assert_eq!(headers["content-type"], want, "{file}");
        bodies.push((file.clone(), String::from_utf8(body).unwrap(), headers));
    }
    for (file, body, headers) in &bodies {
        let etag = &headers["etag"];
        let (status, again, revalidated) = get(&cp.url(file), &[&format!("If-None-Match: {etag}")]);
        assert_eq!((status, &again["etag"], revalidated.len()), (304, etag, 0), "{file}");
        // No URL outside the control plane: the only absolute one is SVG's namespace name
        // (an identifier, never fetched), and nothing is protocol-relative or imported.
        for url in absolute_urls(body) {
            assert_eq!(url, "http://www.w3.org/2000/svg", "{file} refers to {url}");
        }
        for outside in ["=\"//", "url(", "@import", "<iframe"] {
            assert!(!body.contains(outside), "{file} has {outside}");
        }
    }
    let (status, _, _) = get(&cp.url("/dashboard/missing.js"), &[]);
    assert_eq!(status, 404);
}

/// Where the browser test leaves its screenshot: `target/dashboard.png`.
fn screenshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("dashboard.png")
}

/// Sends `n` requests for `host` through `outbound`, to `paths` in turn, in one curl.
fn traffic(outbound: &str, host: &str, paths: &[&str], n: usize) {
    let mut args: Vec<String> = vec!["-s".into(), "-H".into(), format!("Host: {host}")];
    for i in 0..n {
        args.extend([
            "-o".into(),
            "/dev/null".into(),
            format!("http://{outbound}{}", paths[i % paths.len()]),
        ]);
    }
    assert!(Command::new("curl").args(&args).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_shows_every_service_the_traffic_and_the_failing_edge() {
    let dir = tempfile::tempdir().unwrap();
    // client → greeter over mTLS (both sidecars on their own join tokens, so with certificates),
    // and client → orders in plaintext (orders has no sidecar).
    let cp = control_plane(dir.path(), &[]);
    let (_greeter_app, _greeter, client) = greeter_and_client(&cp, &[]).await;
    let orders = backend("orders").await;
    cp.client().apply(&service("orders", orders.addr.port())).await.unwrap();
    // A rollout of shop (both versions on orders' backend): no traffic reaches it, so it
    // progresses and then pauses for want of data.
    let port = orders.addr.port();
    let shop = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: shop}}\nspec:\n  ports: [{{port: 80, protocol: http}}]\n---\n{}---\n{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: shop}}\nspec:\n  parentRefs: [{{name: shop}}]\n  rules:\n  - backendRefs: [{{name: shop-v1, port: 80}}]\n---\napiVersion: pilotfish.io/v1alpha1\nkind: Rollout\nmetadata: {{name: shop}}\nspec:\n  targetRef: {{kind: HTTPRoute, name: shop}}\n  stable: shop-v1\n  canary: shop-v2\n  steps: [{{setWeight: 50}}]\n  analysis: {{interval: 5s, minRequests: 20, onNoData: pause}}\n",
        service("shop-v1", port),
        service("shop-v2", port),
    );
    cp.client().apply(&shop).await.unwrap();
    // flaky: one endpoint of two always fails, so its breaker opens.
    let (good, bad) = (backend("flaky-good").await, backend("flaky-bad").await);
    bad.fail_with(500);
    let flaky = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: flaky}}\nspec:\n  ports: [{{port: 80, protocol: http}}]\n  endpoints: [{{address: {}}}, {{address: {}}}]\n---\napiVersion: pilotfish.io/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: flaky}}\nspec:\n  targetRef: {{kind: Service, name: flaky}}\n  loadBalancer: round-robin\n",
        good.addr, bad.addr
    );
    cp.client().apply(&flaky).await.unwrap();
    call_until(&client, "greeter", 200, &[]).await;
    call_until(&client, "orders", 200, &[]).await;
    // greeter fails half its requests (no retries: no route asks for them); orders none.
    let outbound = client.outbound.to_string();
    tokio::task::block_in_place(|| {
        traffic(&outbound, "greeter", &["/status/500", "/"], 60);
        traffic(&outbound, "orders", &["/"], 60);
    });
    call_until(&client, "flaky", 200, &[]).await;
    tokio::task::block_in_place(|| traffic(&outbound, "flaky", &["/"], 20));
    let by_edge = StatsQuery { by: Some(StatsBy::Edge), ..StatsQuery::default() };
    eventually("the edges and flaky's open breaker are reported", async || {
        let edges = cp.client().stats(&by_edge).await.unwrap().items;
        let busy = edges.iter().filter(|e| e.golden.requests >= 60).count() == 2;
        (busy && edges.iter().any(|e| e.breakers_open > 0)).then_some(())
    })
    .await;

    let token = tokio::task::block_in_place(|| cp.cli_ok(&["token", "create", "--read-only", "--ttl", "1h"]));
    let token = token.trim();
    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    let out = tokio::process::Command::new(support::python())
        .arg(support::script("dashboard_check.py"))
        .args(["--url", &cp.url("/"), "--token", token])
        .args(["--service", "client.default", "--service", "greeter.default", "--service", "orders.default"])
        .args(["--failing", "client.default>greeter.default", "--healthy", "client.default>orders.default"])
        .arg("--secured=client.default>greeter.default")
        .args(["--rollout", "default/shop", "--breakers", "flaky.default"])
        .arg("--screenshot")
        .arg(&shot)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the browser check failed (screenshot: {}):\n{}{}",
        shot.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{} is not a PNG", shot.display());
    // The token travelled in the URL's fragment and headers only: never in the server's log.
    assert!(!cp.log.lock().unwrap().contains(token));
}
