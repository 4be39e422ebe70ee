//! Micro-benchmarks of the per-connection and per-request hot paths: protocol detection, service
//! lookup by host among 1,000 services, route matching among 1,000 rules, hop-by-hop header
//! handling, endpoint choice (L4 round-robin, L7 power of two choices), metric recording, the
//! per-edge telemetry accounting (a response accounted with and without it, side by side), the
//! tap check every request makes when no one taps (a request's lookup with and without it, side
//! by side), rate-limit checks, and a hop's trace context with traces off, on but unsampled, and
//! sampled (its span exported), side by side. Run: `cargo bench -p pilotfish-sidecar --bench
//! hot_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pilotfish_sidecar::http::correlation::next_hop;
use pilotfish_sidecar::http::headers::strip_hop_by_hop;
use pilotfish_sidecar::http::outbound::endpoint::choose;
use pilotfish_sidecar::listener::detect::classify;
use pilotfish_sidecar::resilience::ratelimit::limiter::{RateLimiter, Window};
use pilotfish_sidecar::snapshot::route::{RouteSource, RouteTable};
use pilotfish_sidecar::snapshot::{Overrides, Snapshot};
use pilotfish_sidecar::tcp::forward::pick;
use pilotfish_sidecar::telemetry::edges::grpc_ok;
use pilotfish_sidecar::telemetry::metrics::{Direction, Metrics};
use pilotfish_sidecar::telemetry::tap::Tap;
use pilotfish_sidecar::telemetry::trace::{HopSpan, Sampling, Tracing};
use std::sync::Arc;
use std::time::Duration;

fn config(services: usize) -> String {
    let mut text =
        String::from("apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {name: bench}\nspec: {}\n");
    for i in 0..services {
        text.push_str(&format!(
            "---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  ports: [{{port: 80, protocol: http}}]\n  endpoints: [{{address: 10.0.{}.{}:8080}}, {{address: 10.1.{}.{}:8080}}]\n",
            i / 250, i % 250, i / 250, i % 250
        ));
    }
    text
}

fn detection(c: &mut Criterion) {
    let h1 = b"GET /api/users/42?expand=true HTTP/1.1\r\nHost: users\r\nAccept: */*\r\n\r\n";
    let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    let opaque = b"\x0a\x00\x00\x00\x0a8.0.36\x00mysql-greeting";
    c.bench_function("detect/http1", |b| b.iter(|| classify(black_box(h1))));
    c.bench_function("detect/http2", |b| b.iter(|| classify(black_box(h2))));
    c.bench_function("detect/opaque", |b| b.iter(|| classify(black_box(opaque))));
}

fn routing(c: &mut Criterion) {
    let metrics = Metrics::new();
    let snap = Snapshot::build("bench", &config(1000), &Overrides::default(), None, &metrics).unwrap();
    c.bench_function("route/by_authority_short_of_1000", |b| {
        b.iter(|| snap.service_by_authority(black_box("svc-517")).unwrap())
    });
    c.bench_function("route/by_authority_fqdn_port_of_1000", |b| {
        b.iter(|| snap.service_by_authority(black_box("svc-517.default.svc.cluster.local:80")).unwrap())
    });
    c.bench_function("route/miss_of_1000", |b| {
        b.iter(|| snap.service_by_authority(black_box("nobody.default")))
    });
    let svc = snap.service("svc-517.default").unwrap().clone();
    c.bench_function("endpoint/pick_round_robin", |b| {
        b.iter(|| pick(&svc, tokio::time::Instant::now(), &[]).unwrap().addr)
    });
    c.bench_function("endpoint/choose_p2c_ewma", |b| {
        b.iter(|| choose(&svc, tokio::time::Instant::now(), None, &[]).unwrap().addr)
    });
    let ep = svc.endpoints[0].clone();
    c.bench_function("metrics/record_status", |b| {
        b.iter(|| ep.metrics.record(black_box(http::StatusCode::OK)))
    });
    c.bench_function("config/build_1000_services", |b| {
        let text = config(1000);
        b.iter(|| Snapshot::build("bench", &text, &Overrides::default(), Some(&snap), &metrics).unwrap())
    });
}

/// What `respond` does per response: the Prometheus duration and status, without and with the
/// telemetry edge (the request path's whole cost of the control plane's telemetry): the edge of
/// the route that sent the request found among the endpoint's (three routes send it traffic),
/// the count added; for a gRPC call with its status in the trailers, the edge held until they
/// come and their grpc-status read.
fn accounting(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut text = config(1);
    for name in ["a", "b", "c"] {
        text.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{name: svc-0}}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]}}]\n"
        ));
    }
    let snap = Snapshot::build("bench", &text, &Overrides::default(), None, &metrics).unwrap();
    let svc = snap.service("svc-0.default").unwrap().clone();
    let route = svc.routes.select(&http::Method::GET, "/c/x", None, &HeaderMap::new()).unwrap().rule.route_id;
    let ep = svc.endpoints[0].clone();
    let target = metrics.target(pilotfish_sidecar::telemetry::metrics::Direction::Outbound, "svc-0.default");
    let mut answered = HeaderMap::new();
    answered.insert("content-type", HeaderValue::from_static("application/grpc"));
    answered.insert("grpc-status", HeaderValue::from_static("0"));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let elapsed = Duration::from_micros(2300);
    let mut group = c.benchmark_group("respond_accounting");
    group.bench_function("without_telemetry", |b| {
        b.iter(|| {
            target.duration.observe(black_box(elapsed).as_secs_f64());
            ep.metrics.record(black_box(http::StatusCode::OK));
        })
    });
    group.bench_function("with_telemetry", |b| {
        b.iter(|| {
            target.duration.observe(black_box(elapsed).as_secs_f64());
            ep.metrics.record(black_box(http::StatusCode::OK));
            if let Some(edge) = ep.metrics.edge(black_box(route)) {
                edge.record(black_box(200), None, black_box(elapsed));
            }
        })
    });
    // A gRPC call answered in its headers (trailers-only): they are looked at for a grpc-status.
    group.bench_function("with_telemetry_grpc", |b| {
        b.iter(|| {
            target.duration.observe(black_box(elapsed).as_secs_f64());
            ep.metrics.record(black_box(http::StatusCode::OK));
            if let Some(edge) = ep.metrics.edge(black_box(route)) {
                edge.record(black_box(200), Some(black_box(&answered)), black_box(elapsed));
            }
        })
    });
    // A gRPC call whose status comes in the trailers: the body holds the edge until then.
    group.bench_function("with_telemetry_grpc_trailers", |b| {
        b.iter(|| {
            target.duration.observe(black_box(elapsed).as_secs_f64());
            ep.metrics.record(black_box(http::StatusCode::OK));
            if let Some(edge) = ep.metrics.edge(black_box(route)) {
                let held = black_box(edge.clone());
                held.record_outcome(grpc_ok(black_box(&trailers)), black_box(elapsed));
            }
        })
    });
    group.finish();
}

fn tap_check(c: &mut Criterion) {
    // What `record_for` adds to every request: whether a tap samples it. With no one tapping
    // (every sidecar, nearly always) that is one atomic load; measured beside the service
    // lookup and access-log check a request makes anyway.
    let metrics = Metrics::new();
    let snap = Snapshot::build("bench", &config(100), &Overrides::default(), None, &metrics).unwrap();
    let tap = Tap::default();
    let (get, path) = (http::Method::GET, "/api/users/42");
    let mut group = c.benchmark_group("tap_check");
    group.bench_function("request_without_tap", |b| {
        b.iter(|| {
            let svc = snap.service_by_authority(black_box("svc-57")).unwrap();
            black_box(svc.key.len()) > 0 && black_box(snap.sidecar.access_log)
        })
    });
    group.bench_function("request_with_inactive_tap", |b| {
        b.iter(|| {
            let svc = snap.service_by_authority(black_box("svc-57")).unwrap();
            let tapped = tap.sample(black_box(&get), black_box(path));
            black_box(svc.key.len()) > 0 && (black_box(snap.sidecar.access_log) || tapped)
        })
    });
    group.bench_function("inactive_check_alone", |b| b.iter(|| tap.sample(black_box(&get), black_box(path))));
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut typical = HeaderMap::new();
    for (k, v) in [
        ("host", "users.default"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("content-type", "application/json"),
        ("content-length", "128"),
        ("x-request-id", "7f9c2ba4-e88f-4d2a-9c3b-0f1e2d3c4b5a"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
    ] {
        typical.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    c.bench_function("headers/clone_baseline", |b| b.iter(|| black_box(typical.clone())));
    c.bench_function("headers/clone_and_strip_hop_by_hop", |b| {
        b.iter_batched(
            || typical.clone(),
            |mut h| {
                strip_hop_by_hop(&mut h, false);
                h
            },
            BatchSize::SmallInput,
        )
    });
}

fn route_matching(c: &mut Criterion) {
    // 1,000 rules on one service: path prefixes, a tenth of them also matching a header.
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: big}\nspec:\n  parentRefs: [{name: users}]\n  rules:\n",
    );
    for i in 0..1000 {
        if i % 10 == 0 {
            text.push_str(&format!(
                "  - matches: [{{path: {{type: PathPrefix, value: /svc-{i}/api}}, headers: [{{name: x-tenant, value: t{i}}}]}}]\n"
            ));
        } else {
            text.push_str(&format!(
                "  - matches: [{{path: {{type: PathPrefix, value: /svc-{i}/api}}, method: GET}}]\n"
            ));
        }
    }
    let resources = pilotfish_api::parse_stream("bench", &text).unwrap();
    let pilotfish_api::Resource::HttpRoute(route) = &resources[0] else { unreachable!() };
    let source = RouteSource { name: "default/big".into(), id: 1, spec: &route.spec, rate_limit: None };
    let table = RouteTable::compile(&Arc::from("users.default"), "default", &[source]);
    let headers = HeaderMap::new();
    let get = http::Method::GET;
    c.bench_function("route/1000_rules_first", |b| {
        b.iter(|| {
            table
                .select(&get, black_box("/svc-999/api/users/42"), None, &headers)
                .unwrap()
                .rule
                .backends
                .len()
        })
    });
    c.bench_function("route/1000_rules_middle", |b| {
        b.iter(|| {
            table
                .select(&get, black_box("/svc-501/api/users/42"), None, &headers)
                .unwrap()
                .rule
                .backends
                .len()
        })
    });
    c.bench_function("route/1000_rules_miss", |b| {
        b.iter(|| table.select(&get, black_box("/nowhere/at/all"), None, &headers).is_none())
    });
    c.bench_function("route/default_route", |b| {
        let default = RouteTable::default_for(Arc::from("users.default"));
        b.iter(|| {
            default.select(&get, black_box("/api/users/42"), None, &headers).unwrap().rule.backends.len()
        })
    });
}

fn rate_limits(c: &mut Criterion) {
    // perMinute and perHour as in the API-gateway example, with limits no bench run reaches so
    // that every check admits and counts.
    let windows = || {
        vec![
            Window { period: Duration::from_secs(60), limit: u32::MAX },
            Window { period: Duration::from_secs(3_600), limit: u32::MAX },
        ]
    };
    let unkeyed = RateLimiter::new(windows(), None, 100_000);
    c.bench_function("ratelimit/check_unkeyed", |b| {
        b.iter(|| unkeyed.check(None, tokio::time::Instant::now()).allowed)
    });
    let keyed = RateLimiter::new(windows(), None, 100_000);
    let keys: Vec<String> = (0..10_000).map(|i| format!("api-key-{i:08}")).collect();
    for key in &keys {
        keyed.check(Some(key.as_bytes()), tokio::time::Instant::now());
    }
    let mut next = 0;
    c.bench_function("ratelimit/check_one_of_10000_keys", |b| {
        b.iter(|| {
            next = (next + 7_919) % keys.len();
            keyed.check(Some(keys[next].as_bytes()), tokio::time::Instant::now()).allowed
        })
    });
}

/// An exporter that drops what it gets: the batch processor's thread runs as with a collector,
/// and the request path's share (the span built and queued) is what is measured.
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

/// What a request without a `traceparent` costs in trace context: the header written (traces
/// off), the sampling decision too (on, not sampled), and the span built, ended and queued for
/// export (sampled).
fn tracing(c: &mut Criterion) {
    let req = http::Request::get("/api/users/42").body(()).unwrap();
    let (service, route): (Arc<str>, Arc<str>) = ("users.default".into(), "default/users".into());
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(Discard).build();
    let sampled = Tracing::with_processor(Sampling::ALL, "bench", processor);
    let unsampled = Sampling::ratio(0.0);
    let mut group = c.benchmark_group("trace_hop");
    group.bench_function("traces_off", |b| {
        b.iter_batched(HeaderMap::new, |mut h| (next_hop(&mut h, None), h), BatchSize::SmallInput)
    });
    group.bench_function("unsampled", |b| {
        b.iter_batched(HeaderMap::new, |mut h| (next_hop(&mut h, unsampled), h), BatchSize::SmallInput)
    });
    group.bench_function("sampled_span", |b| {
        b.iter_batched(
            HeaderMap::new,
            |mut h| {
                let hop = next_hop(&mut h, Some(sampled.sampling())).expect("sampled");
                let span = HopSpan::start(hop, Direction::Outbound, &req);
                span.learned.routed(&service, &route);
                span.end(&sampled, http::StatusCode::OK, None, None);
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    detection,
    routing,
    accounting,
    tap_check,
    headers,
    route_matching,
    rate_limits,
    tracing
);
criterion_main!(benches);
