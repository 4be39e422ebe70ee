//! The route stage: which service, within which rate limits, by which rule, with what filters,
//! under `maxRequests`.

use std::time::Instant;

use http::{Method, Request};
use pilotfish_api::Protocol;

use super::{connection, exported, snapshot};
use crate::http::context::{HttpTarget, RequestContext};
use crate::http::errors::ProxyError;
use crate::http::outbound::route::{route, PortHint, Routed, Unrouted};
use crate::resilience::limit::Limit;

const SERVICE: &str = "
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: users}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: 127.0.0.1:9001}]
";

fn get(uri: &str, host: Option<&str>) -> Request<()> {
    let mut req = Request::get(uri);
    if let Some(host) = host {
        req = req.header("host", host);
    }
    req.body(()).unwrap()
}

/// The route stage's answer for one request, with the request as the stage left it.
fn routed<'s>(cx: &RequestContext<'s>, req: &mut Request<()>) -> Result<Routed<'s>, ProxyError> {
    match route(cx, req) {
        Ok(routed) => Ok(routed),
        Err(Unrouted::Refused { error, .. }) => Err(error),
        Err(Unrouted::Redirected(res)) => panic!("redirected with {}", res.status()),
    }
}

#[test]
fn the_service_comes_from_the_authority_or_from_the_connection() {
    let conn = connection(SERVICE, HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let cx = RequestContext::new(&conn, &snap, &get("/", None), Instant::now());
    let found = routed(&cx, &mut get("/", Some("users.default:8080"))).unwrap();
    assert_eq!((&*found.service.key, found.port), ("users.default", PortHint::Port(Some(8080))));
    assert!(matches!(routed(&cx, &mut get("/", None)), Err(ProxyError::MissingAuthority)));
    assert!(
        matches!(routed(&cx, &mut get("/", Some("nobody"))), Err(ProxyError::NoRoute(h)) if h == "nobody")
    );
    let mut connect = Request::builder().method(Method::CONNECT).uri("users:80").body(()).unwrap();
    assert!(matches!(routed(&cx, &mut connect), Err(ProxyError::ConnectUnsupported)));

    let key = "users.default".into();
    let fixed = connection(SERVICE, HttpTarget::Service { key, protocol: Some(Protocol::Http2) });
    let snap = snapshot(&fixed);
    let cx = RequestContext::new(&fixed, &snap, &get("/", None), Instant::now());
    // The connection names the service, whatever the Host says.
    let found = routed(&cx, &mut get("/", Some("elsewhere"))).unwrap();
    assert_eq!((&*found.service.key, found.port), ("users.default", PortHint::Declared(Protocol::Http2)));
}

#[tokio::test(start_paused = true)]
async fn the_service_limit_counts_first_then_the_matched_routes_limit() {
    let config = format!(
        "{SERVICE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: slow}}
spec:
  parentRefs: [{{name: users}}]
  rules: [{{matches: [{{path: {{type: PathPrefix, value: /slow}}}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: rest}}
spec:
  parentRefs: [{{name: users}}]
  rules: [{{matches: [{{path: {{type: PathPrefix, value: /}}}}]}}]
---
apiVersion: pilotfish.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: service}}
spec: {{targetRef: {{kind: Service, name: users}}, perSecond: 3}}
---
apiVersion: pilotfish.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: slow}}
spec: {{targetRef: {{kind: HTTPRoute, name: slow}}, perSecond: 1}}
"
    );
    let conn = connection(&config, HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let cx = RequestContext::new(&conn, &snap, &get("/", None), Instant::now());
    let call = |path: &str| routed(&cx, &mut get(path, Some("users")));

    let first = call("/slow/a").unwrap();
    assert_eq!(&*first.rule.route, "default/slow");
    assert_eq!(first.limited.len(), 2, "both limits passed: both decide the RateLimit-* headers");
    assert_eq!(first.limited.iter().map(|d| d.remaining).min(), Some(0));
    // The route's limit refuses; the service's had already counted the request.
    assert!(matches!(call("/slow/b"), Err(ProxyError::RateLimited(d)) if !d.allowed));
    let other = call("/other").unwrap();
    assert_eq!((&*other.rule.route, other.limited.len()), ("default/rest", 1));
    assert_eq!(other.limited[0].remaining, 0, "three requests counted against three per second");
    assert!(matches!(call("/other"), Err(ProxyError::RateLimited(_))));
    drop((first, other));

    let text = exported(&conn);
    assert!(text.contains(r#"pilotfish_ratelimited_total{route="",service="users.default"} 1"#), "{text}");
    assert!(text.contains(r#"pilotfish_ratelimited_total{route="default/slow",service="users.default"} 1"#));
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    assert!(call("/slow/c").is_ok(), "once the window has passed, both limits have room again");
}

#[test]
fn no_matching_rule_is_no_route_and_takes_no_place_under_max_requests() {
    let config = format!(
        "{SERVICE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: only}}
spec:
  parentRefs: [{{name: users}}]
  rules: [{{matches: [{{path: {{type: Exact, value: /only}}}}]}}]
"
    );
    let conn = connection(&config, HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let cx = RequestContext::new(&conn, &snap, &get("/", None), Instant::now());
    let e = routed(&cx, &mut get("/other?x=1", Some("users"))).err().unwrap();
    assert!(matches!(&e, ProxyError::NoRoute(what) if what == "users.default /other"), "{e}");
    let service = snap.service("users.default").unwrap();
    assert_eq!(service.in_flight.load(std::sync::atomic::Ordering::SeqCst), 0);
    let held = routed(&cx, &mut get("/only", Some("users"))).unwrap();
    assert_eq!(service.in_flight.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(held);
    assert_eq!(service.in_flight.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn max_requests_fails_fast_and_a_finished_request_frees_its_place() {
    let config = format!(
        "{SERVICE}---
apiVersion: pilotfish.io/v1alpha1
kind: BackendPolicy
metadata: {{name: users}}
spec: {{targetRef: {{kind: Service, name: users}}, limits: {{maxRequests: 1}}}}
"
    );
    let conn = connection(&config, HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let cx = RequestContext::new(&conn, &snap, &get("/", None), Instant::now());
    let first = routed(&cx, &mut get("/", Some("users"))).unwrap();
    let refused = routed(&cx, &mut get("/", Some("users")));
    assert!(matches!(refused, Err(ProxyError::Overloaded { limit: Limit::MaxRequests, .. })));
    let text = exported(&conn);
    assert!(
        text.contains(r#"pilotfish_overflow_total{limit="maxRequests",service="users.default"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"pilotfish_overflow_total{limit="maxConnections",service="users.default"} 0"#));
    drop(first);
    assert!(routed(&cx, &mut get("/", Some("users"))).is_ok());
}

#[test]
fn filters_rewrite_the_request_or_answer_it_with_a_redirect() {
    let config = format!(
        "{SERVICE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: users}}
spec:
  parentRefs: [{{name: users}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-tenant, value: blue}}], remove: [x-debug]}}
    - type: URLRewrite
      urlRewrite: {{hostname: users.internal, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{scheme: https, statusCode: 301}}
"
    );
    let conn = connection(&config, HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let cx = RequestContext::new(&conn, &snap, &get("/", None), Instant::now());

    let mut req =
        Request::get("/api/users?page=2").header("host", "users:80").header("x-debug", "1").body(()).unwrap();
    let found = routed(&cx, &mut req).unwrap();
    assert_eq!(req.uri(), "/v2/users?page=2");
    assert_eq!(req.headers()["x-tenant"], "blue");
    assert!(!req.headers().contains_key("x-debug"));
    assert_eq!(found.authority.as_ref().unwrap().as_str(), "users.internal");
    drop(found);

    match route(&cx, &mut get("/old/page?q=1", Some("users:8080"))) {
        Err(Unrouted::Redirected(res)) => {
            assert_eq!(res.status(), 301);
            assert_eq!(res.headers()["location"], "https://users/old/page?q=1");
        }
        _ => panic!("expected a redirect"),
    }
    let service = snap.service("users.default").unwrap();
    assert_eq!(service.in_flight.load(std::sync::atomic::Ordering::SeqCst), 0, "a redirect holds no place");
}

#[tokio::test(start_paused = true)]
async fn a_peer_keyed_limit_budgets_each_mesh_identity_and_else_each_address() {
    let config = format!(
        "{SERVICE}---
apiVersion: pilotfish.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: service}}
spec: {{targetRef: {{kind: Service, name: users}}, perMinute: 1, key: {{peer: true}}}}
"
    );
    // Three connections from one address: two with mesh identities, one plaintext.
    let with_peer = |peer: Option<&str>| {
        let mut conn = connection(&config, HttpTarget::ByAuthority);
        conn.peer = peer.map(|p| std::sync::Arc::new(p.parse().unwrap()));
        conn
    };
    let web = with_peer(Some("spiffe://pilotfish.local/ns/default/sa/web"));
    let snap = snapshot(&web);
    let (ops, plain) = (with_peer(Some("spiffe://pilotfish.local/ns/ops/sa/admin")), with_peer(None));
    let limited = |conn| {
        let cx = RequestContext::new(conn, &snap, &get("/", None), Instant::now());
        matches!(routed(&cx, &mut get("/", Some("users"))), Err(ProxyError::RateLimited(_)))
    };
    assert!(!limited(&web));
    assert!(limited(&web), "the identity's budget is spent");
    assert!(!limited(&ops), "another identity from the same address has its own");
    assert!(!limited(&plain), "a plaintext caller is keyed by its address");
    assert!(limited(&plain));
}
