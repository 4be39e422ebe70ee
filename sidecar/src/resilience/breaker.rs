//! The per-endpoint circuit breaker: ejects an endpoint after consecutive failures and lets it
//! back in through one probe request at a time.
//!
//! It is a readiness gate, as in linkerd: the balancer asks [`Breaker::is_available`] and skips
//! endpoints that are not, so an open breaker costs nothing on the request path. Ejection follows
//! Envoy's outlier detection: each consecutive trip doubles the ejection time up to a cap, and a
//! service-wide [`EjectionBudget`] stops a bad deploy or a flaky network from ejecting every
//! endpoint at once.
//!
//! Outcomes are not tied to the admission that produced them: a success reported while half-open
//! closes the breaker and a failure re-opens it, even if it came from a request admitted before
//! the breaker opened. Outcomes reported while open are ignored, since the ejection already
//! stands. This keeps the caller's bookkeeping to one call per response.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How eagerly a breaker opens and how long it keeps an endpoint ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Ejection time of the first trip; also how long an unreported probe holds the probe slot.
    pub base_ejection: Duration,
    /// Cap on the doubled ejection time (before jitter).
    pub max_ejection: Duration,
}

/// Bounds how many endpoints of one service may be ejected (open or half-open) at once.
///
/// Shared by every [`Breaker`] of the service.
#[derive(Debug)]
pub struct EjectionBudget {
    max: usize,
    ejected: AtomicUsize,
}

/// A breaker's state as reported to metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// A state change, returned so the caller can record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// The right to send one request to the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The request is the half-open probe: its outcome decides whether the breaker closes.
    pub probe: bool,
    /// Set when admitting moved the breaker from open to half-open.
    pub transition: Option<Transition>,
}

/// One endpoint's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    budget: Arc<EjectionBudget>,
    // Every method holds this for a few instructions and never across an await.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Failures in a row while closed.
    failures: u32,
    /// Times opened since the breaker last closed; sets the ejection time.
    trips: u32,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// A probe was admitted at `probe_since` and has not reported yet (`None`: the slot is free
    /// again because its request ended without an outcome).
    HalfOpen {
        probe_since: Option<Instant>,
    },
}

// === impl EjectionBudget ===

impl EjectionBudget {
    /// A budget allowing `max_percent` of `endpoints` to be ejected, rounded down but at least
    /// one when the percentage is not zero. A lone endpoint is never ejected: with nowhere else
    /// to send its traffic, ejecting it can only turn some failures into all failures.
    pub fn new(endpoints: usize, max_percent: u32) -> Arc<Self> {
        let max = if endpoints < 2 || max_percent == 0 {
            0
        } else {
            (endpoints.saturating_mul(max_percent as usize) / 100).clamp(1, endpoints)
        };
        Arc::new(Self { max, ejected: AtomicUsize::new(0) })
    }

    /// How many endpoints are ejected now.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    fn try_acquire(&self) -> bool {
        // A plain counter: nothing else is published through it, so `Relaxed` is enough.
        self.ejected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.max).then_some(n + 1))
            .is_ok()
    }

    fn release(&self) {
        self.ejected.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl BreakerState ===

impl BreakerState {
    /// The value of the breaker-state gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

// === impl Breaker ===

impl Breaker {
    pub fn new(config: BreakerConfig, budget: Arc<EjectionBudget>) -> Self {
        Self { config, budget, inner: Mutex::new(Inner { phase: Phase::Closed, failures: 0, trips: 0 }) }
    }

    /// Cheap check for the balancer: could a request go here now (closed, open with its time
    /// elapsed, or half-open with its probe abandoned)? Claims nothing; [`Breaker::admit`] may
    /// still refuse if another request claims the probe first.
    pub fn is_available(&self, now: Instant) -> bool {
        match self.lock().phase {
            Phase::Closed => true,
            Phase::Open { until } => now >= until,
            Phase::HalfOpen { probe_since: None } => true,
            Phase::HalfOpen { probe_since: Some(since) } => self.probe_abandoned(since, now),
        }
    }

    /// Claims the right to send one request now; `None` means skip this endpoint.
    ///
    /// An open breaker whose time has elapsed moves to half-open here, and the request becomes
    /// its single probe. A probe that never reports frees the slot after `base_ejection`.
    pub fn admit(&self, now: Instant) -> Option<Admission> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => Some(Admission { probe: false, transition: None }),
            Phase::Open { until } if now >= until => {
                inner.phase = Phase::HalfOpen { probe_since: Some(now) };
                Some(Admission {
                    probe: true,
                    transition: Some(Transition { from: BreakerState::Open, to: BreakerState::HalfOpen }),
                })
            }
            Phase::HalfOpen { probe_since } if probe_since.is_none_or(|t| self.probe_abandoned(t, now)) => {
                inner.phase = Phase::HalfOpen { probe_since: Some(now) };
                Some(Admission { probe: true, transition: None })
            }
            Phase::Open { .. } | Phase::HalfOpen { .. } => None,
        }
    }

    /// Records a successful response. Closes a half-open breaker.
    pub fn on_success(&self) -> Option<Transition> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => {
                inner.failures = 0;
                None
            }
            Phase::HalfOpen { .. } => {
                inner.phase = Phase::Closed;
                inner.failures = 0;
                inner.trips = 0;
                self.budget.release();
                Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Closed })
            }
            Phase::Open { .. } => None,
        }
    }

    /// Records a failed response. Opens a closed breaker after enough failures in a row if the
    /// budget allows, and re-opens a half-open one for twice as long as last time.
    pub fn on_failure(&self, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        let from = match inner.phase {
            Phase::Closed => {
                // While the budget refuses, the count stays at or past the threshold, so every
                // further failure asks again rather than starting a new count.
                inner.failures = inner.failures.saturating_add(1);
                if inner.failures < self.config.consecutive_failures || !self.budget.try_acquire() {
                    return None;
                }
                inner.failures = 0;
                BreakerState::Closed
            }
            // The budget slot taken when it first opened is still held.
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
            Phase::Open { .. } => return None,
        };
        inner.trips = inner.trips.saturating_add(1);
        inner.phase = Phase::Open { until: now + ejection(&self.config, inner.trips) };
        Some(Transition { from, to: BreakerState::Open })
    }

    /// Frees the probe slot of a probe whose request ended without an outcome (cancelled, or
    /// refused by a limit of ours), so the next request can probe at once.
    pub fn abandon_probe(&self) {
        let mut inner = self.lock();
        if let Phase::HalfOpen { probe_since: Some(_) } = inner.phase {
            inner.phase = Phase::HalfOpen { probe_since: None };
        }
    }

    /// The current state. An open breaker whose time has elapsed still reports `Open` until
    /// [`Breaker::admit`] moves it to half-open.
    pub fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn probe_abandoned(&self, probe_since: Instant, now: Instant) -> bool {
        now >= probe_since + self.config.base_ejection
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held, and `Inner` is plain data, so a poisoned lock
        // still guards a consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Breaker {
    /// An endpoint removed from discovery while ejected must give its budget slot back.
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        if !matches!(inner.phase, Phase::Closed) {
            self.budget.release();
        }
    }
}

/// The ejection time of the `trips`-th consecutive trip: `base * 2^(trips-1)`, capped, plus up to
/// 10% jitter so endpoints ejected together do not all return together.
fn ejection(config: &BreakerConfig, trips: u32) -> Duration {
    let factor = 1u32.checked_shl(trips.saturating_sub(1)).unwrap_or(u32::MAX);
    let nominal = config.base_ejection.saturating_mul(factor).min(config.max_ejection);
    nominal.saturating_add(nominal.mul_f64(fastrand::f64() * 0.1))
}

#[cfg(test)]
mod tests;
