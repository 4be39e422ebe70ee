//! Mesh mTLS between two static sidecars given certificate files from one test CA: A calls
//! the `api` service, whose endpoint is B's inbound port with B's identity in the registry.
//! Checked the way an attacker would: a capture of the wire between them, and openssl s_client
//! as the independent client B must refuse.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

pub const TRUST_DOMAIN: &str = "spiffe://pilotfish.local/ns/default/sa";

/// A root and the intermediate that issues leaves, with their files in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf's files: the certificate alone, the chain (leaf then intermediate), the key.
pub struct Leaf {
    cert: PathBuf,
    chain: PathBuf,
    key: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = ca_params(&format!("{name} root"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let mut params = ca_params(&format!("{name} intermediate"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let intermediate = CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &root).unwrap();
        std::fs::write(dir.path().join("bundle.pem"), root.pem()).unwrap();
        std::fs::write(dir.path().join("intermediate.pem"), intermediate.pem()).unwrap();
        Pki { dir, intermediate }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle.pem")
    }

    fn intermediate(&self) -> PathBuf {
        self.dir.path().join("intermediate.pem")
    }

    /// A leaf for `account`, valid from `not_before` to `not_after` seconds from now.
    fn leaf(&self, account: &str, not_before: i64, not_after: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names =
            vec![SanType::URI(format!("{TRUST_DOMAIN}/{account}").try_into().unwrap())];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, not_before, not_after);
        let cert = params.signed_by(&key, &self.intermediate).unwrap();
        let name = format!("{account}{not_before}{not_after}");
        let path = |ext: &str| self.dir.path().join(format!("{name}.{ext}"));
        std::fs::write(path("pem"), cert.pem()).unwrap();
        std::fs::write(path("chain.pem"), format!("{}{}", cert.pem(), self.intermediate.pem())).unwrap();
        std::fs::write(path("key"), key.serialize_pem()).unwrap();
        Leaf { cert: path("pem"), chain: path("chain.pem"), key: path("key") }
    }

    /// A leaf for `account`, backdated a minute and valid for a day, as the mesh CA issues.
    pub fn fresh(&self, account: &str) -> Leaf {
        self.leaf(account, -60, 24 * 3600)
    }

    /// The flags that give a static sidecar this identity.
    pub fn args(&self, leaf: &Leaf) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--tls-cert".into(),
            path(&leaf.chain),
            "--tls-key".into(),
            path(&leaf.key),
            "--trust-bundle".into(),
            path(&self.bundle()),
        ]
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, -3600, 10 * 365 * 24 * 3600);
    params
}

fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs((now + not_before) as u64);
    params.not_after = epoch + Duration::from_secs((now + not_after) as u64);
}

pub fn start(config: &str, args: &[String]) -> Sidecar {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Sidecar::start_in(config, &args, None)
}

/// B: the `api` service's sidecar, in front of `app`, its inbound port in `mode`, with the
/// identity `sa/api`. `extra`: more YAML lines under `spec:`.
pub fn callee(pki: &Pki, app: SocketAddr, mode: &str, extra: &str) -> Sidecar {
    let config = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: api}}\nspec:\n  admin: 127.0.0.1:0\n  outbound: {{listen: 127.0.0.1:0}}\n  inbound: {{listen: 127.0.0.1:0, app: {app}, mtls: {{mode: {mode}}}}}\n  accessLog: true\n{extra}"
    );
    start(&config, &pki.args(&pki.fresh("api")))
}

/// A: a caller whose registry says `service` is B's inbound port with identity `sa/<claimed>`.
/// `service_extra`: more YAML lines under the Service's `spec:`.
fn caller(pki: &Pki, b: &Sidecar, service: &str, claimed: &str, service_extra: &str) -> Sidecar {
    let b_inbound = b.inbound.expect("B listens inbound");
    let config = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: web}}\nspec:\n  admin: 127.0.0.1:0\n  outbound: {{listen: 127.0.0.1:0}}\n  accessLog: true\n---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: {service}}}\nspec:\n  endpoints: [{{address: {b_inbound}, identity: '{TRUST_DOMAIN}/{claimed}'}}]\n{service_extra}"
    );
    start(&config, &pki.args(&pki.fresh("web")))
}

/// Polls `sc`'s metrics until `name{labels}` reaches `at_least`.
async fn counted(sc: &Sidecar, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = sample(&sc.metrics().await, name, labels);
        if value >= at_least {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{name}{labels:?} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The access-log lines of `sc` for HTTP requests.
fn http_log(sc: &Sidecar) -> Vec<serde_json::Value> {
    sc.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["kind"] == "http")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_app_gets_the_call_over_mtls_and_the_wire_between_sidecars_shows_no_plaintext() {
    let pki = Pki::new("mesh");
    let app = backend("api-app").await;
    let b = callee(&pki, app.addr, "strict", "");
    let a = caller(&pki, &b, "api", "api", "");
    let port = b.inbound.unwrap().port();

    let pcap = tempfile::NamedTempFile::new().unwrap();
    let mut capture = tokio::process::Command::new("tcpdump")
        // Immediate mode: packets are handed over as they come, not in blocks that a stop
        // before the block's timeout would leave unwritten.
        .args(["-i", "lo", "--immediate-mode", "-U", "-w"])
        .arg(pcap.path())
        .args(["tcp", "port", &port.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump is installed (scripts/test.sh installs it)");
    let mut stderr = capture.stderr.take().unwrap();
    let mut said = Vec::new();
    while !String::from_utf8_lossy(&said).contains("listening on") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), stderr.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "tcpdump did not start: {}", String::from_utf8_lossy(&said));
        said.extend_from_slice(&buf[..n]);
    }
    // "listening" comes a moment before the first packet is seen.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let marker = format!("x-marker: pilotfish-plaintext-{}", std::process::id());
    let r = curl(&["-H", "Host: api", "-H", &marker, &format!("http://{}/hello", a.outbound)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = r.json();
    // The app got the request, marker and all, in the HTTP version A's app spoke...
    assert_eq!(seen["backend"], "api-app");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert!(seen["headers"]["x-marker"].as_str().unwrap().starts_with("pilotfish-plaintext-"));
    assert!(seen["headers"].get("pilotfish-orig-proto").is_none(), "the sidecars' mark stays theirs");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let status =
        std::process::Command::new("kill").args(["-INT", &capture.id().unwrap().to_string()]).status();
    assert!(status.unwrap().success());
    capture.wait().await.unwrap();
    stderr.read_to_end(&mut said).await.unwrap();
    let wire = std::fs::read(pcap.path()).unwrap();
    // ...while the packets between the sidecars carry bytes, none of them the marker.
    let said = String::from_utf8_lossy(&said);
    assert!(wire.len() > 1000, "the capture holds the exchange ({} bytes): {said}", wire.len());
    let needle = b"pilotfish-plaintext-";
    assert!(!wire.windows(needle.len()).any(|w| w == needle), "the marker crossed the wire in plaintext");

    // B's side knows who called, and that it was mTLS.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = http_log(&b).into_iter().find(|l| l["direction"] == "inbound") {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "no inbound access-log line: {}", b.stdout());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (line["tls"].as_str(), line["peer"].as_str()),
        (Some("mtls"), Some(&*format!("{TRUST_DOMAIN}/web")))
    );
    let outbound =
        http_log(&a).into_iter().find(|l| l["direction"] == "outbound").expect("A logged the call");
    assert_eq!(outbound["tls"], "mtls");
    assert_eq!(
        sample(&a.metrics().await, "pilotfish_mesh_connections_opened_total", &[("direction", "outbound")]),
        1.0
    );
    assert_eq!(
        sample(&b.metrics().await, "pilotfish_mesh_connections_opened_total", &[("direction", "inbound")]),
        1.0
    );
}

/// `openssl s_client` offering the mesh ALPN to `addr`, with `cert_args`; sends a request and
/// returns what came back (B refuses in TLS 1.3 after the client finished: on the first read).
async fn s_client(addr: SocketAddr, cert_args: &[String]) -> String {
    let mut child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-alpn",
            "pilotfish.io/h2",
            "-quiet",
            "-no_ign_eof",
        ])
        .args(cert_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    // The request is out; at the end of input s_client closes and exits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output()).await.unwrap().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_inbound_refuses_plaintext_and_every_bad_client_certificate_each_by_reason() {
    let (pki, other) = (Pki::new("mesh"), Pki::new("other"));
    let app = backend("api-app").await;
    let b = callee(&pki, app.addr, "strict", "");
    let inbound = b.inbound.unwrap();
    let refused = "pilotfish_inbound_tls_refused_total";

    let r = curl(&[&format!("http://{inbound}/hello")]).await;
    assert_eq!((r.status, r.header("pilotfish-error")), (403, Some("forbidden")));
    counted(&b, refused, &[("reason", "plaintext")], 1.0).await;

    let said = s_client(inbound, &[]).await;
    assert!(!said.contains("\"backend\""), "{said}");
    counted(&b, refused, &[("reason", "no_client_cert")], 1.0).await;

    let stranger = other.fresh("web");
    let path = |p: &PathBuf| p.display().to_string();
    let with = |leaf: &Leaf, chain: &PathBuf| {
        vec![
            "-cert".into(),
            path(&leaf.cert),
            "-key".into(),
            path(&leaf.key),
            "-cert_chain".into(),
            path(chain),
        ]
    };
    s_client(inbound, &with(&stranger, &other.intermediate())).await;
    counted(&b, refused, &[("reason", "unknown_ca")], 1.0).await;

    let expired = pki.leaf("web", -7200, -3600);
    s_client(inbound, &with(&expired, &pki.intermediate())).await;
    counted(&b, refused, &[("reason", "expired")], 1.0).await;

    // The app never heard of any of them, and a good client still gets through.
    assert_eq!(app.served(), 0);
    let a = caller(&pki, &b, "api", "api", "");
    let r = curl(&["-H", "Host: api", &format!("http://{}/hello", a.outbound)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.served(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_proves_another_identity_gets_502_and_is_counted() {
    let pki = Pki::new("mesh");
    let app = backend("api-app").await;
    let b = callee(&pki, app.addr, "strict", "");
    // The registry says the endpoint is `billing`; B proves `api`.
    let a = caller(&pki, &b, "billing", "billing", "");
    let r = curl(&["-H", "Host: billing", &format!("http://{}/hello", a.outbound)]).await;
    assert_eq!((r.status, r.header("pilotfish-error")), (502, Some("upstream-identity")));
    assert!(String::from_utf8_lossy(&r.body).contains("api"), "{}", String::from_utf8_lossy(&r.body));
    counted(&a, "pilotfish_outbound_tls_identity_mismatch_total", &[("service", "billing.default")], 1.0)
        .await;
    assert_eq!(app.served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_http1_requests_travel_on_one_connection_between_the_sidecars() {
    let pki = Pki::new("mesh");
    let app = backend("api-app").await;
    let b = callee(&pki, app.addr, "strict", "");
    let a = caller(&pki, &b, "api", "api", "");
    let url = format!("http://{}/slow/300", a.outbound);
    let codes = curl_many(50, 50, &["-H", "Host: api", "--http1.1"], &url).await;
    assert_eq!(codes, vec![200; 50]);
    let port = b.inbound.unwrap().port();
    let ss = std::process::Command::new("ss")
        .args(["-Htn", "state", "established", &format!("( dport = :{port} )")])
        .output()
        .unwrap();
    let connections = String::from_utf8_lossy(&ss.stdout).lines().count();
    assert_eq!(connections, 1, "{}", String::from_utf8_lossy(&ss.stdout));
    let m = a.metrics().await;
    assert_eq!(sample(&m, "pilotfish_mesh_connections_opened_total", &[("direction", "outbound")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_and_a_websocket_cross_the_mesh() {
    let pki = Pki::new("mesh");
    // Raw TCP: an echo server behind B, a `tcp` port on A's side.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let b = callee(&pki, echo_addr, "strict", "");
    let local = free_port();
    let a = caller(
        &pki,
        &b,
        "echo",
        "api",
        &format!("  ports: [{{port: 7000, protocol: tcp}}]\n  localPort: {local}\n"),
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    s.write_all(b"bytes through the mesh").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, b"bytes through the mesh");
    assert_eq!(
        sample(&a.metrics().await, "pilotfish_mesh_connections_opened_total", &[("direction", "outbound")]),
        1.0
    );

    // A WebSocket: an HTTP/1.1 upgrade on a mesh connection of its own.
    let ws = App::python("ws_echo.py");
    let b = callee(&pki, ws.addr(), "strict", "");
    let a = caller(&pki, &b, "echo", "api", "");
    let out = run_python("ws_client.py", &["127.0.0.1", &a.outbound.port().to_string(), "echo"]).await;
    assert_eq!(out.trim(), "ok");
    assert_eq!(
        sample(&b.metrics().await, "pilotfish_mesh_connections_opened_total", &[("direction", "inbound")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_inbound_takes_mesh_mtls_and_plaintext_alike() {
    let pki = Pki::new("mesh");
    let app = backend("api-app").await;
    // The mesh default would refuse a caller without an identity; this test is about mTLS.
    let b = callee(&pki, app.addr, "permissive", "  authorization: {default: allow}\n");
    let r = curl(&[&format!("http://{}/hello", b.inbound.unwrap())]).await;
    assert_eq!(r.status, 200);
    let a = caller(&pki, &b, "api", "api", "");
    let r = curl(&["-H", "Host: api", &format!("http://{}/hello", a.outbound)]).await;
    assert_eq!(r.status, 200);
    // Access log lines are written off the request path: they may follow the response.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let tls: Vec<String> =
            http_log(&b).iter().map(|l| l["tls"].as_str().unwrap_or("").to_owned()).collect();
        if tls.contains(&"plaintext".to_owned()) && tls.contains(&"mtls".to_owned()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{tls:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sample(&b.metrics().await, "pilotfish_inbound_tls_refused_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_a_caller_sends_as_opaque_tcp_still_takes_the_callees_l7_path() {
    // A caller that declares B's HTTP port `tcp` (by mistake, or to get past B's HTTP checks)
    // must not reach B's app raw: B detects the HTTP, strips the claimed identity header and
    // sets the verified one, as for any meshed request.
    let pki = Pki::new("mesh");
    let app = backend("api-app").await;
    let b = callee(&pki, app.addr, "strict", "  authorization: {default: allow}\n");
    let local = free_port();
    let _a = caller(
        &pki,
        &b,
        "api",
        "api",
        &format!("  ports: [{{port: 7000, protocol: tcp}}]\n  localPort: {local}\n"),
    );
    let spoof = format!("x-pilotfish-peer-identity: {TRUST_DOMAIN}/admin");
    let r = curl(&["-H", &spoof, &format!("http://127.0.0.1:{local}/hello")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = r.json();
    assert_eq!(seen["backend"], "api-app");
    assert_eq!(seen["headers"]["x-pilotfish-peer-identity"], format!("{TRUST_DOMAIN}/web"), "{seen}");
}
