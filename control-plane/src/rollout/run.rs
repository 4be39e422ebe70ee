//! A rollout's saga as the log tells it: the events of aggregate `RolloutRun/namespace/name`
//! ([`kind`]) and the [`Run`] they fold into, part of the read model. Nothing here decides what
//! to do next (that is `saga`); a restarted or failed-over control plane folds the same events
//! into the same run and so resumes exactly where the last one stopped.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use pilotfish_api::rollout::{RolloutSpec, Step};
use pilotfish_api::wire::{RolloutPhase, RolloutStatus, Verdict, VerdictResult, MAX_VERDICTS};

use crate::store::Event;

/// Event kinds of a rollout's saga.
pub mod kind {
    /// A new run: the spec it follows (a new `canary`, or a retry after an abort).
    pub const STARTED: &str = "RolloutStarted";
    /// A step began; a `setWeight` step's route write is in the same batch.
    pub const STEP: &str = "RolloutStepStarted";
    /// An analysis interval judged, with its numbers.
    pub const VERDICT: &str = "RolloutVerdict";
    pub const PAUSED: &str = "RolloutPaused";
    pub const RESUMED: &str = "RolloutResumed";
    /// The saga gives up; compensations follow (at once, or one per interval when gradual).
    pub const ABORTED: &str = "RolloutAborted";
    /// One completed weight step undone; its route write is in the same batch.
    pub const COMPENSATED: &str = "RolloutCompensated";
    /// The canary takes all the traffic; the route write is in the same batch.
    pub const PROMOTED: &str = "RolloutPromoted";

    /// Whether an event kind is one of a rollout's.
    pub fn is_rollout(kind: &str) -> bool {
        kind.starts_with("Rollout")
    }
}

/// The aggregate of a rollout's saga events.
pub fn run_aggregate(namespace: &str, name: &str) -> String {
    format!("RolloutRun/{namespace}/{name}")
}

/// `RolloutStarted` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub namespace: String,
    pub name: String,
    pub spec: RolloutSpec,
}

/// `RolloutStepStarted` and `RolloutCompensated` data: the step and the weights written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Weights {
    pub step: u64,
    pub stable_weight: u32,
    pub canary_weight: u32,
}

/// `RolloutPaused` and `RolloutAborted` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reason {
    pub reason: String,
}

/// A rollout's saga as folded from its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The run aggregate's version: every write of the saga expects it, so of two writers
    /// (replicas, a driver and an admin's action) only one takes each transition.
    pub version: u64,
    pub started_seq: u64,
    pub namespace: String,
    pub name: String,
    pub spec: RolloutSpec,
    /// The current step (the plan's length once promoted).
    pub step: usize,
    /// When the current step began (Unix ms); `None` before the first step.
    pub step_at: Option<u64>,
    pub stable_weight: u32,
    pub canary_weight: u32,
    /// The canary weight before each completed weight step, latest last: what compensating
    /// that step restores.
    pub undo: Vec<(usize, u32)>,
    /// When the latest interval was judged, or the run resumed (Unix ms).
    pub judged_at: Option<u64>,
    /// Whether an interval of the current step was judged a success.
    pub step_passed: bool,
    pub verdicts: VecDeque<Verdict>,
    pub failures: u32,
    pub paused: Option<String>,
    pub aborted: Option<String>,
    /// When the latest compensation was written (Unix ms).
    pub compensated_at: Option<u64>,
    pub promoted: bool,
}

impl Run {
    pub fn plan(&self) -> Vec<Step> {
        self.spec.plan()
    }

    pub fn phase(&self) -> RolloutPhase {
        if self.promoted {
            RolloutPhase::Promoted
        } else if self.aborted.is_some() {
            if self.undo.is_empty() && self.canary_weight == 0 {
                RolloutPhase::Aborted
            } else {
                RolloutPhase::RollingBack
            }
        } else if self.paused.is_some() {
            RolloutPhase::Paused
        } else {
            RolloutPhase::Progressing
        }
    }

    /// The route it shifts, `namespace/name`.
    pub fn route(&self) -> String {
        format!("{}/{}", self.spec.route_namespace(&self.namespace), self.spec.target_ref.name)
    }

    pub fn status(&self) -> RolloutStatus {
        RolloutStatus {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            route: self.route(),
            stable: self.spec.stable.clone(),
            canary: self.spec.canary.clone(),
            phase: self.phase(),
            step: self.step as u64,
            steps: self.plan().len() as u64,
            stable_weight: self.stable_weight,
            canary_weight: self.canary_weight,
            message: self.aborted.clone().or_else(|| self.paused.clone()).unwrap_or_default(),
            failures: self.failures,
            failure_limit: self.spec.analysis.failure_limit,
            verdicts: self.verdicts.iter().cloned().collect(),
            started_seq: self.started_seq,
        }
    }
}

/// Every rollout's latest run, by `namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runs(pub BTreeMap<String, Run>);

impl Runs {
    /// Folds in one of a rollout's events.
    pub fn apply(&mut self, event: &Event) -> Result<(), String> {
        let at = unix_ms(&event.at);
        let data = |e: serde_json::Error| format!("{}: {e}", event.kind);
        let key = event.aggregate.strip_prefix("RolloutRun/").unwrap_or(&event.aggregate).to_owned();
        if event.kind == kind::STARTED {
            let started: Started = serde_json::from_value(event.data.clone()).map_err(data)?;
            // The weights the route had before stay until the first step writes its own.
            let (stable_weight, canary_weight) =
                self.0.get(&key).map_or((100, 0), |r| (r.stable_weight, r.canary_weight));
            let run = Run {
                version: event.version,
                started_seq: event.seq,
                namespace: started.namespace,
                name: started.name,
                spec: started.spec,
                step: 0,
                step_at: None,
                stable_weight,
                canary_weight,
                undo: Vec::new(),
                judged_at: None,
                step_passed: false,
                verdicts: VecDeque::new(),
                failures: 0,
                paused: None,
                aborted: None,
                compensated_at: None,
                promoted: false,
            };
            self.0.insert(key, run);
            return Ok(());
        }
        let Some(run) = self.0.get_mut(&key) else {
            return Err(format!("{} before the rollout's RolloutStarted", event.kind));
        };
        run.version = event.version;
        match event.kind.as_str() {
            kind::STEP => {
                let w: Weights = serde_json::from_value(event.data.clone()).map_err(data)?;
                let step = usize::try_from(w.step).unwrap_or(usize::MAX);
                if matches!(run.plan().get(step), Some(Step::SetWeight(_))) {
                    run.undo.push((step, run.canary_weight));
                }
                (run.step, run.step_at, run.step_passed) = (step, Some(at), false);
                (run.stable_weight, run.canary_weight) = (w.stable_weight, w.canary_weight);
            }
            kind::VERDICT => {
                let mut verdict: Verdict = serde_json::from_value(event.data.clone()).map_err(data)?;
                verdict.at.clone_from(&event.at);
                match verdict.result {
                    VerdictResult::Failure => run.failures += 1,
                    VerdictResult::Success => run.step_passed = true,
                    VerdictResult::NoData => {}
                }
                run.judged_at = Some(at);
                run.verdicts.push_front(verdict);
                run.verdicts.truncate(MAX_VERDICTS);
            }
            kind::PAUSED => {
                let r: Reason = serde_json::from_value(event.data.clone()).map_err(data)?;
                run.paused = Some(r.reason);
            }
            kind::RESUMED => {
                // A fresh start for the analysis: the failures that led here were seen to.
                (run.paused, run.failures, run.judged_at) = (None, 0, Some(at));
            }
            kind::ABORTED => {
                let r: Reason = serde_json::from_value(event.data.clone()).map_err(data)?;
                (run.aborted, run.paused, run.compensated_at) = (Some(r.reason), None, Some(at));
            }
            kind::COMPENSATED => {
                let w: Weights = serde_json::from_value(event.data.clone()).map_err(data)?;
                run.undo.pop();
                (run.stable_weight, run.canary_weight) = (w.stable_weight, w.canary_weight);
                run.compensated_at = Some(at);
            }
            kind::PROMOTED => {
                (run.promoted, run.paused, run.step) = (true, None, run.plan().len());
                (run.stable_weight, run.canary_weight) = (0, 100);
            }
            other => return Err(format!("unknown event kind {other:?}")),
        }
        Ok(())
    }
}

/// Unix milliseconds of an event's RFC 3339 time (0 if unreadable, which only makes the saga
/// act sooner).
pub fn unix_ms(at: &str) -> u64 {
    humantime::parse_rfc3339(at)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}
