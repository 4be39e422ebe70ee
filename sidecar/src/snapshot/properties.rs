//! Property tests of configuration as the sidecar takes it: any stream of resource documents —
//! plausible ones with numbers at and past every edge (0, 1, limits and limits + 1, 2^31, 2^32,
//! 2^63, u64::MAX, negatives, huge durations), and garbage — is either rejected with an error
//! that names the document and field, or builds a snapshot that then serves a request without a
//! panic.
//!
//! Serving is done in-process on the built snapshot, the way the request path uses it (endpoint
//! choice, route selection, weighted backend, rate limits, retry budget and backoff, breaker,
//! deadlines, the health-check timer): thousands of cases run in seconds, where a real listener
//! per case would not; the end-to-end tests send real requests for the cases that once crashed.

use std::fmt::Write;

use http::{HeaderMap, Method};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tokio::sync::Semaphore;
use tower::retry::budget::Budget;

use crate::resilience::retry;
use crate::snapshot::build::BuildError;
use crate::snapshot::{Overrides, Snapshot};
use crate::telemetry::metrics::Metrics;

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "5",
    "50",
    "100",
    "101",
    "1023",
    "1024",
    "65535",
    "65536",
    "1000000",
    "1000001",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "0.2",
    "1e-40",
    "10.5",
    "1e309",
    ".nan",
    "-.inf",
    "null",
    "''",
    "abc",
];

const DURATIONS: &[&str] = &[
    "0s",
    "1ms",
    "25ms",
    "1s",
    "30s",
    "1h",
    "24h",
    "24h1ms",
    "25h",
    "720h",
    "721h",
    "99999h",
    "99999h99999h99999h99999h",
    "99999999h",
    "1h30m",
    "-1s",
    "1.5s",
    "''",
    "2d",
];

const NAMES: &[&str] = &["users", "billing", "web"];

/// Mostly plausible values, so that many streams get past validation and are served; often an
/// edge, so that every bound is probed.
fn number() -> BoxedStrategy<String> {
    prop_oneof![
        10 => (1u64..200).prop_map(|n| n.to_string()),
        3 => prop::sample::select(NUMBERS).prop_map(str::to_owned),
        2 => any::<u32>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

/// Usually in `lo..=hi`, sometimes any number.
fn within(lo: u64, hi: u64) -> BoxedStrategy<String> {
    prop_oneof![4 => (lo..=hi).prop_map(|n| n.to_string()), 1 => number()].boxed()
}

fn port() -> BoxedStrategy<String> {
    within(1, 65535)
}

fn duration() -> BoxedStrategy<String> {
    let unit = prop::sample::select(&["ms", "s", "m", "h"][..]);
    prop_oneof![
        8 => (1u32..5000).prop_map(|n| format!("{n}ms")),
        2 => prop::sample::select(DURATIONS).prop_map(str::to_owned),
        1 => (0u32..100_000, unit).prop_map(|(n, u)| format!("{n}{u}")),
        1 => number(),
    ]
    .boxed()
}

fn name() -> BoxedStrategy<String> {
    prop::sample::select(NAMES).prop_map(str::to_owned).boxed()
}

fn maybe(value: BoxedStrategy<String>) -> BoxedStrategy<Option<String>> {
    option::weighted(0.5, value).boxed()
}

/// A YAML flow mapping of the fields that are present.
fn map(fields: &[(&str, &Option<String>)]) -> String {
    let mut out = String::from("{");
    for (key, value) in fields {
        if let Some(value) = value {
            let sep = if out.len() > 1 { ", " } else { "" };
            let _ = write!(out, "{sep}{key}: {value}");
        }
    }
    out + "}"
}

fn list(items: Vec<String>) -> String {
    format!("[{}]", items.join(", "))
}

fn document(api_version: &str, kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n")
}

const PILOTFISH: &str = "pilotfish.io/v1alpha1";

fn sidecar() -> impl Strategy<Value = String> {
    let timeouts = vec(maybe(duration()), 5);
    let limits = (maybe(number()), maybe(within(1024, 70_000)), maybe(number()), maybe(number()))
        .prop_map(|(c, b, h, s)| vec![c, b, h, s]);
    let inbound = maybe(
        (port(), maybe(port()))
            .prop_map(|(app, opaque)| {
                let opaque = opaque.map(|p| format!("[{p}]"));
                map(&[("app", &Some(format!("127.0.0.1:{app}"))), ("opaquePorts", &opaque)])
            })
            .boxed(),
    );
    (timeouts, limits, inbound).prop_map(|(t, l, inbound)| {
        let timeouts =
            map(&[("connect", &t[0]), ("idle", &t[1]), ("detect", &t[2]), ("headerRead", &t[3]), ("drain", &t[4])]);
        let limits = map(&[
            ("maxConnections", &l[0]),
            ("maxHeaderBytes", &l[1]),
            ("maxHeaders", &l[2]),
            ("maxConcurrentStreams", &l[3]),
        ]);
        let spec = format!(
            "{{admin: 127.0.0.1:0, outbound: {{listen: 127.0.0.1:0}}, timeouts: {timeouts}, limits: {limits}{}}}",
            inbound.map(|i| format!(", inbound: {i}")).unwrap_or_default()
        );
        document(PILOTFISH, "Sidecar", "web", &spec)
    })
}

/// The `Service` named `NAMES[i]` (the names policies and routes refer to).
fn service(i: usize) -> impl Strategy<Value = String> {
    let protocol = prop::sample::select(&["http", "http2", "grpc", "tcp"][..]);
    let ports =
        vec((port(), protocol).prop_map(|(p, proto)| format!("{{port: {p}, protocol: {proto}}}")), 0..3);
    let endpoints = vec(port().prop_map(|p| format!("{{address: '127.0.0.1:{p}'}}")), 0..4);
    let addresses = maybe(Just(format!("[10.96.0.{i}]")).boxed());
    (ports, endpoints, addresses, maybe(port())).prop_map(move |(ports, eps, addresses, local)| {
        let spec = map(&[
            ("ports", &Some(list(ports))),
            ("endpoints", &Some(list(eps))),
            ("addresses", &addresses),
            ("localPort", &local),
        ]);
        document(PILOTFISH, "Service", NAMES[i], &spec)
    })
}

fn route_rule() -> impl Strategy<Value = String> {
    let path_type = prop::sample::select(&["Exact", "PathPrefix", "RegularExpression"][..]);
    let path_value = prop::sample::select(
        &["/", "/api", "/api/users/", "api", "^/v[0-9]+/", "(?x)/a#", "(unclosed", ".*"][..],
    );
    let matches = vec(
        (path_type, path_value, maybe(Just("GET".to_owned()).boxed())).prop_map(|(t, v, m)| {
            map(&[("path", &Some(format!("{{type: {t}, value: '{v}'}}"))), ("method", &m)])
        }),
        0..3,
    );
    let backends = vec(
        (name(), maybe(number()), maybe(port()))
            .prop_map(|(n, w, p)| map(&[("name", &Some(n)), ("weight", &w), ("port", &p)])),
        0..3,
    );
    let timeouts = (maybe(duration()), maybe(duration()))
        .prop_map(|(r, b)| map(&[("request", &r), ("backendRequest", &b)]));
    let retry = (maybe(within(0, 12)), maybe(duration()), maybe(within(400, 599))).prop_map(|(a, b, c)| {
        map(&[("attempts", &a), ("backoff", &b), ("codes", &c.map(|c| format!("[{c}]")))])
    });
    let status = prop_oneof![3 => Just("301".to_owned()), 1 => number()].boxed();
    let redirect = (maybe(port()), maybe(status)).prop_map(|(port, status)| {
        format!(
            "[{{type: RequestRedirect, requestRedirect: {}}}]",
            map(&[("port", &port), ("statusCode", &status)])
        )
    });
    (matches, backends, maybe(timeouts.boxed()), maybe(retry.boxed()), maybe(redirect.boxed())).prop_map(
        |(matches, backends, timeouts, retry, filters)| {
            map(&[
                ("matches", &Some(list(matches))),
                ("backendRefs", &Some(list(backends))),
                ("timeouts", &timeouts),
                ("retry", &retry),
                ("filters", &filters),
            ])
        },
    )
}

fn route() -> impl Strategy<Value = String> {
    (name(), name(), maybe(port()), vec(route_rule(), 0..3)).prop_map(|(n, parent, port, rules)| {
        let parent = map(&[("name", &Some(parent)), ("port", &port)]);
        let spec = map(&[("parentRefs", &Some(format!("[{parent}]"))), ("rules", &Some(list(rules)))]);
        document("gateway.networking.k8s.io/v1", "HTTPRoute", &n, &spec)
    })
}

fn backend_policy() -> impl Strategy<Value = String> {
    let lb = maybe(
        prop::sample::select(&["p2c-ewma", "round-robin", "least-requests"][..])
            .prop_map(str::to_owned)
            .boxed(),
    );
    let breaker = (maybe(number()), maybe(duration()), maybe(duration()), maybe(within(0, 110))).prop_map(
        |(f, b, m, p)| {
            map(&[
                ("consecutiveFailures", &f),
                ("baseEjectionTime", &b),
                ("maxEjectionTime", &m),
                ("maxEjectionPercent", &p),
            ])
        },
    );
    let limits = vec(maybe(number()), 3).prop_map(|l| {
        map(&[("maxConnections", &l[0]), ("maxPendingRequests", &l[1]), ("maxRequests", &l[2])])
    });
    let ratio = prop_oneof![
        3 => prop::sample::select(&["0", "0.2", "1", "1.5", "10", "1e-40"][..]).prop_map(str::to_owned),
        1 => number(),
    ]
    .boxed();
    let budget =
        (maybe(ratio), maybe(number())).prop_map(|(r, m)| map(&[("ratio", &r), ("minPerSecond", &m)]));
    let retry = (maybe(duration()), maybe(duration()), maybe(number()))
        .prop_map(|(b, m, body)| map(&[("baseBackoff", &b), ("maxBackoff", &m), ("maxBodyBytes", &body)]));
    let health =
        (maybe(duration()), maybe(duration()), maybe(number()), maybe(number())).prop_map(|(i, t, h, u)| {
            map(&[("interval", &i), ("timeout", &t), ("healthyThreshold", &h), ("unhealthyThreshold", &u)])
        });
    let parts = (
        maybe(breaker.boxed()),
        maybe(limits.boxed()),
        maybe(budget.boxed()),
        maybe(retry.boxed()),
        maybe(health.boxed()),
    );
    (name(), lb, parts).prop_map(|(n, lb, (breaker, limits, budget, retry, health))| {
        let spec = map(&[
            ("targetRef", &Some(format!("{{kind: Service, name: {n}}}"))),
            ("loadBalancer", &lb),
            ("circuitBreaker", &breaker),
            ("limits", &limits),
            ("retryBudget", &budget),
            ("retry", &retry),
            ("healthCheck", &health),
        ]);
        document(PILOTFISH, "BackendPolicy", &n, &spec)
    })
}

fn rate_limit_policy() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(&["Service", "HTTPRoute"][..]);
    let key = maybe(Just("{header: x-api-key}".to_owned()).boxed());
    (name(), kind, vec(maybe(number()), 4), key).prop_map(|(n, kind, l, key)| {
        let spec = map(&[
            ("targetRef", &Some(format!("{{kind: {kind}, name: {n}}}"))),
            ("perSecond", &l[0]),
            ("perMinute", &l[1]),
            ("perHour", &l[2]),
            ("burst", &l[3]),
            ("key", &key),
        ]);
        document(PILOTFISH, "RateLimitPolicy", &n, &spec)
    })
}

fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z:{}\\[\\], \n-]{0,60}",
        (name(), number()).prop_map(|(n, v)| document(PILOTFISH, "Service", &n, &v)),
    ]
}

/// Maybe a `Sidecar`, the `users` service and maybe the others, then what attaches to them (and
/// now and then garbage), in any order.
fn stream() -> impl Strategy<Value = String> {
    let services = (
        option::weighted(0.3, sidecar()),
        service(0),
        option::weighted(0.5, service(1)),
        option::weighted(0.3, service(2)),
    );
    let attached = prop_oneof![
        3 => route().boxed(),
        3 => backend_policy().boxed(),
        2 => rate_limit_policy().boxed(),
        1 => garbage().boxed(),
    ];
    (services, vec(attached, 0..4))
        .prop_map(|((sidecar, users, billing, web), attached)| {
            let mut docs: Vec<String> = [sidecar, Some(users), billing, web].into_iter().flatten().collect();
            docs.extend(attached);
            docs
        })
        .prop_shuffle()
        .prop_map(|docs| docs.join("---\n"))
}

/// Uses the snapshot the way requests and the sidecar's tasks do.
fn serve(snap: &Snapshot) {
    let now = tokio::time::Instant::now();
    let _ = snap.to_json();
    assert!(snap.sidecar.limits.max_connections <= Semaphore::MAX_PERMITS);
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", "k".parse().expect("a header value"));
    for svc in snap.services() {
        let endpoint = crate::http::outbound::endpoint::choose(svc, now, None, &[]);
        let policy = &svc.policy;
        for retries in [0, 1, 10, 100] {
            retry::backoff(retries, policy.base_backoff, policy.max_backoff);
        }
        svc.budget.deposit();
        let _ = svc.budget.withdraw();
        if let Some(limit) = &svc.rate_limit {
            limit.limiter.check(Some(b"k"), now);
            limit.limiter.check(None, now);
        }
        if let Some(check) = &policy.health_check {
            drop(tokio::time::interval(check.interval.get()));
            let _ = now + check.timeout.get();
        }
        if let Some(guard) = endpoint.and_then(|e| e.guard.as_ref()) {
            for _ in 0..3 {
                guard.breaker.on_failure(now);
            }
            let _ = guard.breaker.admit(now);
        }
        let _ = now + snap.sidecar.timeouts.connect.get() + snap.sidecar.timeouts.idle.get();
        for path in ["/", "/api/users", "/v1/x"] {
            let Some(selected) = svc.routes.select(&Method::GET, path, Some("q=1"), &headers) else {
                continue;
            };
            let rule = selected.rule;
            let _ = snap.service(rule.pick_backend());
            let deadline = rule.request_timeout.map(|t| now + t);
            let _ = rule.try_timeout.map(|t| deadline.unwrap_or(now).max(now + t));
            if let Some(r) = &rule.retry {
                retry::backoff(r.attempts, r.backoff.unwrap_or(policy.base_backoff), policy.max_backoff);
            }
            if let Some(limit) = &rule.rate_limit {
                limit.limiter.check(Some(b"k"), now);
            }
        }
    }
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let metrics = Metrics::new();
    let first = Snapshot::build("gen.yaml", text, &Overrides::default(), None, &metrics);
    let snap = match first {
        Ok(snap) => snap,
        Err(BuildError::Invalid(e)) => {
            prop_assert!(e.document >= 1, "{e}");
            let whole_document =
                e.reason.starts_with("not valid YAML") || e.reason.starts_with("missing field");
            prop_assert!(!e.field.is_empty() || whole_document, "no field path: {e}\n{text}");
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
    };
    serve(&snap);
    // A reload of the same resources carries state over from the snapshot in force.
    let again = Snapshot::build("gen.yaml", text, &Overrides::default(), Some(&snap), &metrics);
    prop_assert!(again.is_ok(), "{:?}", again.err());
    serve(&again.expect("checked"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_stream_is_refused_with_a_field_or_served(text in stream()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
        let _entered = runtime.enter();
        check(&text)?;
    }
}
