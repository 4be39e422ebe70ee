//! AuthorizationPolicy, enforced by the callee's sidecar: real sidecars, real clients (curl,
//! Python grpcio, raw TCP). Plaintext callers have no mesh identity, so the mesh default
//! (`authenticated` unless set) refuses them; meshed callers (static sidecars with certificate
//! files from one test CA, over real mTLS) are let in or not by the identity they proved. A
//! policy or default rewritten in the config file applies to the next request without a restart.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::mtls::{callee, start, Pki, TRUST_DOMAIN};
use crate::support::*;

const SPOOFED: &str = "x-pilotfish-peer-identity: spiffe://pilotfish.local/ns/default/sa/admin";

/// A DENY policy on sidecar `test`'s service for paths under `/admin`, from anyone.
const DENY_ADMIN: &str = "---
apiVersion: pilotfish.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  targetRef: {kind: Service, name: test}
  action: DENY
  rules: [{to: [{paths: ['/admin*']}]}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_callers_meet_the_mesh_default_and_a_rewritten_policy_applies_without_a_restart() {
    let app = backend("app").await;
    let head = sidecar_doc(Some(app.addr), "  accessLog: true\n");
    let sc = Sidecar::start(&head);
    let url = |path: &str| format!("http://{}{path}", sc.inbound.unwrap());

    // Unset: `authenticated`, so a caller without a mesh identity gets 403 from the callee.
    let r = curl(&["-H", SPOOFED, &url("/hello")]).await;
    assert_eq!((r.status, r.header("pilotfish-error")), (403, Some("forbidden")));
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("without a mesh identity"), "{body}");
    assert_eq!(app.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "the app saw nothing");

    // `allow`: admitted, and the identity header a client made up never reaches the app.
    let allow = format!("{head}  authorization: {{default: allow}}\n");
    std::fs::write(&sc.config, &allow).unwrap();
    sc.wait_for_log("version=2").await;
    let r = curl(&["-H", SPOOFED, &url("/hello")]).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("x-pilotfish-peer-identity").is_none(), "{}", r.json());

    // A DENY policy, added to the file: it names itself; other paths still pass.
    std::fs::write(&sc.config, format!("{allow}{DENY_ADMIN}")).unwrap();
    sc.wait_for_log("version=3").await;
    let r = curl(&[&url("/admin/users")]).await;
    assert_eq!((r.status, r.header("pilotfish-error")), (403, Some("forbidden")));
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("AuthorizationPolicy no-admin denies it"), "{body}");
    assert_eq!(curl(&[&url("/hello")]).await.status, 200);

    let m = sc.metrics().await;
    let denied =
        |policy| sample(&m, "pilotfish_authz_denied_total", &[("service", "test"), ("policy", policy)]);
    assert_eq!((denied("default"), denied("no-admin")), (1.0, 1.0));
    let log = sc.stdout();
    let refused = log.lines().find(|l| l.contains("/admin/users")).expect("an access-log line");
    let line: serde_json::Value = serde_json::from_str(refused).unwrap();
    assert_eq!((line["status"].as_u64(), line["error"].as_str()), (Some(403), Some("forbidden")));
    assert!(line["peer"].is_null(), "a plaintext caller has no peer identity: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_grpc_call_is_permission_denied() {
    let app = App::python("grpc_server.py");
    let b = Sidecar::start(&sidecar_doc(Some(app.addr()), "  authorization: {default: deny}\n"));
    let config = format!(
        "{}{}",
        sidecar_doc(None, ""),
        service_doc("echo", &[b.inbound.unwrap()], "  ports: [{port: 50051, protocol: grpc}]\n"),
    );
    let a = Sidecar::start(&config);
    let args = [&a.outbound.to_string(), "echo:50051", "--expect-code", "PERMISSION_DENIED"];
    let out = run_python("grpc_client.py", &args).await;
    assert!(out.starts_with("ok") && out.contains("the mesh default is deny"), "{out}");
}

/// An opaque app: it echoes, and reports each connection it accepts.
async fn opaque_app() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = accepted.send(());
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, rx)
}

/// What a client that connects to `inbound` and waits reads before the connection ends (or 2 s
/// pass).
async fn read_before_end(inbound: SocketAddr, send: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(inbound).await.unwrap();
    if !send.is_empty() {
        s.write_all(send).await.unwrap();
    }
    let mut buf = vec![0; 64];
    match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        Ok(Err(e)) => panic!("expected EOF or data, got {e}"),
        Err(_) => panic!("the connection stayed open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tcp_connection_ends_before_the_app_sees_it() {
    let (app, mut accepted) = opaque_app().await;
    let head = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: test}}\nspec:\n  admin: 127.0.0.1:0\n  outbound: {{listen: 127.0.0.1:0}}\n  inbound: {{listen: 127.0.0.1:0, app: {app}, opaquePorts: [{}]}}\n",
        app.port()
    );
    let sc = Sidecar::start(&head);
    let inbound = sc.inbound.unwrap();
    // The client sends nothing, so the end it reads is a clean EOF, not a reset.
    assert_eq!(read_before_end(inbound, b"").await, b"", "EOF before any byte");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(accepted.try_recv().is_err(), "the app was never connected to");

    std::fs::write(&sc.config, format!("{head}  authorization: {{default: allow}}\n")).unwrap();
    sc.wait_for_log("version=2").await;
    assert_eq!(read_before_end(inbound, b"ping").await, b"ping");
    assert!(accepted.try_recv().is_ok());
    let m = sc.metrics().await;
    assert_eq!(sample(&m, "pilotfish_authz_denied_total", &[("policy", "default")]), 1.0);
}

/// An ALLOW policy on the `api` service for callers with the identity `sa/<account>`.
fn allow_api(account: &str) -> String {
    format!(
        "---\napiVersion: pilotfish.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: api-callers}}\nspec:\n  targetRef: {{kind: Service, name: api}}\n  action: ALLOW\n  rules: [{{from: [{{identity: '{TRUST_DOMAIN}/{account}'}}]}}]\n"
    )
}

/// A sidecar with the mesh identity `sa/<account>` whose registry says `api` is B's inbound
/// port (identity `sa/api`); `service_extra`: more lines under the Service's `spec:`.
fn meshed_caller(pki: &Pki, b: &Sidecar, account: &str, service_extra: &str) -> Sidecar {
    let b_inbound = b.inbound.expect("B listens inbound");
    let config = format!(
        "{}---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: api}}\nspec:\n  endpoints: [{{address: {b_inbound}, identity: '{TRUST_DOMAIN}/api'}}]\n{service_extra}",
        sidecar_doc(None, "  accessLog: true\n").replace("name: test", &format!("name: {account}"))
    );
    start(&config, &pki.args(&pki.fresh(account)))
}

/// `GET /hello` to `api` through `caller`, with a spoofed peer header.
async fn call_api(caller: &Sidecar) -> Reply {
    curl(&["-H", "Host: api", "-H", SPOOFED, &format!("http://{}/hello", caller.outbound)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mtls_the_callee_admits_by_identity_and_a_rewritten_policy_applies_without_a_restart() {
    let pki = Pki::new("mesh");
    let app = backend("api-app").await;
    let b = callee(&pki, app.addr, "strict", &allow_api("web"));
    let (web, other) = (meshed_caller(&pki, &b, "web", ""), meshed_caller(&pki, &b, "other", ""));

    // The allowed identity reaches the app, which reads who called (never the spoofed value).
    let r = call_api(&web).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["headers"]["x-pilotfish-peer-identity"], format!("{TRUST_DOMAIN}/web"));
    // Another identity: 403 from B (the caller learns the service exists, not a 404).
    let r = call_api(&other).await;
    assert_eq!((r.status, r.header("pilotfish-error")), (403, Some("forbidden")));
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains(&format!("{TRUST_DOMAIN}/other may not call api.default")), "{body}");

    // The policy, rewritten in B's file, swaps the two on the next request.
    let config = std::fs::read_to_string(&b.config).unwrap().replace("sa/web'", "sa/other'");
    std::fs::write(&b.config, config).unwrap();
    b.wait_for_log("version=2").await;
    assert_eq!(call_api(&other).await.status, 200);
    assert_eq!(call_api(&web).await.status, 403);

    let m = b.metrics().await;
    let denied = sample(&m, "pilotfish_authz_denied_total", &[("service", "api"), ("policy", "default")]);
    assert_eq!(denied, 2.0);
    let log = b.stdout();
    let refused: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["status"] == 403)
        .collect();
    let peers: Vec<&str> = refused.iter().filter_map(|l| l["peer"].as_str()).collect();
    assert_eq!(peers, [format!("{TRUST_DOMAIN}/other"), format!("{TRUST_DOMAIN}/web")], "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mtls_a_grpc_caller_of_another_identity_gets_permission_denied() {
    let pki = Pki::new("mesh");
    let app = App::python("grpc_server.py");
    let b = callee(&pki, app.addr(), "strict", &allow_api("web"));
    let other = meshed_caller(&pki, &b, "other", "  ports: [{port: 50051, protocol: grpc}]\n");
    let args = [&other.outbound.to_string(), "api:50051", "--expect-code", "PERMISSION_DENIED"];
    let out = run_python("grpc_client.py", &args).await;
    assert!(out.starts_with("ok") && out.contains(&format!("{TRUST_DOMAIN}/other may not call")), "{out}");
    let web = meshed_caller(&pki, &b, "web", "  ports: [{port: 50051, protocol: grpc}]\n");
    let out = run_python("grpc_client.py", &[&web.outbound.to_string(), "api:50051", "--unary-only"]).await;
    assert_eq!(out.trim(), "ok", "the allowed identity's calls go through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mtls_a_denied_tcp_connection_ends_before_the_app_sees_it() {
    let pki = Pki::new("mesh");
    let (app, mut accepted) = opaque_app().await;
    let b = callee(&pki, app, "strict", &allow_api("web"));
    let tcp_port = |local: u16| format!("  ports: [{{port: 7000, protocol: tcp}}]\n  localPort: {local}\n");
    let (other_port, web_port) = (free_port(), free_port());
    let _other = meshed_caller(&pki, &b, "other", &tcp_port(other_port));
    let _web = meshed_caller(&pki, &b, "web", &tcp_port(web_port));
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    assert_eq!(read_before_end(local(other_port), b"").await, b"", "EOF before any byte");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(accepted.try_recv().is_err(), "the app was never connected to");
    // A line that is no HTTP request line: detected as opaque at once (B's app port is not
    // declared opaque, so B checks the bytes are not HTTP before they go to the app raw).
    assert_eq!(read_before_end(local(web_port), b"ping\n").await, b"ping\n");
    assert!(accepted.try_recv().is_ok());
    let m = b.metrics().await;
    assert_eq!(sample(&m, "pilotfish_authz_denied_total", &[("service", "api"), ("policy", "default")]), 1.0);
}
