//! Traces over OTLP/HTTP: sidecars started with `--otlp-endpoint` export a span per hop to a
//! receiver that decodes them with the official OpenTelemetry protobufs
//! (`tests/python/otlp_receiver.py`); the spans carry the ids of the `traceparent` headers the
//! app sees, new traces are sampled by `--trace-sampling`, a sampled flag that arrives decides,
//! a collector that never answers costs no request, and an https collector is verified.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;

use crate::support::*;

/// Batches go out every 100 ms instead of the SDK's 5 s, so that tests wait little.
const QUICK_EXPORT: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

struct Receiver {
    app: App,
    scheme: &'static str,
}

impl Receiver {
    fn start() -> Self {
        Self { app: App::python("otlp_receiver.py"), scheme: "http" }
    }

    /// Serving https with this certificate chain and key.
    fn start_tls(cert: &Path, key: &Path) -> Self {
        let args = ["--tls", cert.to_str().unwrap(), key.to_str().unwrap()];
        Self { app: App::python_with("otlp_receiver.py", &args), scheme: "https" }
    }

    fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.app.addr())
    }

    /// Every span received so far (the receiver's JSON), once none failed to decode.
    async fn spans(&self) -> Vec<Value> {
        let r = curl(&["--insecure", &format!("{}/spans", self.endpoint())]).await;
        assert_eq!(r.header("x-bad-requests"), Some("0"), "exports that did not decode");
        r.json().as_array().unwrap().clone()
    }

    /// The spans once `done` holds of them; panics after 10 s.
    async fn spans_until(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans().await;
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "spans never came: {spans:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A sidecar named `name` exporting to `receiver`, sampling `ratio` of new traces.
fn traced(name: &str, config: &str, receiver: &str, ratio: &str) -> Sidecar {
    let config = config.replacen("metadata: {name: test}", &format!("metadata: {{name: {name}}}"), 1);
    let args = ["--otlp-endpoint", receiver, "--trace-sampling", ratio];
    Sidecar::start_with(&config, &args, &[QUICK_EXPORT])
}

fn of_trace<'a>(spans: &'a [Value], trace: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["traceId"] == trace).collect()
}

/// `00-TRACE-SPAN-FLAGS` as the app saw it.
fn traceparent(reply: &Reply) -> Vec<String> {
    let seen = reply.json()["headers"]["traceparent"].as_str().unwrap().to_owned();
    seen.split('-').map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hops_export_a_span_each_with_the_traceparent_ids() {
    let receiver = Receiver::start();
    let app = backend("app").await;
    let api = traced("api", &sidecar_doc(Some(app.addr), PLAINTEXT_INBOUND), &receiver.endpoint(), "1");
    let web_config = format!("{}{}", sidecar_doc(None, ""), service_doc("api", &[api.inbound.unwrap()], ""));
    let web = traced("web", &web_config, &receiver.endpoint(), "1");
    let url = format!("http://{}/hello", web.outbound);

    // client → web (CLIENT span) → api (SERVER span) → app.
    let (trace, caller) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let given = format!("traceparent: 00-{trace}-{caller}-01");
    let r = curl(&["-H", "Host: api", "-H", &given, &url]).await;
    assert_eq!(r.status, 200);
    let seen = traceparent(&r);
    assert_eq!((seen[1].as_str(), seen[3].as_str()), (trace, "01"), "{seen:?}");
    // A request that starts its trace at web, and one web answers itself.
    let fresh = curl(&["-H", "Host: api", &url]).await;
    let fresh_trace = traceparent(&fresh)[1].clone();
    let refused = curl(&[
        "-H",
        "Host: nobody",
        "-H",
        "traceparent: 00-11111111111111111111111111111111-2222222222222222-01",
        &url,
    ])
    .await;
    assert_eq!(refused.status, 404);

    let spans = receiver.spans_until(|s| s.len() >= 5).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let hops = of_trace(&spans, trace);
    let client = hops.iter().find(|s| s["kind"] == "SPAN_KIND_CLIENT").expect("web's span");
    let server = hops.iter().find(|s| s["kind"] == "SPAN_KIND_SERVER").expect("api's span");
    assert_eq!(client["service"], "web");
    assert_eq!(client["parentSpanId"], caller, "web's span is the caller's child");
    assert_eq!(server["service"], "api");
    assert_eq!(server["parentSpanId"], client["spanId"], "api's span is web's child");
    assert_eq!(server["spanId"], seen[2].as_str(), "the app's parent is api's span");
    for span in [client, server] {
        assert_eq!(span["name"], "GET");
        assert_eq!(span["attributes"]["http.request.method"], "GET");
        assert_eq!(span["attributes"]["url.path"], "/hello");
        assert_eq!(span["attributes"]["http.response.status_code"], 200);
        assert_eq!(span["status"], "STATUS_CODE_UNSET");
        let (start, end) = (span["startNanos"].as_u64().unwrap(), span["endNanos"].as_u64().unwrap());
        assert!(start > 0 && start <= end, "{span}");
    }
    assert_eq!(client["attributes"]["peer.service"], "api.default");
    // The server span's inside the client's.
    assert!(client["startNanos"].as_u64() <= server["startNanos"].as_u64());
    assert!(server["endNanos"].as_u64() <= client["endNanos"].as_u64());

    let started = of_trace(&spans, &fresh_trace);
    assert_eq!(started.len(), 2, "{started:#?}");
    let root = started.iter().find(|s| s["kind"] == "SPAN_KIND_CLIENT").unwrap();
    assert_eq!(root["parentSpanId"], "", "a trace web starts has its root there");

    let [local] = of_trace(&spans, "11111111111111111111111111111111")[..] else { panic!("{spans:#?}") };
    assert_eq!(local["attributes"]["pilotfish.error"], "no-route");
    assert_eq!(local["attributes"]["http.response.status_code"], 404);
    assert_eq!(local["status"], "STATUS_CODE_ERROR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ratio_samples_its_share_of_new_traces_and_a_flag_that_arrives_decides() {
    let receiver = Receiver::start();
    let app = backend("app").await;
    let config = format!("{}{}", sidecar_doc(None, ""), service_doc("app", &[app.addr], ""));
    let tenth = traced("web", &config, &receiver.endpoint(), "0.1");
    let url = format!("http://{}/", tenth.outbound);

    let statuses = curl_many(1000, 4, &["-H", "Host: app"], &url).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // Unsampled flags pass on as they are, even at ratio 1 elsewhere; a sampled one is
    // exported whatever the ratio: the last request, so that once its span is in, all are.
    let off = "00-33333333333333333333333333333333-4444444444444444-00";
    let on = "00-55555555555555555555555555555555-6666666666666666-01";
    let r = curl(&["-H", "Host: app", "-H", &format!("traceparent: {off}"), &url]).await;
    assert_eq!(traceparent(&r)[3], "00");
    curl(&["-H", "Host: app", "-H", &format!("traceparent: {on}"), &url]).await;

    let spans = receiver.spans_until(|s| !of_trace(s, "55555555555555555555555555555555").is_empty()).await;
    assert!(of_trace(&spans, "33333333333333333333333333333333").is_empty());
    // 100 expected of the 1,000 new traces; the standard deviation is 9.5, so 60..=140 fails a
    // correct sidecar less than once in 10,000 runs.
    let new = spans.len() - 1;
    assert!((60..=140).contains(&new), "{new} of 1000 new traces sampled at 0.1");

    // Ratio 0: no new trace, but a sampled flag that arrives is still honoured.
    let none_receiver = Receiver::start();
    let none = traced("web", &config, &none_receiver.endpoint(), "0");
    let url = format!("http://{}/", none.outbound);
    let statuses = curl_many(100, 4, &["-H", "Host: app"], &url).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let r = curl(&["-H", "Host: app", &url]).await;
    assert_eq!(traceparent(&r)[3], "00", "new traces go on flagged unsampled");
    curl(&["-H", "Host: app", "-H", &format!("traceparent: {on}"), &url]).await;
    let spans = none_receiver.spans_until(|s| !s.is_empty()).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0]["traceId"], "55555555555555555555555555555555");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_no_request() {
    // It accepts connections (the kernel's backlog) but never reads them, so every export waits
    // for its timeout while spans pile up.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let app = backend("app").await;
    let config = format!("{}{}", sidecar_doc(None, ""), service_doc("app", &[app.addr], ""));
    let sc = traced("web", &config, &endpoint, "1");
    let url = format!("http://{}/", sc.outbound);
    let started = Instant::now();
    let statuses = curl_many(3000, 8, &["-H", "Host: app"], &url).await;
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 3000, "every request answered");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(sc.admin_get("/ready").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_collector_is_verified_against_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cert, key) =
        (dir.path().join("root.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "collector root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&leaf_key, &ca).unwrap();
    std::fs::write(&root, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let receiver = Receiver::start_tls(&cert, &key);
    let app = backend("app").await;
    let config = format!("{}{}", sidecar_doc(None, ""), service_doc("app", &[app.addr], ""));
    let args = ["--otlp-endpoint", &receiver.endpoint()];

    // The system's roots, as SSL_CERT_FILE names them, include the collector's.
    let root_env = ("SSL_CERT_FILE", root.to_str().unwrap());
    let trusting = Sidecar::start_with(&config, &args, &[QUICK_EXPORT, root_env]);
    let r = curl(&["-H", "Host: app", &format!("http://{}/", trusting.outbound)]).await;
    let trace = traceparent(&r)[1].clone();
    let spans = receiver.spans_until(|s| !s.is_empty()).await;
    assert_eq!(spans[0]["traceId"], trace.as_str());

    // Another root only: the export fails (and says so), the request does not.
    let elsewhere = dir.path().join("other.pem");
    let other =
        CertifiedIssuer::self_signed(CertificateParams::default(), KeyPair::generate().unwrap()).unwrap();
    std::fs::write(&elsewhere, other.pem()).unwrap();
    let wary =
        Sidecar::start_with(&config, &args, &[QUICK_EXPORT, ("SSL_CERT_FILE", elsewhere.to_str().unwrap())]);
    let r = curl(&["-H", "Host: app", &format!("http://{}/", wary.outbound)]).await;
    assert_eq!(r.status, 200);
    wary.wait_for_log("trace export failed").await;
    assert!(wary.stderr().contains("UnknownIssuer"), "the log says why: {}", wary.stderr());
    assert_eq!(receiver.spans().await.len(), 1);
}

#[test]
fn bad_trace_flags_are_refused_naming_the_flag() {
    let refused = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("sidecar")
            .args(["--config", "/nonexistent.yaml"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = refused(&["--otlp-endpoint", "http://127.0.0.1:4318", "--trace-sampling", "1.5"]);
    assert!(e.contains("--trace-sampling") && e.contains("from 0.0"), "{e}");
    let e = refused(&["--otlp-endpoint", "http://127.0.0.1:4318", "--trace-sampling", "some"]);
    assert!(e.contains("--trace-sampling") && e.contains("not a ratio"), "{e}");
    let e = refused(&["--otlp-endpoint", "ftp://collector"]);
    assert!(e.contains("--otlp-endpoint") && e.contains("http:// or https://"), "{e}");
    let e = refused(&["--otlp-endpoint", "collector"]);
    assert!(e.contains("--otlp-endpoint") && e.contains("not a URL"), "{e}");
    let e = refused(&["--trace-sampling", "0.5"]);
    assert!(e.contains("--otlp-endpoint"), "sampling without a collector: {e}");
}
