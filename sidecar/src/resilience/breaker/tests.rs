//! The circuit breaker's state machine and the ejection budget, on paused time.

use super::*;
use tokio::time::advance;

const BASE: Duration = Duration::from_secs(10);
// The longest a first ejection can last, jitter included.
const BASE_MAX: Duration = Duration::from_secs(11);

fn config() -> BreakerConfig {
    BreakerConfig { consecutive_failures: 5, base_ejection: BASE, max_ejection: Duration::from_secs(300) }
}

fn breaker() -> Breaker {
    Breaker::new(config(), EjectionBudget::new(10, 100))
}

fn fail_times(breaker: &Breaker, n: u32) -> Option<Transition> {
    let now = Instant::now();
    (0..n).fold(None, |_, _| breaker.on_failure(now))
}

fn open(breaker: &Breaker) {
    assert_eq!(
        fail_times(breaker, 5),
        Some(Transition { from: BreakerState::Closed, to: BreakerState::Open })
    );
}

/// Waits out an ejection of at most `max` and claims the probe.
async fn probe_after(breaker: &Breaker, max: Duration) -> Admission {
    advance(max).await;
    breaker.admit(Instant::now()).expect("probe is admitted")
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures() {
    let breaker = breaker();
    assert_eq!(fail_times(&breaker, 4), None);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker.is_available(Instant::now()));

    assert!(breaker.on_failure(Instant::now()).is_some());
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(!breaker.is_available(Instant::now()));
    assert_eq!(breaker.admit(Instant::now()), None);
    // Outcomes of requests sent before it opened change nothing.
    assert_eq!(breaker.on_failure(Instant::now()), None);
    assert_eq!(breaker.on_success(), None);
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn success_resets_the_count() {
    let breaker = breaker();
    fail_times(&breaker, 4);
    assert_eq!(breaker.on_success(), None);
    assert_eq!(fail_times(&breaker, 4), None);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker.on_failure(Instant::now()).is_some());
}

#[test]
fn ejection_doubles_and_caps_with_jitter() {
    fastrand::seed(7);
    let config = BreakerConfig {
        consecutive_failures: 5,
        base_ejection: Duration::from_secs(1),
        max_ejection: Duration::from_secs(10),
    };
    for (trips, nominal_secs) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (6, 10), (64, 10)] {
        let nominal = Duration::from_secs(nominal_secs);
        let samples: Vec<_> = (0..200).map(|_| ejection(&config, trips)).collect();
        let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
        assert!(*min >= nominal, "trip {trips}: {min:?} below {nominal:?}");
        assert!(*max <= nominal.mul_f64(1.1), "trip {trips}: {max:?} over 10% jitter");
        assert!(*max - *min > nominal / 20, "trip {trips}: jitter barely spreads");
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_one_probe() {
    let breaker = breaker();
    open(&breaker);
    advance(BASE - Duration::from_millis(1)).await;
    assert!(!breaker.is_available(Instant::now()));
    assert_eq!(breaker.admit(Instant::now()), None);

    advance(BASE_MAX - BASE + Duration::from_millis(1)).await;
    assert!(breaker.is_available(Instant::now()));
    assert_eq!(breaker.state(), BreakerState::Open, "admit moves it, not time");
    let probe = breaker.admit(Instant::now()).expect("probe is admitted");
    assert_eq!(
        probe,
        Admission {
            probe: true,
            transition: Some(Transition { from: BreakerState::Open, to: BreakerState::HalfOpen })
        }
    );
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(!breaker.is_available(Instant::now()));
    assert_eq!(breaker.admit(Instant::now()), None);
}

#[tokio::test(start_paused = true)]
async fn probe_success_closes_and_resets_trips() {
    let breaker = breaker();
    open(&breaker);
    probe_after(&breaker, BASE_MAX).await;
    breaker.on_failure(Instant::now());
    probe_after(&breaker, 2 * BASE_MAX).await;

    assert_eq!(
        breaker.on_success(),
        Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Closed })
    );
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.admit(Instant::now()), Some(Admission { probe: false, transition: None }));

    // Back to the base ejection time, not four times it.
    open(&breaker);
    advance(BASE_MAX).await;
    assert!(breaker.is_available(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens_for_twice_as_long() {
    let breaker = breaker();
    open(&breaker);
    probe_after(&breaker, BASE_MAX).await;
    assert_eq!(
        breaker.on_failure(Instant::now()),
        Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Open })
    );
    assert_eq!(breaker.state(), BreakerState::Open);

    advance(2 * BASE - Duration::from_millis(1)).await;
    assert!(!breaker.is_available(Instant::now()));
    advance(2 * (BASE_MAX - BASE) + Duration::from_millis(1)).await;
    assert!(breaker.is_available(Instant::now()));

    // And twice again after the next failed probe.
    probe_after(&breaker, Duration::ZERO).await;
    breaker.on_failure(Instant::now());
    advance(4 * BASE - Duration::from_millis(1)).await;
    assert!(!breaker.is_available(Instant::now()));
    advance(4 * (BASE_MAX - BASE) + Duration::from_millis(1)).await;
    assert!(breaker.is_available(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn abandoned_probe_is_readmitted_after_base_ejection() {
    let breaker = breaker();
    open(&breaker);
    probe_after(&breaker, BASE_MAX).await;

    advance(BASE - Duration::from_millis(1)).await;
    assert!(!breaker.is_available(Instant::now()));
    assert_eq!(breaker.admit(Instant::now()), None);

    advance(Duration::from_millis(1)).await;
    assert!(breaker.is_available(Instant::now()));
    assert_eq!(breaker.admit(Instant::now()), Some(Admission { probe: true, transition: None }));
    assert_eq!(breaker.admit(Instant::now()), None, "the new probe holds the slot");
}

#[tokio::test(start_paused = true)]
async fn budget_bounds_ejected_endpoints() {
    // floor(3 * 50%) = 1 endpoint may be ejected.
    let budget = EjectionBudget::new(3, 50);
    let first = Breaker::new(config(), budget.clone());
    let second = Breaker::new(config(), budget.clone());

    open(&first);
    assert_eq!(budget.ejected(), 1);
    assert_eq!(fail_times(&second, 5), None);
    assert_eq!(fail_times(&second, 3), None, "retries while the budget refuses");
    assert_eq!(second.state(), BreakerState::Closed);
    assert_eq!(budget.ejected(), 1);

    probe_after(&first, BASE_MAX).await;
    assert_eq!(budget.ejected(), 1, "half-open still counts as ejected");
    first.on_success();
    assert_eq!(budget.ejected(), 0);

    // The count was never reset, so one more failure opens it.
    assert!(second.on_failure(Instant::now()).is_some());
    assert_eq!(second.state(), BreakerState::Open);
    assert_eq!(budget.ejected(), 1);

    drop(second);
    assert_eq!(budget.ejected(), 0, "a dropped breaker gives its slot back");
}

#[test]
fn budget_rounds_down_but_allows_one() {
    assert_eq!(EjectionBudget::new(10, 25).max, 2);
    assert_eq!(EjectionBudget::new(2, 10).max, 1);
    assert_eq!(EjectionBudget::new(5, 0).max, 0);
    assert_eq!(EjectionBudget::new(4, 250).max, 4);
}

#[tokio::test(start_paused = true)]
async fn lone_endpoint_never_opens() {
    let breaker = Breaker::new(config(), EjectionBudget::new(1, 100));
    assert_eq!(fail_times(&breaker, 100), None);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker.is_available(Instant::now()));
}

#[test]
fn state_labels() {
    let states = [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen];
    assert_eq!(states.map(BreakerState::as_gauge), [0, 1, 2]);
    assert_eq!(states.map(BreakerState::as_str), ["closed", "open", "half-open"]);
}
