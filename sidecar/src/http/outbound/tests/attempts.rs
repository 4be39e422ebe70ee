//! The attempts stage's decisions: which retries apply, how long each waits, and what stops
//! them — the route's attempts, the deadline, the retry budget, a request that must not go out
//! twice.

use std::time::Duration;

use pilotfish_api::policy::RetryOn;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use crate::http::outbound::attempts::{Next, Plan};
use crate::resilience::retry::{Conditions, Outcome, Reason};

const BASE: Duration = Duration::from_millis(25);
const MAX: Duration = Duration::from_millis(250);

fn conditions() -> Conditions {
    Conditions {
        retry_on: vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::RetriableStatusCodes],
        grpc_codes: vec![14],
    }
}

/// A budget that always has room (a large floor of retries per second).
fn roomy() -> TpsBudget {
    TpsBudget::new(Duration::from_secs(10), 1000, 0.2)
}

fn plan<'s>(conditions: &'s Conditions, budget: &'s TpsBudget, deadline: Option<Instant>) -> Plan<'s> {
    Plan {
        max_retries: 2,
        connect_retries: 2,
        idempotent: true,
        codes: &[503],
        conditions,
        base_backoff: BASE,
        max_backoff: MAX,
        deadline,
        budget,
    }
}

const UNAVAILABLE: Outcome = Outcome::Response { status: 503, grpc: None };

#[tokio::test(start_paused = true)]
async fn a_retry_waits_a_jittered_backoff_that_must_end_before_the_deadline() {
    let (conditions, budget) = (conditions(), roomy());
    let now = Instant::now();
    let timely = plan(&conditions, &budget, Some(now + Duration::from_secs(1)));
    for retries in 0..2 {
        let ceiling = (BASE * 2u32.pow(retries)).min(MAX);
        for _ in 0..50 {
            match timely.after(UNAVAILABLE, retries, true, now) {
                Next::Retry { reason: Reason::Status, at } => assert!(at - now < ceiling, "{:?}", at - now),
                other => panic!("{other:?}"),
            }
        }
    }
    // An attempt that ended at the deadline leaves no time for another: its answer stands.
    let late = plan(&conditions, &budget, Some(now));
    assert_eq!(late.after(UNAVAILABLE, 0, true, now), Next::Answer);
    assert_eq!(timely.after(Outcome::Response { status: 200, grpc: None }, 0, true, now), Next::Answer);
    let server_error = Outcome::Response { status: 500, grpc: None };
    assert_eq!(timely.after(server_error, 0, true, now), Next::Answer, "not a listed code");
}

#[test]
fn retries_stop_at_the_routes_attempts_and_failed_connects_get_their_own_count() {
    let (conditions, budget) = (conditions(), roomy());
    let now = Instant::now();
    let plan = Plan { max_retries: 1, connect_retries: 3, ..plan(&conditions, &budget, None) };
    assert!(matches!(plan.after(UNAVAILABLE, 0, true, now), Next::Retry { .. }));
    assert_eq!(plan.after(UNAVAILABLE, 1, true, now), Next::Answer);
    for retries in 0..3 {
        let next = plan.after(Outcome::ConnectFailure, retries, true, now);
        assert!(matches!(next, Next::Retry { reason: Reason::ConnectFailure, .. }), "{retries}: {next:?}");
    }
    assert_eq!(plan.after(Outcome::ConnectFailure, 3, true, now), Next::Answer);
    // A connect failure whose request cannot go out again (its streamed body is gone) stands.
    assert_eq!(plan.after(Outcome::ConnectFailure, 0, false, now), Next::Answer);
    // Not configured: resets are retried only when the service's retryOn lists them.
    let no_reset = Conditions { retry_on: vec![RetryOn::RetriableStatusCodes], grpc_codes: vec![] };
    let plan = Plan { conditions: &no_reset, ..plan };
    assert_eq!(plan.after(Outcome::Reset, 0, true, now), Next::Answer);
}

#[test]
fn the_retry_budget_allows_a_fifth_of_requests_as_retries() {
    let conditions = conditions();
    // No floor: the ratio alone (20%) decides.
    let budget = TpsBudget::new(Duration::from_secs(10), 0, 0.2);
    for _ in 0..10 {
        budget.deposit();
    }
    let now = Instant::now();
    let plan = plan(&conditions, &budget, None);
    let decisions: Vec<Next> = (0..3).map(|_| plan.after(UNAVAILABLE, 0, true, now)).collect();
    assert!(matches!(decisions[..2], [Next::Retry { .. }, Next::Retry { .. }]), "{decisions:?}");
    assert_eq!(decisions[2], Next::BudgetSpent, "ten requests pay for two retries");
    // An attempt that would not be retried anyway does not touch the budget.
    assert_eq!(plan.after(Outcome::Response { status: 200, grpc: None }, 0, true, now), Next::Answer);
}

#[test]
fn a_request_that_must_not_go_out_twice_is_retried_only_when_the_server_did_nothing() {
    let (conditions, budget) = (conditions(), roomy());
    let now = Instant::now();
    let plan = Plan { idempotent: false, ..plan(&conditions, &budget, None) };
    assert_eq!(plan.after(UNAVAILABLE, 0, true, now), Next::Answer, "a POST that got a 503 may have acted");
    assert_eq!(plan.after(Outcome::Reset, 0, true, now), Next::Answer);
    assert!(matches!(
        plan.after(Outcome::ConnectFailure, 0, true, now),
        Next::Retry { reason: Reason::ConnectFailure, .. }
    ));
    // gRPC UNAVAILABLE, listed by the policy: the server says it did nothing.
    let grpc_unavailable = Outcome::Response { status: 200, grpc: Some(14) };
    assert!(matches!(plan.after(grpc_unavailable, 0, true, now), Next::Retry { reason: Reason::Grpc, .. }));
}
