//! An authenticated control plane, end to end: reads need a token (admin, read-only, or a join
//! token for its sidecar's own calls), read-only tokens cannot write, expired tokens are
//! refused, the operational endpoints stay open; off loopback the API is TLS from the mesh CA,
//! which curl and openssl verify against the CA file, the CLI against `--ca-file` or a pinned
//! fingerprint, and a managed sidecar against the root its join token pins.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pilotfish_api::client::{Client, Trust};

use crate::support::{self, backend};
use crate::{curl, service, ControlPlane, BIN, TOKEN};

#[test]
fn reads_need_a_token_and_a_read_only_token_reads_but_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    cp.cli_ok(&["apply", "-f", &write(dir.path(), "users.yaml", &service("users", 9001))]);
    for path in ["/v1/resources", "/v1/events", "/v1/endpoints", "/v1/proxies", "/v1/diff?from=0", "/v1/ca"] {
        let (status, body) = curl(&[&cp.url(path)]);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("pilotfish token create"), "{path}: {body}");
    }
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &cp.url(path)])
            .output();
        assert_eq!(String::from_utf8_lossy(&out.unwrap().stdout), "200", "{path} stays open");
    }

    let reader = cp.cli_ok(&["token", "create", "--read-only"]).trim().to_owned();
    assert_eq!(reader.split('.').count(), 3, "ID.SECRET.FINGERPRINT: {reader}");
    let bearer = format!("Authorization: Bearer {reader}");
    let (status, body) = curl(&["-H", &bearer, &cp.url("/v1/resources")]);
    assert_eq!((status, body["items"].as_array().map(Vec::len)), (200, Some(1)), "{body}");
    let (status, body) =
        curl(&["-X", "POST", "-H", &bearer, "--data-binary", &service("evil", 1), &cp.url("/v1/resources")]);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("read-only"), "{body}");
    // The CLI with the read-only token: reads work, a write is refused and changes nothing.
    let as_reader = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("PILOTFISH_SERVER", cp.url(""))
            .env("PILOTFISH_TOKEN", &reader)
            .output()
            .unwrap()
    };
    let get = as_reader(&["get", "service", "-o", "json"]);
    assert!(String::from_utf8_lossy(&get.stdout).contains("users"), "{get:?}");
    let delete = as_reader(&["delete", "service", "users"]);
    assert!(
        !delete.status.success() && String::from_utf8_lossy(&delete.stderr).contains("403"),
        "{delete:?}"
    );
    assert!(cp.cli_ok(&["get", "service"]).contains("users"));

    // Tokens with a TTL work until it passes, then are refused like a wrong token.
    let short = cp.cli_ok(&["token", "create", "--read-only", "--ttl", "1s"]).trim().to_owned();
    let join = cp.cli_ok(&["token", "create", "--service", "web", "--ttl", "1s"]).trim().to_owned();
    let lasting = cp.cli_ok(&["token", "create", "--service", "web"]).trim().to_owned();
    assert_eq!(curl(&["-H", &format!("Authorization: Bearer {short}"), &cp.url("/v1/resources")]).0, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let (status, body) = curl(&["-H", &format!("Authorization: Bearer {short}"), &cp.url("/v1/resources")]);
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("expired"), "{body}");
    let push = |token: &str| {
        let bearer = format!("Authorization: Bearer {token}");
        curl(&["--max-time", "2", "-H", &bearer, &cp.url("/v1/push?id=web-1&service=web")]).0
    };
    assert_eq!(push(&join), 401, "an expired join token");
    assert_eq!(push(&lasting), 200, "a join token without --ttl keeps working");
}

#[test]
fn off_loopback_the_api_is_tls_that_curl_openssl_and_the_cli_verify_against_the_mesh_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_on(dir.path(), "0.0.0.0:0");
    let port = cp.addr.port();
    let https = |path: &str| format!("https://127.0.0.1:{port}{path}");
    let ca = dir.path().join("ca/root.pem");
    let ca = ca.to_str().unwrap();

    // curl: verified against the CA file; without it verification fails; plaintext is no answer.
    let code = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(code(&["--cacert", ca, &https("/healthz")]), (Some(0), "200".to_owned()));
    assert_eq!(
        code(&[
            "--cacert",
            ca,
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            &format!("https://localhost:{port}/healthz")
        ])
        .1,
        "200"
    );
    assert_eq!(code(&[&https("/healthz")]).0, Some(60), "curl's own CA store does not know the mesh CA");
    assert_ne!(code(&[&format!("http://127.0.0.1:{port}/healthz")]).1, "200", "no plaintext off loopback");
    let auth = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(code(&["--cacert", ca, &https("/v1/resources")]).1, "401");
    assert_eq!(code(&["--cacert", ca, "-H", &auth, &https("/v1/resources")]).1, "200");
    // HTTP/2 for a client that offers it (a sidecar's push stream and ACKs then share one
    // connection), HTTP/1.1 for one that does not.
    let version = |flag: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_version}", "--max-time", "5", "--cacert", ca, flag])
            .arg(https("/healthz"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(version("--http2"), "2");
    assert_eq!(version("--http1.1"), "1.1");

    // openssl, an independent client: TLS 1.3, and the chain verifies up to the mesh root.
    let s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            ca,
            "-verify_return_error",
            "-showcerts",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s_client.stdout);
    assert!(text.contains("Verify return code: 0 (ok)") && text.contains("TLSv1.3"), "{text}");
    assert_eq!(text.matches("-----BEGIN CERTIFICATE-----").count(), 3, "leaf, issuer, root: {text}");

    // The CLI: --ca-file, a token's pin, and a wrong pin.
    let cli = |args: &[&str], token: &str| {
        Command::new(BIN)
            .args(args)
            .env("PILOTFISH_SERVER", https(""))
            .env("PILOTFISH_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = cli(
        &["--ca-file", ca, "apply", "-f", &write(dir.path(), "users.yaml", &service("users", 9001))],
        TOKEN,
    );
    assert!(out.status.success(), "{out:?}");
    let reader =
        String::from_utf8(cli(&["--ca-file", ca, "token", "create", "--read-only"], TOKEN).stdout).unwrap();
    let out = cli(&["get", "service"], reader.trim());
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("users"),
        "the token's pin: {out:?}"
    );
    let out = cli(&["get", "service"], TOKEN);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--ca-file"), "{out:?}");
    let wrong = "0".repeat(64);
    let out = cli(&["--ca-fingerprint", &wrong, "get", "service"], TOKEN);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("pinned fingerprint"),
        "{out:?}"
    );
    let pin = reader.trim().rsplit('.').next().unwrap().to_owned();
    assert!(cli(&["--ca-fingerprint", &pin, "get", "service"], TOKEN).status.success());
}

#[test]
fn plaintext_off_loopback_takes_insecure_and_without_a_certificate_it_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("refused");
    let out = Command::new(BIN)
        .args([
            "control-plane",
            "--admin-token",
            TOKEN,
            "--listen",
            "0.0.0.0:0",
            "--tls-san",
            "ünïcode.example",
        ])
        .args(["--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tls-san") && err.contains("--insecure"), "{err}");

    let cp = ControlPlane::launch(&[
        "--listen",
        "0.0.0.0:0",
        "--insecure",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let (status, _) = curl(&[&format!("http://127.0.0.1:{}/healthz", cp.addr.port())]);
    assert_eq!(status, 200);
    assert!(cp.log.lock().unwrap().contains("plaintext on a non-loopback address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_sidecar_joins_an_https_control_plane_with_its_join_token_and_goes_on_with_its_certificate()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // 6 s leaves renew every ~4 s: after the join token below has expired.
    let cp = tokio::task::block_in_place(|| {
        ControlPlane::launch(&["--listen", "0.0.0.0:0", "--data-dir", data, "--cert-ttl", "6s"])
    });
    let url = format!("https://127.0.0.1:{}", cp.addr.port());
    let trust = Trust::ca_file(&dir.path().join("ca/root.pem")).unwrap();
    let admin = Client::builder(&url).token(Some(TOKEN.into())).trust(Some(trust)).build();
    let users = backend("users").await;
    admin.apply(&service("users", users.addr.port())).await.unwrap();
    let request = pilotfish_api::wire::TokenRequest {
        ttl: Some("3s".parse().unwrap()),
        ..pilotfish_api::wire::TokenRequest::join("web", "default")
    };
    let token = admin.create_token(&request).await.unwrap().token;
    let expired_at = std::time::Instant::now() + Duration::from_secs(3);

    let sc = crate::managed::managed_at(&url, "web", &token, &[], &[]);
    let target = format!("http://{}/", sc.outbound);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while support::curl(&["-H", "Host: users", &target]).await.status != 200 {
        assert!(std::time::Instant::now() < deadline, "the sidecar never got its configuration over https");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let proxies = admin.proxies().await.unwrap();
    assert!(proxies.items.iter().any(|p| p.service == "web" && p.connected), "{proxies:?}");

    // Once the token has expired, the sidecar renews and ACKs with its mesh certificate.
    tokio::time::sleep(expired_at.saturating_duration_since(std::time::Instant::now())).await;
    let renewals = async || {
        support::sample(&sc.metrics().await, "pilotfish_identity_cert_renewals_total", &[("result", "ok")])
    };
    let before = renewals().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while renewals().await < before + 2.0 {
        assert!(std::time::Instant::now() < deadline, "no renewal after the token expired: {}", sc.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed = support::sample(
        &sc.metrics().await,
        "pilotfish_identity_cert_renewals_total",
        &[("result", "error")],
    );
    assert_eq!(failed, 0.0, "no renewal was refused: {}", sc.stderr());
    let applied = admin.apply(&service("users", users.addr.port()).replace("users", "users2")).await.unwrap();
    let version = applied.applied.iter().filter_map(|a| a.seq).max().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let proxies = admin.proxies().await.unwrap();
        let web = proxies.items.iter().find(|p| p.service == "web").unwrap();
        if web.acked_version >= version {
            assert!(web.certificate.is_some(), "{web:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no ACK after the token expired: {web:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}
