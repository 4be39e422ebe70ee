//! The sidecar's mesh identity: static mode's certificate files (reported, reloaded on change,
//! a bad replacement refused), and managed mode's certificate from a real control plane's CA
//! (renewed, kept through a CA outage).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pilotfish_api::client::Client;
use pilotfish_api::wire::TokenRequest;
use sha2::{Digest, Sha256};

use crate::support::*;

/// A test CA made with the openssl CLI: a self-signed root that signs leaves with a SPIFFE URI
/// SAN, as the mesh CA's leaves carry.
struct OpensslCa {
    dir: tempfile::TempDir,
}

impl OpensslCa {
    fn new() -> Self {
        let ca = OpensslCa { dir: tempfile::tempdir().unwrap() };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ca
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(self.dir.path()).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `(cert, key)` PEM files of a leaf for `spiffe://pilotfish.local/ns/default/sa/<account>`.
    fn leaf(&self, account: &str) -> (PathBuf, PathBuf) {
        let (key, csr, pem, ext) = (
            format!("{account}.key"),
            format!("{account}.csr"),
            format!("{account}.pem"),
            format!("{account}.ext"),
        );
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={account}"),
        ]);
        let extensions = format!(
            "subjectAltName=URI:spiffe://pilotfish.local/ns/default/sa/{account}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
        );
        std::fs::write(self.path(&ext), extensions).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ]);
        (self.path(&pem), self.path(&key))
    }

    /// The root's SHA-256 fingerprint, lowercase hex of its DER, as `/identity` reports it.
    fn root_fingerprint(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-in", "ca.pem", "-outform", "DER"])
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        Sha256::digest(&out.stdout).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Polls `/identity` until `check` holds (generous bound).
async fn identity_until(
    sc: &Sidecar,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = sc.admin_get("/identity").await;
        assert_eq!(reply.status, 200);
        let report = reply.json();
        if check(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "never: {what}; last report {report}\n{}", sc.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Copies `from` over `to` by writing a new file and renaming it, as a deployment tool does.
fn replace(from: &Path, to: &Path) {
    let staged = to.with_extension("new");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_identity_files_are_reported_and_reloaded_on_change() {
    let ca = OpensslCa::new();
    let (web_cert, web_key) = ca.leaf("web");
    let (api_cert, api_key) = ca.leaf("api");
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("tls.crt"), files.path().join("tls.key"));
    replace(&web_cert, &cert);
    replace(&web_key, &key);
    let (cert_arg, key_arg, bundle_arg) =
        (cert.to_str().unwrap(), key.to_str().unwrap(), ca.path("ca.pem").to_str().unwrap().to_owned());
    let args = ["--tls-cert", cert_arg, "--tls-key", key_arg, "--trust-bundle", &bundle_arg];
    let sc = Sidecar::start_in(&sidecar_doc(None, ""), &args, None);

    let report = sc.admin_get("/identity").await.json();
    assert_eq!(report["mode"], "files");
    assert_eq!(report["id"], "spiffe://pilotfish.local/ns/default/sa/web");
    assert_eq!(report["roots"], serde_json::json!([ca.root_fingerprint()]));
    assert_eq!(report["lastRenewal"]["result"], "ok");
    assert!(report["nextRenewal"].is_null(), "files are not renewed: {report}");
    assert_eq!(sc.admin_get("/ready").await.status, 200);
    let m = sc.metrics().await;
    let expiry = sample(&m, "pilotfish_identity_cert_expiry_timestamp_seconds", &[]);
    assert!(expiry > now_unix() + 3600.0 && expiry < now_unix() + 2.0 * 86400.0, "expiry {expiry}");
    let fingerprint = ca.root_fingerprint();
    assert_eq!(sample(&m, "pilotfish_identity_root_info", &[("fingerprint", &fingerprint)]), 1.0);

    // Another identity's files: picked up without a restart.
    replace(&api_key, &key);
    replace(&api_cert, &cert);
    identity_until(&sc, "the new certificate is in force", |r| {
        r["id"] == "spiffe://pilotfish.local/ns/default/sa/api"
    })
    .await;

    // A certificate from another CA does not chain to the bundle: refused, the identity stays.
    let stranger = OpensslCa::new();
    let (other_cert, other_key) = stranger.leaf("intruder");
    replace(&other_key, &key);
    replace(&other_cert, &cert);
    let report = identity_until(&sc, "the stranger's certificate is refused", |r| {
        r["lastRenewal"]["result"] == "error"
    })
    .await;
    assert_eq!(report["id"], "spiffe://pilotfish.local/ns/default/sa/api");
    assert!(report["lastRenewal"]["error"].as_str().unwrap().contains("does not chain"), "{report}");
    sc.wait_for_log("identity files rejected, the identity in force stays").await;
    assert_eq!(sc.admin_get("/ready").await.status, 200);
}

#[test]
fn identity_files_come_all_three_or_not_at_all() {
    let ca = OpensslCa::new();
    let (cert, _) = ca.leaf("web");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), sidecar_doc(None, "")).unwrap();
    let out = Command::new(BIN)
        .args(["sidecar", "--config", config.path().to_str().unwrap(), "--tls-cert", cert.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--tls-key") && stderr.contains("--trust-bundle"), "{stderr}");
}

#[test]
fn unusable_identity_files_at_start_say_why_and_exit_nonzero() {
    let ca = OpensslCa::new();
    let (web_cert, _) = ca.leaf("web");
    let (_, api_key) = ca.leaf("api");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), sidecar_doc(None, "")).unwrap();
    let bundle = ca.path("ca.pem");
    let out = Command::new(BIN)
        .args(["sidecar", "--config", config.path().to_str().unwrap()])
        .args(["--tls-cert", web_cert.to_str().unwrap(), "--tls-key", api_key.to_str().unwrap()])
        .args(["--trust-bundle", bundle.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no usable mesh identity") && stderr.contains("web.pem"), "{stderr}");
}

const ADMIN_TOKEN: &str = "identity-test-admin";

/// A real `pilotfish control-plane` (and so the mesh CA) on a fixed loopback address, so that
/// it can be killed and started again where its sidecars look for it; killed on drop.
struct ControlPlane {
    child: std::process::Child,
    url: String,
}

impl ControlPlane {
    fn start(data_dir: &Path, listen: &str, cert_ttl: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["control-plane", "--admin-token", ADMIN_TOKEN, "--listen", listen, "--cert-ttl", cert_ttl])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(listen).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("control plane exited with {status}");
            }
            assert!(Instant::now() < deadline, "control plane did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        ControlPlane { child, url }
    }

    fn client(&self) -> Client {
        Client::builder(&self.url).token(Some(ADMIN_TOKEN.into())).timeout(Duration::from_secs(20)).build()
    }

    /// A managed sidecar of `service`, with that service's join token.
    async fn sidecar(&self, service: &str) -> Sidecar {
        let request = TokenRequest::join(service, "default");
        let token = self.client().create_token(&request).await.unwrap().token;
        let args = [
            "--control-plane",
            &self.url,
            "--service",
            service,
            "--token",
            &token,
            "--admin",
            "127.0.0.1:0",
            "--outbound",
            "127.0.0.1:0",
        ];
        tokio::task::block_in_place(|| Sidecar::start_managed(&args))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn renewals(sc: &Sidecar, result: &str) -> f64 {
    sample(&sc.metrics().await, "pilotfish_identity_cert_renewals_total", &[("result", result)])
}

/// Polls until `check` holds (generous bound), returning its value.
async fn eventually<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_sidecar_gets_its_identity_from_the_control_plane_and_renews_it() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path(), &listen, "5s"));
    let sc = cp.sidecar("web").await;
    let started = Instant::now();
    let report = identity_until(&sc, "the CA's certificate is in force", |r| !r["id"].is_null()).await;
    assert_eq!(report["id"], "spiffe://pilotfish.local/ns/default/sa/web");
    assert_eq!(report["mode"], "control-plane");
    let ca = cp.client().ca_status().await.unwrap();
    let roots: Vec<String> = ca.roots.into_iter().map(|r| r.fingerprint).collect();
    assert_eq!(report["roots"], serde_json::json!(roots));
    assert!(report["nextRenewal"].is_string(), "{report}");
    assert_eq!(sc.admin_get("/ready").await.status, 200);
    let m = sc.metrics().await;
    assert_eq!(sample(&m, "pilotfish_identity_root_info", &[("fingerprint", &roots[0])]), 1.0);
    let expiry = sample(&m, "pilotfish_identity_cert_expiry_timestamp_seconds", &[]);
    assert!(expiry > now_unix() && expiry < now_unix() + 6.0, "a 5 s certificate: {expiry}");

    // 5 s certificates renewed at ~3.5 s: the first and two renewals within ~12 s.
    eventually("two renewals", Duration::from_secs(15), async || {
        (renewals(&sc, "ok").await >= 3.0).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(14), "{:?}", started.elapsed());
    assert_eq!(renewals(&sc, "error").await, 0.0);
    let later = sc.admin_get("/identity").await.json();
    assert_ne!(later["notAfter"], report["notAfter"]);
    assert_eq!(later["id"], report["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_control_plane_down_the_sidecar_keeps_its_certificate_and_renews_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path(), &listen, "12s"));
    let sc = cp.sidecar("web").await;
    let first = identity_until(&sc, "the first certificate", |r| !r["id"].is_null()).await;
    cp.kill();

    // The renewal due at ~8 s fails; the certificate in force stays, valid, and the sidecar ready.
    eventually("a failed renewal", Duration::from_secs(15), async || {
        (renewals(&sc, "error").await >= 1.0).then_some(())
    })
    .await;
    let report = sc.admin_get("/identity").await.json();
    assert_eq!((&report["id"], &report["notAfter"]), (&first["id"], &first["notAfter"]));
    assert_eq!(report["lastRenewal"]["result"], "error");
    let expiry = sample(&sc.metrics().await, "pilotfish_identity_cert_expiry_timestamp_seconds", &[]);
    assert!(expiry > now_unix(), "still valid: {report}");
    assert_eq!(sc.admin_get("/ready").await.status, 200);

    // Back (same data directory, so the same CA): the next retry renews.
    let _cp = tokio::task::block_in_place(|| ControlPlane::start(dir.path(), &listen, "12s"));
    let renewed = identity_until(&sc, "a renewal after the outage", |r| {
        r["notAfter"] != first["notAfter"] && r["lastRenewal"]["result"] == "ok"
    })
    .await;
    assert_eq!(renewed["id"], "spiffe://pilotfish.local/ns/default/sa/web");
    assert!(renewals(&sc, "ok").await >= 2.0);
}
