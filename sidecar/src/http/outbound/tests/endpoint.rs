//! The endpoint stage: the balancer's choice, breaker admission, the per-try timeout and the
//! bookkeeping of an attempt.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Request;
use tokio::time::Instant;

use super::{connection, exported, snapshot};
use crate::http::context::{HttpTarget, RequestContext};
use crate::http::errors::ProxyError;
use crate::http::outbound::endpoint::{admit, choose, TryLimits};
use crate::http::pool::Version;
use crate::http::request_body::RequestBody;
use crate::resilience::breaker::BreakerState;
use crate::resilience::limit::Limit;
use crate::resilience::retry::Outcome;
use crate::upstream::service::ServiceRt;

/// Two endpoints whose breakers open at the first failure and stay open a second.
fn config(a: SocketAddr, b: SocketAddr, limits: &str) -> String {
    format!(
        "apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {{name: web}}
spec: {{timeouts: {{connect: 30s}}}}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {{name: users}}
spec: {{endpoints: [{{address: '{a}'}}, {{address: '{b}'}}]}}
---
apiVersion: pilotfish.io/v1alpha1
kind: BackendPolicy
metadata: {{name: users}}
spec:
  targetRef: {{kind: Service, name: users}}
  circuitBreaker: {{consecutiveFailures: 1, baseEjectionTime: 1s, maxEjectionPercent: 100}}
  limits: {{{limits}}}
"
    )
}

const A: &str = "127.0.0.1:9001";
const B: &str = "127.0.0.1:9002";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn state(service: &ServiceRt, i: usize) -> BreakerState {
    service.endpoints[i].guard.as_ref().unwrap().breaker.state()
}

/// Fails one attempt on `target` (the balancer is steered there by avoiding the other).
fn fail(service: &ServiceRt, target: SocketAddr, other: SocketAddr, blamed: bool) {
    let admitted = admit(service, Some(other)).unwrap();
    assert_eq!(admitted.endpoint.addr, target);
    let now = Instant::now();
    admitted.settle(
        Outcome::ConnectFailure,
        blamed,
        Duration::from_millis(3),
        &service.policy.failure_on,
        now,
    );
}

#[tokio::test(start_paused = true)]
async fn the_balancer_avoids_the_endpoint_that_just_failed_while_another_qualifies() {
    let conn = connection(&config(addr(A), addr(B), ""), HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let service = snap.service("users.default").unwrap();
    let now = Instant::now();
    for _ in 0..50 {
        assert_eq!(choose(service, now, Some(addr(A)), &[]).unwrap().addr, addr(B));
    }
    // Avoiding is a preference: with the other refused, the failed endpoint is tried again.
    assert_eq!(choose(service, now, Some(addr(A)), &[addr(B)]).unwrap().addr, addr(A));
    assert!(choose(service, now, None, &[addr(A), addr(B)]).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failure_opens_the_breaker_and_a_half_open_endpoint_takes_one_probe_at_a_time() {
    let conn = connection(&config(addr(A), addr(B), ""), HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let service = snap.service("users.default").unwrap();
    fail(service, addr(A), addr(B), true);
    assert_eq!(state(service, 0), BreakerState::Open);
    for _ in 0..20 {
        assert_eq!(admit(service, None).unwrap().endpoint.addr, addr(B), "an ejected endpoint gets nothing");
    }
    let load = &service.endpoints[0].guard.as_ref().unwrap().load;
    assert_eq!(load.in_flight(), 0, "a settled attempt leaves the endpoint's load");

    // One second of ejection, plus up to 10% jitter.
    tokio::time::advance(Duration::from_millis(1100)).await;
    let probe = admit(service, Some(addr(B))).unwrap();
    assert_eq!((probe.endpoint.addr, state(service, 0)), (addr(A), BreakerState::HalfOpen));
    assert_eq!(load.in_flight(), 1);
    for _ in 0..20 {
        let next = admit(service, Some(addr(B))).unwrap();
        assert_eq!(next.endpoint.addr, addr(B), "while the probe is out, the endpoint takes nothing else");
    }
    // A probe that ends without a verdict (the caller went away) frees the probe at once.
    drop(probe);
    assert_eq!(load.in_flight(), 0);
    let probe = admit(service, Some(addr(B))).unwrap();
    assert_eq!(probe.endpoint.addr, addr(A));
    let now = Instant::now();
    let ok = Outcome::Response { status: 200, grpc: None };
    probe.settle(ok, true, Duration::from_millis(2), &service.policy.failure_on, now);
    assert_eq!(state(service, 0), BreakerState::Closed);
    let text = exported(&conn);
    for (to, times) in [("open", 1), ("half-open", 1), ("closed", 1)] {
        let series = format!(
            r#"pilotfish_circuit_transitions_total{{endpoint="{A}",service="users.default",to="{to}"}} {times}"#
        );
        assert!(text.contains(&series), "{series} in {text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_shared_with_a_queue_is_not_held_against_the_endpoint() {
    let conn = connection(&config(addr(A), addr(B), ""), HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let service = snap.service("users.default").unwrap();
    for _ in 0..5 {
        fail(service, addr(A), addr(B), false);
    }
    assert_eq!(state(service, 0), BreakerState::Closed);
    assert_eq!(service.endpoints[0].guard.as_ref().unwrap().load.in_flight(), 0);
    fail(service, addr(A), addr(B), true);
    assert_eq!(state(service, 0), BreakerState::Open, "its own failure counts");
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_ejected_is_circuit_open_and_none_healthy_is_no_endpoints() {
    let conn = connection(&config(addr(A), addr(B), ""), HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let service = snap.service("users.default").unwrap();
    fail(service, addr(A), addr(B), true);
    fail(service, addr(B), addr(A), true);
    assert!(matches!(admit(service, None).err(), Some(ProxyError::CircuitOpen(s)) if s == "users.default"));
    for endpoint in &service.endpoints {
        endpoint.guard.as_ref().unwrap().healthy.store(false, Ordering::Relaxed);
    }
    assert!(matches!(admit(service, None).err(), Some(ProxyError::NoEndpoints(_))));
}

#[test]
fn a_timeout_names_the_route_timeout_when_the_deadline_ran_out_and_else_the_per_try_timeout() {
    let sent = Instant::now();
    let limits = TryLimits {
        per_try: Some(Duration::from_millis(300)),
        deadline: Some((sent + Duration::from_millis(500), Duration::from_secs(2))),
    };
    assert_eq!(limits.until(sent), Some(sent + Duration::from_millis(300)));
    let late = sent + Duration::from_millis(400);
    assert_eq!(limits.until(late), Some(sent + Duration::from_millis(500)), "never past the deadline");
    let named = |at| match limits.expired(at) {
        ProxyError::Timeout(t) => t,
        e => panic!("{e}"),
    };
    assert_eq!(named(sent + Duration::from_millis(300)), Duration::from_millis(300));
    assert_eq!(named(sent + Duration::from_millis(500)), Duration::from_secs(2));
    let no_limits = TryLimits { per_try: None, deadline: None };
    assert_eq!(no_limits.until(sent), None);
}

fn request(to: SocketAddr) -> Box<Request<RequestBody>> {
    let mut req = Request::new(RequestBody::Replay { data: None, trailers: None });
    req.headers_mut().insert(http::header::HOST, to.to_string().parse().unwrap());
    Box::new(req)
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_ends_the_attempt_and_counts_against_the_endpoint() {
    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let conn = connection(&config(a, addr(B), ""), HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let cx = RequestContext::new(&conn, &snap, &Request::new(()), std::time::Instant::now());
    let service = snap.service("users.default").unwrap();
    let admitted = admit(service, Some(addr(B))).unwrap();
    let limits = TryLimits { per_try: Some(Duration::from_secs(2)), deadline: None };
    let sent = Instant::now();
    let attempted = admitted.send(&cx, service, Version::Http1, request(a), limits).await.ok().unwrap();
    assert_eq!(attempted.outcome, Outcome::Timeout);
    assert_eq!(attempted.finished - sent, Duration::from_secs(2));
    assert!(matches!(attempted.result, Err(ProxyError::Timeout(t)) if t == Duration::from_secs(2)));
    assert_eq!(state(service, 0), BreakerState::Open, "timeouts are failures by default");
    assert_eq!(service.endpoints[0].guard.as_ref().unwrap().load.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_service_limit_refuses_without_a_verdict_on_the_endpoint() {
    let conn = connection(&config(addr(A), addr(B), "maxConnections: 1"), HttpTarget::ByAuthority);
    let snap = snapshot(&conn);
    let cx = RequestContext::new(&conn, &snap, &Request::new(()), std::time::Instant::now());
    let service = snap.service("users.default").unwrap();
    // Another request's connection holds the service's only one.
    service.connections.store(1, Ordering::SeqCst);
    let admitted = admit(service, Some(addr(B))).unwrap();
    let limits = TryLimits { per_try: None, deadline: None };
    let refused = admitted.send(&cx, service, Version::Http1, request(addr(A)), limits).await.err().unwrap();
    assert!(matches!(refused, ProxyError::Overloaded { limit: Limit::MaxConnections, .. }), "{refused}");
    assert_eq!(state(service, 0), BreakerState::Closed);
    assert_eq!(service.endpoints[0].guard.as_ref().unwrap().load.in_flight(), 0);
    let text = exported(&conn);
    assert!(
        text.contains(r#"pilotfish_overflow_total{limit="maxConnections",service="users.default"} 1"#),
        "{text}"
    );
}
