//! One attempt's claim on an endpoint: its place in the endpoint's load and, when half-open, the
//! breaker's probe. Whatever ends the attempt — an outcome, a limit of ours, the caller going
//! away — gives both back. HTTP requests and opaque TCP connects share it.

use std::time::Duration;

use pilotfish_api::policy::FailureKind;
use tokio::time::Instant;

use super::balance::PeakEwma;
use super::breaker::{Breaker, Transition};
use super::retry::{self, Outcome, Verdict};

/// The latency a failed attempt counts as in the endpoint's load estimate.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

pub struct Attempt<'a> {
    breaker: &'a Breaker,
    load: &'a PeakEwma,
    probe: bool,
    open: bool,
}

impl<'a> Attempt<'a> {
    pub fn start(breaker: &'a Breaker, load: &'a PeakEwma, probe: bool) -> Self {
        load.start();
        Self { breaker, load, probe, open: true }
    }

    /// Records the outcome: latency (an attempt that got no response counts as slow, so the
    /// balancer backs off an endpoint that refuses, resets or hangs; error responses are the
    /// breaker's business), and the breaker's verdict.
    pub fn finish(
        mut self,
        outcome: Outcome,
        elapsed: Duration,
        failure_on: &[FailureKind],
        now: Instant,
    ) -> Option<Transition> {
        self.open = false;
        let rtt = match outcome {
            Outcome::Response { .. } | Outcome::Connected => elapsed,
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout => elapsed.max(FAILURE_PENALTY),
        };
        self.load.finish(Some(rtt), now);
        match retry::verdict(outcome, failure_on) {
            Verdict::Success => self.breaker.on_success(),
            Verdict::Failure => self.breaker.on_failure(now),
            Verdict::Neutral => {
                if self.probe {
                    self.breaker.abandon_probe();
                }
                None
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.open {
            self.load.finish(None, Instant::now());
            if self.probe {
                self.breaker.abandon_probe();
            }
        }
    }
}
