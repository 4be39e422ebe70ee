//! Judging one analysis interval of the canary from the mesh's own telemetry: the canary's rows
//! of `/v1/stats` over the interval ([`Observed`]) against the rollout's thresholds.
//!
//! Both sides count. The server side — what the canary's own sidecars saw on inbound — has every
//! attempt, also those a caller's retry then hid (with retries on, the clients may see no
//! failure at all while the canary fails a fifth of its requests); it is judged when the canary
//! has sidecars reporting. The client side — what the callers' sidecars saw — has the failures
//! that never reached the canary (connect errors, resets, timeouts, answered by the caller's
//! sidecar itself); it fails the interval too. Without server data the client side alone judges.
//!
//! Fewer requests than `minRequests` is no data, whatever they show: a handful of requests
//! proves nothing either way, and no data must never promote. Otherwise the interval fails when
//! the success rate is under `successRate.min` or the p99 is over `latencyP99.max` (the p99 is
//! the upper bound of its histogram bucket, so a threshold between two bounds is judged against
//! the next bound up, which is the conservative side).

use pilotfish_api::rollout::Analysis;
use pilotfish_api::wire::{StatsRow, Verdict, VerdictResult};

/// What the telemetry saw of the canary over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub requests: u64,
    pub successes: u64,
    pub p99_ms: Option<u32>,
}

/// What both sides saw of the canary over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    /// The canary's own sidecars, on inbound: every attempt.
    pub server: Sample,
    /// Its callers' sidecars: the answers they got, their own local failures included.
    pub client: Sample,
}

impl Sample {
    /// The sample of a `/v1/stats` row (none: no traffic).
    pub fn of(row: Option<&StatsRow>) -> Self {
        row.map_or_else(Self::default, |r| Self {
            requests: r.golden.requests,
            successes: r.golden.successes,
            p99_ms: r.golden.p99_ms,
        })
    }
}

/// The verdict on what was `seen` (at `step`) under `analysis`; `at` is filled in by the log.
pub fn judge(analysis: &Analysis, step: usize, seen: Observed) -> Verdict {
    if seen.server.requests == 0 {
        return judge_side(analysis, step, seen.client, "as its callers saw it");
    }
    let server = judge_side(analysis, step, seen.server, "as the canary's sidecars saw it");
    let client = judge_side(analysis, step, seen.client, "as its callers saw it");
    if server.result != VerdictResult::Failure && client.result == VerdictResult::Failure {
        client
    } else {
        server
    }
}

fn judge_side(analysis: &Analysis, step: usize, sample: Sample, side: &str) -> Verdict {
    let success_rate = (sample.requests > 0).then(|| sample.successes as f64 / sample.requests as f64);
    let (result, reason) = if sample.requests < u64::from(analysis.min_requests) || sample.requests == 0 {
        let reason = format!(
            "{} requests in the interval, fewer than minRequests {}",
            sample.requests,
            analysis.min_requests.max(1)
        );
        (VerdictResult::NoData, reason)
    } else if let Some(low) =
        success_rate.filter(|rate| rate * 100.0 < analysis.success_rate.min).map(|rate| rate * 100.0)
    {
        let min = analysis.success_rate.min;
        let reason = format!("success rate {low:.2}% is under successRate.min {min}% ({side})");
        (VerdictResult::Failure, reason)
    } else if let Some((p99, max)) = analysis
        .latency_p99
        .as_ref()
        .zip(sample.p99_ms)
        .map(|(limit, p99)| (p99, limit.max))
        .filter(|(p99, max)| u128::from(*p99) > max.get().as_millis())
    {
        (VerdictResult::Failure, format!("p99 {p99}ms is over latencyP99.max {max} ({side})"))
    } else {
        (VerdictResult::Success, String::new())
    };
    Verdict {
        at: String::new(),
        result,
        step: step as u64,
        requests: sample.requests,
        success_rate,
        p99_ms: sample.p99_ms,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use pilotfish_api::rollout::LatencyP99;
    use pilotfish_api::Duration;

    use super::*;

    fn analysis() -> Analysis {
        Analysis {
            latency_p99: Some(LatencyP99 { max: Duration::from_millis(500) }),
            min_requests: 20,
            ..Analysis::default()
        }
    }

    fn sample(requests: u64, successes: u64, p99_ms: u32) -> Observed {
        Observed { server: Sample::default(), client: Sample { requests, successes, p99_ms: Some(p99_ms) } }
    }

    #[test]
    fn each_threshold_decides_with_its_numbers_in_the_reason() {
        let a = analysis();
        let ok = judge(&a, 1, sample(100, 99, 500));
        assert_eq!(
            (ok.result, ok.step, ok.requests, ok.success_rate),
            (VerdictResult::Success, 1, 100, Some(0.99))
        );
        let low = judge(&a, 1, sample(100, 80, 5));
        assert_eq!(low.result, VerdictResult::Failure);
        assert_eq!(low.reason, "success rate 80.00% is under successRate.min 99% (as its callers saw it)");
        let slow = judge(&a, 1, sample(100, 100, 750));
        assert_eq!(
            (slow.result, slow.reason.as_str()),
            (VerdictResult::Failure, "p99 750ms is over latencyP99.max 500ms (as its callers saw it)")
        );
        let few = judge(&a, 1, sample(19, 0, 5));
        assert_eq!(few.result, VerdictResult::NoData, "too few to judge, even all failing");
        assert!(few.reason.contains("19 requests"), "{}", few.reason);
        assert_eq!(judge(&a, 1, sample(20, 20, 5)).result, VerdictResult::Success);
    }

    #[test]
    fn no_requests_is_no_data_even_when_none_are_required() {
        let a = Analysis { min_requests: 0, ..Analysis::default() };
        let none = judge(&a, 0, Observed::default());
        assert_eq!((none.result, none.success_rate), (VerdictResult::NoData, None));
        assert_eq!(Sample::of(None), Sample::default());
    }

    #[test]
    fn the_server_side_judges_when_it_has_data_and_the_client_side_can_still_fail_it() {
        let a = analysis();
        let of = |requests, successes| Sample { requests, successes, p99_ms: Some(5) };
        // Retries hide the canary's failures from its callers; its own sidecars saw them.
        let retried = judge(&a, 0, Observed { server: of(125, 100), client: of(100, 100) });
        assert_eq!((retried.result, retried.requests), (VerdictResult::Failure, 125));
        assert!(retried.reason.contains("(as the canary's sidecars saw it)"), "{}", retried.reason);
        // Connect errors never reached the canary: only its callers saw them.
        let unreachable = judge(&a, 0, Observed { server: of(90, 90), client: of(100, 90) });
        assert_eq!((unreachable.result, unreachable.requests), (VerdictResult::Failure, 100));
        assert!(unreachable.reason.contains("(as its callers saw it)"), "{}", unreachable.reason);
        let healthy = judge(&a, 0, Observed { server: of(100, 100), client: of(100, 100) });
        assert_eq!((healthy.result, healthy.requests), (VerdictResult::Success, 100));
        // Server data, too few callers' requests to judge: the server side decides.
        let few_callers = judge(&a, 0, Observed { server: of(100, 100), client: of(3, 0) });
        assert_eq!(few_callers.result, VerdictResult::Success);
    }
}
