//! Rollouts on the wire: `GET /v1/rollouts` and `GET /v1/rollouts/{namespace}/{name}` answer
//! with each rollout's status ([`RolloutStatus`]) as the control plane derived it from the
//! event log; the actions (`pause`, `resume`, `abort`, `promote`) answer with it too.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum RolloutPhase {
    /// Steps are being taken and judged.
    Progressing,
    /// Waiting for `resume` (or `abort`): no data, or paused by hand. The weights stay.
    Paused,
    /// Done: the canary takes all the traffic.
    Promoted,
    /// Given up: every completed step was compensated, the stable Service takes all the traffic.
    Aborted,
    /// Aborting gradually: the completed steps are being undone in reverse.
    RollingBack,
}

impl RolloutPhase {
    /// Whether the saga has ended (nothing will change until a new canary is applied).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Promoted | Self::Aborted)
    }
}

/// What an analysis interval was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum VerdictResult {
    Success,
    Failure,
    /// Fewer requests reached the canary than `minRequests`.
    NoData,
}

/// One judged interval, with the numbers it was judged on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// When it was judged (RFC 3339).
    pub at: String,
    pub result: VerdictResult,
    /// The step (0-based) it was judged on.
    #[serde(default)]
    pub step: u64,
    /// Requests the canary served over the interval.
    pub requests: u64,
    /// Of those, the fraction not 5xx (0 to 1, as `/v1/stats` gives it; absent: no requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// The canary's p99 latency over the interval, milliseconds (absent: no requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<u32>,
    /// Which threshold failed, or why there was no data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A rollout's status: where its saga is, the weights it wrote, what the analysis found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub namespace: String,
    pub name: String,
    /// The HTTPRoute whose weights it shifts (`namespace/name`).
    pub route: String,
    pub stable: String,
    pub canary: String,
    pub phase: RolloutPhase,
    /// The current step, 0-based (`steps` once promoted).
    pub step: u64,
    /// Steps in all (with the final `setWeight: 100` added when the spec lacks it).
    pub steps: u64,
    pub stable_weight: u32,
    pub canary_weight: u32,
    /// Why it is paused or aborted; empty otherwise.
    #[serde(default)]
    pub message: String,
    /// Failed intervals so far, and how many abort.
    pub failures: u32,
    pub failure_limit: u32,
    /// The latest judged intervals, latest first, at most [`MAX_VERDICTS`].
    #[schema(max_items = 10)]
    pub verdicts: Vec<Verdict>,
    /// The seq of the event that started this run of the saga (its events follow it in the log,
    /// aggregate `RolloutRun/namespace/name`).
    pub started_seq: u64,
}

/// Verdicts a status carries at most.
pub const MAX_VERDICTS: usize = 10;

/// `GET /v1/rollouts` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutList {
    pub items: Vec<RolloutStatus>,
}

/// What `POST /v1/rollouts/{namespace}/{name}/{action}` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RolloutAction {
    /// Hold the current step and weights until `resume`.
    Pause,
    /// Go on from where it was paused (the failure count starts again).
    Resume,
    /// Compensate every completed step (as `rollback.mode` says) and stop.
    Abort,
    /// Skip the remaining steps and analysis: the canary at 100% now.
    Promote,
}

impl RolloutAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
            Self::Promote => "promote",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::round_trip;

    #[test]
    fn a_status_is_the_json_the_dashboard_reads() {
        let status: RolloutStatus = round_trip(json!({
            "namespace": "default", "name": "web", "route": "default/web",
            "stable": "web-v1", "canary": "web-v2",
            "phase": "Paused", "step": 1, "steps": 3, "stableWeight": 90, "canaryWeight": 10,
            "message": "no data: 3 requests to web-v2 in 5s, fewer than minRequests 20",
            "failures": 0, "failureLimit": 2,
            "verdicts": [{ "at": "2026-12-03T08:00:00.000Z", "result": "noData", "step": 1, "requests": 3,
                           "successRate": 1.0, "p99Ms": 5, "reason": "3 requests, fewer than 20" }],
            "startedSeq": 7
        }));
        assert_eq!(status.phase, RolloutPhase::Paused);
        assert_eq!(status.verdicts[0].result, VerdictResult::NoData);
        let action: RolloutAction = serde_json::from_value(json!("promote")).unwrap();
        assert_eq!(action.as_str(), "promote");
    }
}
