//! The mesh CA through the real control plane, checked with openssl as the independent client:
//! a CSR asking for another identity gets the join token's; bad callers are refused (and
//! counted); registration records the token's identity; the push stream carries the trust
//! bundle; the root survives a restart; replicas on etcd share one CA under a seal key, and one
//! without a way to share it refuses to start.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pilotfish_api::client::{Client, ClientError};
use pilotfish_api::wire::{CertifyRequest, EndpointQuery, PushQuery, Registration, TokenRequest};

use crate::ha::Etcd;
use crate::managed::eventually;
use crate::{ControlPlane, BIN, SEAL_KEY, TOKEN};

/// What the CSR asks for: the admin's identity, which the CA must not give.
const GREEDY: &str = "URI:spiffe://pilotfish.local/ns/default/sa/admin";

/// `openssl <args>` in `dir`: its success and its output.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A CSR made by openssl for a fresh P-256 key, asking for [`GREEDY`].
pub(crate) fn greedy_csr(dir: &Path) -> String {
    let san = format!("subjectAltName={GREEDY}");
    let mut args: Vec<&str> =
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=admin -out leaf.csr"
            .split(' ')
            .collect();
    args.extend(["-addext", san.as_str()]);
    let (ok, out) = openssl(dir, &args);
    assert!(ok, "{out}");
    std::fs::read_to_string(dir.join("leaf.csr")).unwrap()
}

/// A join token for `service` in the default namespace.
async fn join_token(cp: &ControlPlane, service: &str) -> String {
    let request = TokenRequest::join(service, "default");
    cp.client().create_token(&request).await.unwrap().token
}

fn as_caller(cp: &ControlPlane, token: &str) -> Client {
    Client::builder(&cp.url("")).token(Some(token.into())).timeout(Duration::from_secs(20)).build()
}

/// The value of the metric sample `name` (with its labels) on `/metrics`.
async fn metric(cp: &ControlPlane, name: &str) -> f64 {
    let text = crate::support::curl(&[&cp.url("/metrics")]).await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}:\n{text}"));
    line[name.len()..].trim().parse().unwrap()
}

/// The SHA-256 fingerprints of the roots `/v1/ca` lists.
async fn roots(cp: &ControlPlane) -> Vec<String> {
    cp.client().ca_status().await.unwrap().roots.into_iter().map(|r| r.fingerprint).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_gives_the_token_identity_whatever_the_csr_asks_and_refuses_other_callers() {
    let data = tempfile::tempdir().unwrap();
    let cp = tokio::task::block_in_place(|| ControlPlane::start(data.path()));
    let dir = tempfile::tempdir().unwrap();
    let csr = greedy_csr(dir.path());
    let web = join_token(&cp, "web").await;

    let issued = as_caller(&cp, &web).certify(&CertifyRequest::new(csr.clone())).await.unwrap();
    assert_eq!(issued.identity.to_string(), "spiffe://pilotfish.local/ns/default/sa/web");
    std::fs::write(dir.path().join("chain.pem"), &issued.chain_pem).unwrap();
    let (ok, san) = openssl(dir.path(), &["x509", "-in", "chain.pem", "-noout", "-ext", "subjectAltName"]);
    assert!(ok, "{san}");
    assert!(san.contains("URI:spiffe://pilotfish.local/ns/default/sa/web"), "{san}");
    assert!(!san.contains("sa/admin"), "the CSR's name was ignored: {san}");

    // The bundle from the CLI verifies the chain, as a peer's openssl would.
    let bundle = tokio::task::block_in_place(|| cp.cli_ok(&["ca", "bundle"]));
    assert_eq!(bundle, issued.trust_bundle_pem);
    std::fs::write(dir.path().join("bundle.pem"), &bundle).unwrap();
    let (ok, out) =
        openssl(dir.path(), &["verify", "-CAfile", "bundle.pem", "-untrusted", "chain.pem", "chain.pem"]);
    assert!(ok && out.contains("chain.pem: OK"), "{out}");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let raw = crate::support::curl(&["-H", &bearer, &cp.url("/v1/ca/bundle")]).await;
    assert_eq!(raw.header("content-type"), Some("text/plain; charset=utf-8"));

    // A bad token, the admin token (no identity), a CSR that is not one: refused, and counted.
    let body = serde_json::to_string(&CertifyRequest::new(csr)).unwrap();
    let url = cp.url("/v1/ca/certify");
    let post = async |token: &str, body: &str| {
        let auth = format!("Authorization: Bearer {token}");
        let json = "Content-Type: application/json";
        let reply =
            crate::support::curl(&["-X", "POST", "-H", &auth, "-H", json, "--data-binary", body, &url]).await;
        (reply.status, reply.json())
    };
    let (status, answer) = post("nope.nope", &body).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = post(TOKEN, &body).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("admin token has no mesh identity"), "{answer}");
    let (status, answer) = post(&web, r#"{"csr": "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("PKCS#10"), "{answer}");
    assert_eq!(metric(&cp, "pilotfish_ca_certs_issued_total").await, 1.0);
    for reason in ["unauthenticated", "no_identity", "bad_request"] {
        let sample = format!("pilotfish_ca_certify_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&cp, &sample).await, 1.0, "{reason}");
    }
    let fingerprint = roots(&cp).await.remove(0);
    let root_gauge = format!("pilotfish_ca_root_expiry_timestamp_seconds{{root=\"{}\"}}", &fingerprint[..16]);
    let in_nine_years = (std::time::SystemTime::now() + Duration::from_secs(9 * 365 * 86400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(metric(&cp, &root_gauge).await > in_nine_years);
    assert!(metric(&cp, "pilotfish_ca_issuer_expiry_timestamp_seconds").await > 0.0);

    let status = tokio::task::block_in_place(|| cp.cli_ok(&["ca", "status"]));
    assert!(status.contains("trust domain:     pilotfish.local"), "{status}");
    assert!(status.contains(&fingerprint), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_records_the_token_identity_and_the_push_line_carries_the_bundle() {
    let data = tempfile::tempdir().unwrap();
    let cp = tokio::task::block_in_place(|| ControlPlane::start(data.path()));
    let web = as_caller(&cp, &join_token(&cp, "web").await);
    let own = "spiffe://pilotfish.local/ns/default/sa/web";

    web.register(&Registration::new("web", "default", "127.0.0.1:9001".parse().unwrap(), 30)).await.unwrap();
    let mut foreign = Registration::new("web", "default", "127.0.0.1:9002".parse().unwrap(), 30);
    foreign.identity = Some("spiffe://pilotfish.local/ns/default/sa/payments".into());
    match web.register(&foreign).await {
        Err(ClientError::Forbidden(body)) => assert!(body.error.contains(own), "{}", body.error),
        other => panic!("a foreign identity was not refused: {other:?}"),
    }
    // The admin registers any identity.
    foreign.address = "127.0.0.1:9003".parse().unwrap();
    cp.client().register(&foreign).await.unwrap();
    let items = cp.client().endpoints(&EndpointQuery::default()).await.unwrap().items;
    let mut identities: Vec<_> =
        items.iter().map(|i| (i.endpoint.address.port(), i.endpoint.identity.clone().unwrap())).collect();
    identities.sort();
    assert_eq!(
        identities,
        [(9001, own.to_owned()), (9003, "spiffe://pilotfish.local/ns/default/sa/payments".to_owned())]
    );

    let query = PushQuery {
        id: "web-1".into(),
        service: "web".into(),
        namespace: "default".into(),
        version: 0,
        protocol: None,
    };
    let pilotfish_api::client::PushMessage::Config(line) =
        web.push(&query).await.unwrap().next().await.unwrap()
    else {
        panic!("a snapshot first")
    };
    let mesh = line.mesh.expect("the push line carries the mesh settings");
    assert_eq!(mesh.trust_domain, "pilotfish.local");
    assert_eq!(mesh.trust_bundle_pem, cp.client().ca_bundle().await.unwrap());
    assert_eq!(mesh.authz_default, pilotfish_api::authz::MeshDefault::Authenticated);
    assert!(line.config.contains(own), "the pushed endpoint names its identity: {}", line.config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_data_dir_keeps_the_root() {
    let data = tempfile::tempdir().unwrap();
    let mut cp = tokio::task::block_in_place(|| ControlPlane::start(data.path()));
    let before = roots(&cp).await;
    tokio::task::block_in_place(|| cp.kill());
    let cp = tokio::task::block_in_place(|| ControlPlane::start(data.path()));
    assert_eq!(roots(&cp).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_etcd_with_one_seal_key_issue_under_one_root_and_one_without_refuses_to_start() {
    let etcd = tokio::task::block_in_place(Etcd::start);
    let a = tokio::task::block_in_place(|| ControlPlane::start_etcd(&etcd.url));
    let b = tokio::task::block_in_place(|| ControlPlane::start_etcd(&etcd.url));
    assert_eq!(roots(&a).await, roots(&b).await);
    let dir = tempfile::tempdir().unwrap();
    let csr = greedy_csr(dir.path());
    let token = join_token(&a, "web").await;
    std::fs::write(dir.path().join("bundle.pem"), a.client().ca_bundle().await.unwrap()).unwrap();
    for (name, replica) in [("a", &a), ("b", &b)] {
        let issued = as_caller(replica, &token).certify(&CertifyRequest::new(csr.clone())).await.unwrap();
        let file = format!("{name}.pem");
        std::fs::write(dir.path().join(&file), issued.chain_pem).unwrap();
        let (ok, out) = openssl(dir.path(), &["verify", "-CAfile", "bundle.pem", "-untrusted", &file, &file]);
        assert!(ok, "replica {name}'s leaf does not chain to the shared root: {out}");
    }
    let events = a.client().events(&Default::default()).await.unwrap().events;
    assert!(events.iter().all(|e| !e.data.to_string().contains("PRIVATE")), "no key in the log");

    let started = |extra: &[&str]| {
        let mut args = vec!["control-plane", "--listen", "127.0.0.1:0", "--store", etcd.url.as_str()];
        args.extend(extra);
        Command::new(BIN)
            .args(&args)
            .env("PILOTFISH_ADMIN_TOKEN", TOKEN)
            .env_remove("PILOTFISH_CA_SEAL_KEY")
            .output()
    };
    let out = tokio::task::block_in_place(|| started(&[]).unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--ca-cert/--ca-key") && stderr.contains("--ca-seal-key"), "{stderr}");
    let wrong = "another-seal-key-0123456789abcdef0123456789";
    let out = tokio::task::block_in_place(|| started(&["--ca-seal-key", wrong]).unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("seal key the first one used"), "{stderr}");
    assert_ne!(wrong, SEAL_KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_etcd_replica_reaches_the_other_which_then_issues_under_the_new_root() {
    let etcd = tokio::task::block_in_place(Etcd::start);
    let a = tokio::task::block_in_place(|| ControlPlane::start_etcd(&etcd.url));
    let b = tokio::task::block_in_place(|| ControlPlane::start_etcd(&etcd.url));
    let old = roots(&a).await;
    // No sidecar is connected: nothing to wait for but the overlap.
    let out = tokio::task::block_in_place(|| a.cli_ok(&["ca", "rotate", "--overlap", "1s", "--wait"]));
    assert!(out.contains("rotation done"), "{out}");
    let new = roots(&a).await;
    assert_eq!(new.len(), 1);
    assert_ne!(new, old);
    eventually("the other replica follows the log to the new root", async || {
        (roots(&b).await == new).then_some(())
    })
    .await;

    // The other replica signs with the new issuer, unsealed from etcd.
    let dir = tempfile::tempdir().unwrap();
    let csr = greedy_csr(dir.path());
    let token = join_token(&a, "web").await;
    std::fs::write(dir.path().join("bundle.pem"), b.client().ca_bundle().await.unwrap()).unwrap();
    let issued = as_caller(&b, &token).certify(&CertifyRequest::new(csr)).await.unwrap();
    std::fs::write(dir.path().join("leaf.pem"), &issued.chain_pem).unwrap();
    let (ok, out) =
        openssl(dir.path(), &["verify", "-CAfile", "bundle.pem", "-untrusted", "leaf.pem", "leaf.pem"]);
    assert!(ok, "the leaf chains to the new root: {out}");
    let events = a.client().events(&Default::default()).await.unwrap().events;
    assert!(events.iter().all(|e| !e.data.to_string().contains("PRIVATE")), "no key in the log");
}

#[test]
fn over_tls_a_sidecar_goes_on_with_its_mesh_certificate_once_its_join_token_expired() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_on(dir.path(), "0.0.0.0:0");
    let https = format!("https://127.0.0.1:{}", cp.addr.port());
    let ca = dir.path().join("ca/root.pem");
    // curl, an independent client: (HTTP status, body).
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--max-time", "5", "--cacert", ca.to_str().unwrap()])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.to_owned(), body.to_owned())
    };
    let admin = format!("Authorization: Bearer {TOKEN}");
    let (status, body) = curl(&[
        "-H",
        &admin,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"service": "web", "ttl": "3s"}"#,
        &format!("{https}/v1/tokens"),
    ]);
    assert_eq!(status, "201", "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let join = format!("Authorization: Bearer {}", token["token"].as_str().unwrap());

    // Certified with the join token while it lasts.
    let certify_body = serde_json::json!({ "csr": greedy_csr(dir.path()) }).to_string();
    let certify = |extra: &[&str]| {
        let url = format!("{https}/v1/ca/certify");
        let mut args = vec!["-H", "content-type: application/json", "-d", &certify_body];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    // A certificate the mesh does not trust (another CA's, or an expired one) locks nobody out:
    // it passes the handshake, and the join token still counts.
    let rogue = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rogue.key -out rogue.pem -subj /CN=rogue -days 1";
    let mut args: Vec<&str> = rogue.split(' ').collect();
    args.extend(["-addext", "subjectAltName=URI:spiffe://pilotfish.local/ns/default/sa/web"]);
    let (ok, out) = openssl(dir.path(), &args);
    assert!(ok, "{out}");
    let (status, body) = certify(&["-H", &join, "--cert", "rogue.pem", "--key", "rogue.key"]);
    assert_eq!(status, "200", "{body}");
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    std::fs::write(dir.path().join("leaf.pem"), issued["chainPem"].as_str().unwrap()).unwrap();
    let own = "spiffe://pilotfish.local/ns/default/sa/web";

    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(certify(&["-H", &join]).0, "401", "the join token expired");
    let with_cert = ["--cert", "leaf.pem", "--key", "leaf.key"];
    let (status, body) = certify(&with_cert);
    assert_eq!(status, "200", "renewed with the mesh certificate: {body}");
    assert!(body.contains(own), "{body}");
    let push = format!("{https}/v1/push?id=web-1&service=web");
    let mut args = with_cert.to_vec();
    args.extend(["--max-time", "1", &push]);
    let (status, _) = curl(&args);
    assert_eq!(status, "200", "its push stream opens");
    let other = format!("{https}/v1/push?id=pay-1&service=payments");
    let (status, _) = curl(&[with_cert.as_slice(), &[&other]].concat());
    assert_eq!(status, "403", "as its own service only");
    let (status, _) = curl(&[with_cert.as_slice(), &[&format!("{https}/v1/resources")]].concat());
    assert_eq!(status, "401", "no more than its join token could");
    assert_eq!(certify(&[]).0, "401", "nothing proven, nothing given");

    // A certificate from another CA proves nothing.
    let (status, _) = certify(&["--cert", "rogue.pem", "--key", "rogue.key"]);
    assert_eq!(status, "401", "a certificate of another CA is no credential");
}
