//! Managed sidecars: configuration pushed by a real control plane, ACK/NACK visible in the
//! proxies API, registration with leases, and sidecars riding out a control-plane outage.

use std::time::{Duration, Instant};

use pilotfish_api::wire::{Ack, EndpointQuery, ProxyStatus, PushLine, Registration, PROTOCOL_VERSION};

use crate::support::{self, backend, Sidecar};
use crate::{service, ControlPlane, TOKEN};

async fn apply(cp: &ControlPlane, doc: &str) {
    cp.client().apply(doc).await.unwrap();
}

fn managed(cp: &ControlPlane, service: &str, extra: &[&str]) -> Sidecar {
    managed_with_token(cp, service, TOKEN, extra)
}

pub(crate) fn managed_with_token(cp: &ControlPlane, service: &str, token: &str, extra: &[&str]) -> Sidecar {
    managed_at(&cp.url(""), service, token, extra, &[])
}

/// A managed sidecar of `service` on the control plane at `url` (http or https), with `extra`
/// arguments and `env` in its environment.
pub(crate) fn managed_at(
    url: &str,
    service: &str,
    token: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Sidecar {
    let mut args = vec![
        "--control-plane",
        url,
        "--service",
        service,
        "--token",
        token,
        "--admin",
        "127.0.0.1:0",
        "--outbound",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    tokio::task::block_in_place(|| Sidecar::start_managed_with_env(&args, env))
}

/// Polls until `check` holds (generous bound), returning its last good value.
pub(crate) async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A control plane on a fresh data directory, with the `users` service applied and serving.
async fn with_users() -> (tempfile::TempDir, ControlPlane, support::Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path()));
    let users = backend("users").await;
    apply(&cp, &service("users", users.addr.port())).await;
    (dir, cp, users)
}

/// The version in force, and what the proxies API says of `service`'s sidecar.
async fn proxy_status(cp: &ControlPlane, service: &str) -> (u64, Option<ProxyStatus>) {
    let list = cp.client().proxies().await.unwrap();
    (list.version, list.items.into_iter().find(|p| p.service == service))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_sidecar_serves_pushed_config_and_acks_it() {
    let (_dir, cp, _users) = with_users().await;
    let sc = managed(&cp, "web", &[]);
    let url = format!("http://{}/hello", sc.outbound);
    let r = support::curl(&["-H", "Host: users", &url]).await;
    assert_eq!((r.status, r.json()["backend"].as_str()), (200, Some("users")));

    // A route written through the API reaches the sidecar and is served.
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: users}\nspec:\n  parentRefs: [{name: users}]\n  rules:\n  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-pushed, value: 'yes'}]}}]\n";
    apply(&cp, route).await;
    eventually("the pushed route is served", async || {
        let r = support::curl(&["-H", "Host: users", &url]).await;
        (r.json()["headers"]["x-pushed"] == "yes").then_some(())
    })
    .await;
    let (current, proxy) =
        eventually("the sidecar acked the current version", async || match proxy_status(&cp, "web").await {
            (current, Some(p)) if p.current => Some((current, p)),
            _ => None,
        })
        .await;
    assert_eq!(proxy.acked_version, current);
    assert!(proxy.connected);
    let metrics = support::parse_metrics(&support::curl(&[&cp.url("/metrics")]).await.body).await;
    assert_eq!(support::sample(&metrics, "pilotfish_cp_connected_proxies", &[]), 1.0);
    assert_eq!(support::sample(&metrics, "pilotfish_cp_current_proxies", &[]), 1.0);
    assert!(support::sample(&metrics, "pilotfish_cp_pushes_total", &[]) >= 2.0);
    let out = tokio::task::block_in_place(|| cp.cli_ok(&["proxies"]));
    let (version, table) = out.split_once('\n').unwrap();
    assert_eq!(version, format!("current version: {current}"));
    let table = crate::table_cells(table);
    assert_eq!(
        table[0],
        ["ID", "SERVICE", "CONNECTED", "ACKED", "CURRENT", "CERT EXPIRES", "ROOT", "LAST NACK"]
    );
    let acked = current.to_string();
    assert_eq!(table[1][1..5], ["web.default", "true", acked.as_str(), "true"], "{out}");
    assert_eq!(table[1][7], "<none>", "{out}");
    // On the admin token the sidecar has no mesh identity, so no certificate to show.
    assert_eq!(table[1][5..7], ["-", "-"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_the_sidecar_cannot_take_is_nacked_and_the_old_one_keeps_serving() {
    let (_dir, cp, _users) = with_users().await;
    let sc = managed(&cp, "web", &[]);
    let url = format!("http://{}/", sc.outbound);
    assert_eq!(support::curl(&["-H", "Host: users", &url]).await.status, 200);

    // Each document is valid alone, so the control plane takes both; together they claim the
    // same virtual address, which the sidecar refuses.
    let vip = |ns: &str| {
        format!("apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: vip, namespace: {ns}}}\nspec:\n  ports: [{{port: 80}}]\n  addresses: [10.96.0.1]\n  endpoints: [{{address: 127.0.0.1:1}}]\n")
    };
    apply(&cp, &vip("a")).await;
    apply(&cp, &vip("b")).await;
    let proxy = eventually("the sidecar nacked", async || {
        proxy_status(&cp, "web").await.1.filter(|p| p.last_nack.is_some())
    })
    .await;
    let nacked = proxy.last_nack.as_ref().unwrap();
    let error = &nacked.error;
    assert!(error.contains("spec.addresses") && error.contains("10.96.0.1:80"), "{error}");
    assert!(!proxy.current);
    assert_eq!(
        support::curl(&["-H", "Host: users", &url]).await.status,
        200,
        "the last good config stopped serving"
    );
    let m = sc.metrics().await;
    assert!(support::sample(&m, "pilotfish_config_errors_total", &[]) >= 1.0);
    let out = tokio::task::block_in_place(|| cp.cli_ok(&["proxies"]));
    let table = crate::table_cells(out.split_once('\n').unwrap().1);
    let nack = &table[1][7];
    assert!(nack.starts_with(&format!("v{}: ", nacked.version)), "{out}");
    assert!(nack.contains("spec.addresses"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_ride_out_a_control_plane_outage_and_converge_after() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let mut cp = tokio::task::block_in_place(|| ControlPlane::start_on(dir.path(), &listen));
    let users = backend("users").await;
    users.delay(20);
    apply(&cp, &service("users", users.addr.port())).await;
    let sc = managed(&cp, "web", &[]);
    let url = format!("http://{}/", sc.outbound);
    assert_eq!(support::curl(&["-H", "Host: users", &url]).await.status, 200);

    // Load through the sidecar for the whole 30 s the control plane is down.
    cp.kill();
    let started = Instant::now();
    let mut codes = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        codes.extend(support::curl_many(50, 4, &["-H", "Host: users"], &url).await);
    }
    assert!(codes.len() > 500, "too little load: {}", codes.len());
    let failed = codes.iter().filter(|c| **c != 200).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed during the outage", codes.len());

    let cp = tokio::task::block_in_place(|| ControlPlane::start_on(dir.path(), &listen));
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: users}\nspec:\n  parentRefs: [{name: users}]\n  rules:\n  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-after, value: outage}]}}]\n";
    apply(&cp, route).await;
    eventually("the sidecar reconnected and took the new route", async || {
        let r = support::curl(&["-H", "Host: users", &url]).await;
        (r.json()["headers"]["x-after"] == "outage").then_some(())
    })
    .await;
    eventually("the proxies API shows it current", async || {
        proxy_status(&cp, "web").await.1.filter(|p| p.current).map(drop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_removes_the_endpoint_from_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path()));
    let api = backend("api").await;
    apply(&cp, "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {name: api}\nspec: {}\n").await;
    let sc = managed(&cp, "web", &[]);
    let url = format!("http://{}/", sc.outbound);
    let registered = Instant::now();
    cp.client().register(&Registration::new("api", "default", api.addr, 3)).await.unwrap();
    let r = eventually("the registered instance is routable", async || {
        let r = support::curl(&["-H", "Host: api", &url]).await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.json()["backend"], "api");
    // No heartbeats: within the TTL plus one push, the sidecar has no endpoint left.
    let r = eventually("the endpoint left the sidecar", async || {
        let r = support::curl(&["-H", "Host: api", &url]).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(r.header("pilotfish-error"), Some("no-endpoints"));
    let took = registered.elapsed();
    // TTL 3 s, expiry checked every 0.5 s, one push: generous slack for a loaded machine.
    assert!(took < Duration::from_secs(10), "the lapsed endpoint lingered for {took:?}");
    println!("a 3 s lease lapsed and left the sidecar {took:?} after registration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_sidecars_register_their_apps_and_route_to_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path()));
    let app = backend("greeter-app").await;
    let app_addr = app.addr.to_string();
    // Each sidecar on its own service's join token, so each gets its identity from the mesh CA
    // and the call crosses the mesh over mTLS (a managed inbound port takes nothing else).
    let token = |service: &str| {
        tokio::task::block_in_place(|| cp.cli_ok(&["token", "create", "--service", service]))
            .trim()
            .to_owned()
    };
    let (greeter_token, client_token) = (token("greeter"), token("client"));
    let greeter_args = ["--app", &app_addr, "--inbound", "127.0.0.1:0", "--lease-ttl", "60s"];
    let mut greeter = managed_with_token(&cp, "greeter", &greeter_token, &greeter_args);
    let client = managed_with_token(&cp, "client", &client_token, &[]);
    let url = format!("http://{}/hi", client.outbound);
    let r = eventually("the client's sidecar learned of greeter", async || {
        let r = support::curl(&["-H", "Host: greeter", &url]).await;
        (r.status == 200).then_some(r)
    })
    .await;
    let j = r.json();
    assert_eq!(j["backend"], "greeter-app");
    assert!(
        j["headers"]["x-forwarded-for"].is_string(),
        "the request came through greeter's inbound sidecar"
    );
    let opened = support::sample(
        &greeter.metrics().await,
        "pilotfish_mesh_connections_opened_total",
        &[("direction", "inbound")],
    );
    assert!(opened >= 1.0, "the call reached greeter over mesh mTLS");

    // A draining sidecar deregisters its app at once (its 60 s lease cannot lapse meanwhile);
    // greeter was known only from its registration, so it is gone from the client's view.
    greeter.signal("TERM");
    tokio::task::block_in_place(|| greeter.wait_exit(Duration::from_secs(30)));
    let r = eventually("greeter left the registry", async || {
        let r = support::curl(&["-H", "Host: greeter", &url]).await;
        (r.status == 404).then_some(r)
    })
    .await;
    assert_eq!(r.header("pilotfish-error"), Some("no-route"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_serves_one_service_and_nothing_else() {
    let (_dir, cp, _users) = with_users().await;
    let token =
        tokio::task::block_in_place(|| cp.cli_ok(&["token", "create", "--service", "web"])).trim().to_owned();
    assert!(token.contains('.') && token.len() > 40, "{token}");

    // A sidecar of `web` runs on it: configuration, ACKs, registration.
    let app = backend("web-app").await;
    let app_addr = app.addr.to_string();
    let sc = managed_with_token(&cp, "web", &token, &["--app", &app_addr, "--inbound", "127.0.0.1:0"]);
    let r = support::curl(&["-H", "Host: users", &format!("http://{}/", sc.outbound)]).await;
    assert_eq!(r.status, 200);
    let web = EndpointQuery { service: Some("web".into()) };
    eventually("web's sidecar registered its app", async || {
        (cp.client().endpoints(&web).await.unwrap().items.len() == 1).then_some(())
    })
    .await;

    // ...and nothing else: no admin writes, no other service's identity.
    let bearer = format!("Authorization: Bearer {token}");
    let r = support::curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        "--data-binary",
        &service("evil", 1),
        &cp.url("/v1/resources"),
    ])
    .await;
    assert_eq!(r.status, 401);
    let other = r#"{"service": "users", "address": "127.0.0.1:1"}"#;
    let r = support::curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        "-H",
        "content-type: application/json",
        "--data",
        other,
        &cp.url("/v1/endpoints"),
    ])
    .await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let r = support::curl(&["--max-time", "3", "-H", &bearer, &cp.url("/v1/push?id=x&service=users")]).await;
    assert_eq!(r.status, 403);
    let r =
        support::curl(&["-H", "Authorization: Bearer abc.def", &cp.url("/v1/push?id=x&service=web")]).await;
    assert_eq!(r.status, 401, "a made-up token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_services_token_cannot_take_over_a_sidecars_proxy_id() {
    let (_dir, cp, _users) = with_users().await;
    let token = |service: &str| {
        tokio::task::block_in_place(|| cp.cli_ok(&["token", "create", "--service", service]))
            .trim()
            .to_owned()
    };
    let (web_token, evil_token) = (token("web"), token("evil"));
    let _sc = managed_with_token(&cp, "web", &web_token, &[]);
    let id =
        eventually("web's sidecar is listed", async || proxy_status(&cp, "web").await.1.map(|p| p.id)).await;

    // evil claims web's sidecar id: as web (refused), and under its own name (its own proxy).
    let bearer = format!("Authorization: Bearer {evil_token}");
    let as_web = cp.url(&format!("/v1/push?id={id}&service=web"));
    let r = support::curl(&["--max-time", "3", "-H", &bearer, &as_web]).await;
    assert_eq!(r.status, 403);
    let mut squat = std::process::Command::new("curl")
        .args(["-s", "-N", "-H", &bearer, &cp.url(&format!("/v1/push?id={id}&service=evil"))])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the squatter is listed under its own service", async || {
        proxy_status(&cp, "evil").await.1.filter(|p| p.connected).map(drop)
    })
    .await;

    // The real sidecar's ACKs still land: it takes a new version and the API shows it current.
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: users}\nspec:\n  parentRefs: [{name: users}]\n  rules:\n  - timeouts: {request: 3s}\n";
    apply(&cp, route).await;
    let proxy = eventually("web's sidecar acked the new version", async || {
        proxy_status(&cp, "web").await.1.filter(|p| p.current)
    })
    .await;
    assert!(proxy.connected, "{proxy:?}");
    let _ = squat.kill();
    let _ = squat.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_sidecar_is_listed_as_disconnected_then_forgotten_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let cp = tokio::task::block_in_place(|| {
        ControlPlane::launch(&["--listen", "127.0.0.1:0", "--data-dir", data, "--proxy-retention", "3s"])
    });
    let sc = managed(&cp, "web", &[]);
    eventually("the sidecar is listed", async || {
        proxy_status(&cp, "web").await.1.filter(|p| p.connected).map(drop)
    })
    .await;
    drop(sc);
    // The control plane notices at the stream's next keepalive (10 s), then keeps it 3 s.
    let proxy = eventually("the sidecar is listed as disconnected", async || {
        proxy_status(&cp, "web").await.1.filter(|p| !p.connected)
    })
    .await;
    assert!(proxy.disconnected_at.is_some(), "{proxy:?}");
    let table = tokio::task::block_in_place(|| cp.cli_ok(&["proxies"]));
    assert!(table.contains("web.default") && table.contains("false"), "{table}");
    eventually("the sidecar is forgotten", async || proxy_status(&cp, "web").await.1.is_none().then_some(()))
        .await;
}

/// A stand-in control plane that pushes the snapshots a test hands it and records the ACKs and
/// NACKs: a control plane of another version, which may send what this sidecar's validation
/// refuses (a real control plane validates with the same rules and would refuse to store it).
struct FakeControlPlane {
    url: String,
    /// Push lines, each sent as it is.
    lines: tokio::sync::mpsc::UnboundedSender<String>,
    /// ACK and NACK bodies as sent, so a test can see what the typed message would default.
    acks: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl FakeControlPlane {
    /// A managed sidecar of service `web` that follows this control plane.
    fn sidecar(&self) -> Sidecar {
        let args = ["--control-plane", &self.url, "--service", "web", "--token", "t"];
        let listeners = ["--admin", "127.0.0.1:0", "--outbound", "127.0.0.1:0"];
        let args: Vec<&str> = args.into_iter().chain(listeners).collect();
        tokio::task::block_in_place(|| Sidecar::start_managed(&args))
    }

    async fn start() -> Self {
        use bytes::Bytes;
        use http_body_util::{channel::Channel, BodyExt, Full};
        use hyper_util::rt::TokioIo;
        use std::sync::{Arc, Mutex};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (lines, queue) = tokio::sync::mpsc::unbounded_channel::<String>();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let recorded = acks.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (queue, recorded) = (queue.clone(), recorded.clone());
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (queue, recorded) = (queue.clone(), recorded.clone());
                    async move {
                        type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
                        let res: http::Response<Body> = if req.uri().path() == "/v1/push" {
                            // One push stream at a time: each line handed over is sent.
                            let (mut tx, body) = Channel::<Bytes, std::convert::Infallible>::new(8);
                            tokio::spawn(async move {
                                let mut queue = queue.lock().await;
                                while let Some(line) = queue.recv().await {
                                    if tx.send_data(Bytes::from(format!("{line}\n"))).await.is_err() {
                                        return;
                                    }
                                }
                            });
                            http::Response::new(body.boxed())
                        } else {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            if let Ok(ack) = serde_json::from_slice::<serde_json::Value>(&body) {
                                recorded.lock().unwrap().push(ack);
                            }
                            http::Response::new(Full::new(Bytes::from_static(b"{}")).boxed())
                        };
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { url, lines, acks }
    }

    /// Pushes a snapshot as this build's control plane would.
    fn push(&self, version: u64, config: String) {
        self.push_line(serde_json::to_value(PushLine::new(version, config)).unwrap());
    }

    /// Pushes any line, e.g. one of another protocol version.
    fn push_line(&self, line: serde_json::Value) {
        self.lines.send(line.to_string()).unwrap();
    }

    /// Waits for the sidecar's report on `version`: `None` for an ACK, the error of a NACK.
    async fn report(&self, version: u64) -> Option<String> {
        self.ack_of(version).await.error
    }

    async fn ack_of(&self, version: u64) -> Ack {
        serde_json::from_value(self.sent_ack_of(version).await).expect("an ACK or NACK")
    }

    /// The body of the sidecar's report on `version`, as it was sent.
    async fn sent_ack_of(&self, version: u64) -> serde_json::Value {
        eventually(&format!("the sidecar reported on version {version}"), async || {
            self.acks.lock().unwrap().iter().find(|a| a["version"] == version).cloned()
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_once_crashed_the_sidecar_is_nacked_and_later_ones_still_apply() {
    let (a, b) = (backend("a").await, backend("b").await);
    let users = |addr: std::net::SocketAddr| format!("{}---\n", service("users", addr.port()));
    // tower's retry budget panics on 2^31 retries per second; building it used to kill the task
    // that follows the push stream, or a starting sidecar.
    let crashing = |addr| {
        format!("{}apiVersion: pilotfish.io/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: users}}\nspec:\n  targetRef: {{kind: Service, name: users}}\n  retryBudget: {{minPerSecond: 2147483648}}\n", users(addr))
    };
    let cp = FakeControlPlane::start().await;
    cp.push(1, crashing(a.addr));
    cp.push(2, users(a.addr));
    let sc = cp.sidecar();
    let error = cp.report(1).await.expect("the first snapshot is NACKed");
    assert!(error.contains("spec.retryBudget.minPerSecond"), "{error}");
    assert_eq!(cp.report(2).await, None, "the second snapshot is ACKed");
    let target = format!("http://{}/", sc.outbound);
    assert_eq!(support::curl(&["-H", "Host: users", &target]).await.json()["backend"], "a");

    // The same while following the stream: NACKed, the last good config keeps serving, and the
    // stream is still followed.
    cp.push(3, crashing(b.addr));
    let error = cp.report(3).await.expect("a NACK");
    assert!(error.contains("spec.retryBudget.minPerSecond"), "{error}");
    assert_eq!(support::curl(&["-H", "Host: users", &target]).await.json()["backend"], "a");
    cp.push(4, users(b.addr));
    assert_eq!(cp.report(4).await, None);
    assert_eq!(support::curl(&["-H", "Host: users", &target]).await.json()["backend"], "b");
    let m = sc.metrics().await;
    assert_eq!(support::sample(&m, "pilotfish_config_errors_total", &[]), 2.0);
    assert_eq!(sc.admin_get("/ready").await.status, 200);
}

/// A control plane one version ahead pushes fields this sidecar does not know: it ACKs, serves
/// what it knows, and logs what it ignored (users' files and the API still refuse such fields).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_fields_from_the_future_is_acked_and_served() {
    let a = backend("a").await;
    let future = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: users}}\nspec:\n  endpoints: [{{address: {}, zone: eu-1}}]\n  trafficPolicy: {{zoneAware: true}}\n",
        a.addr
    );
    let cp = FakeControlPlane::start().await;
    cp.push(1, future);
    let sc = cp.sidecar();
    assert_eq!(cp.report(1).await, None, "the snapshot is ACKed");
    let target = format!("http://{}/", sc.outbound);
    assert_eq!(support::curl(&["-H", "Host: users", &target]).await.json()["backend"], "a");
    sc.wait_for_log("spec.endpoints[0].zone: not known to this version: ignored").await;
    sc.wait_for_log("spec.trafficPolicy: not known to this version: ignored").await;
}

/// A push line from a control plane one protocol version ahead, with fields this sidecar does
/// not know: it is ACKed (with this sidecar's protocol) and its configuration served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_line_with_fields_from_the_future_is_acked_and_served() {
    let a = backend("a").await;
    let cp = FakeControlPlane::start().await;
    cp.push_line(serde_json::json!({
        "protocol": PROTOCOL_VERSION + 1,
        "version": 1,
        "config": service("users", a.addr.port()),
        "delta": { "added": ["Service/default/users"] },
        "trustBundle": "-----BEGIN CERTIFICATE-----",
    }));
    let sc = cp.sidecar();
    let ack = cp.ack_of(1).await;
    assert_eq!(ack, Ack::accepted(1), "an ACK");
    assert_eq!(cp.sent_ack_of(1).await["protocol"], PROTOCOL_VERSION, "of this sidecar's protocol");
    let target = format!("http://{}/", sc.outbound);
    assert_eq!(support::curl(&["-H", "Host: users", &target]).await.json()["backend"], "a");
}

/// A push line of a protocol too far from this sidecar's is NACKed, saying so, even when its
/// shape has changed (here `config` is no longer a string), and the last good configuration
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_line_of_an_unsupported_protocol_is_nacked_and_the_last_good_config_serves() {
    let (a, b) = (backend("a").await, backend("b").await);
    let cp = FakeControlPlane::start().await;
    cp.push(1, service("users", a.addr.port()));
    let sc = cp.sidecar();
    assert_eq!(cp.report(1).await, None);
    cp.push_line(serde_json::json!({
        "protocol": PROTOCOL_VERSION + 2,
        "version": 2,
        "config": { "documents": [service("users", b.addr.port())] },
    }));
    let error = cp.report(2).await.expect("a NACK");
    assert!(error.contains(&format!("protocol version {}", PROTOCOL_VERSION + 2)), "{error}");
    let target = format!("http://{}/", sc.outbound);
    assert_eq!(support::curl(&["-H", "Host: users", &target]).await.json()["backend"], "a");
    cp.push(3, service("users", b.addr.port()));
    assert_eq!(cp.report(3).await, None);
    assert_eq!(support::curl(&["-H", "Host: users", &target]).await.json()["backend"], "b");
}
