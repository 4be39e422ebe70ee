//! The saga's decisions: from a [`Run`] as the log folds it and the time, the next transition
//! — the events to append and the weights the route must have after them — or none yet. Pure
//! (no store, no clock, no telemetry of its own), so every path is tested with plain numbers.
//!
//! - A step begins with its own event; a `setWeight` step writes the route in the same batch.
//! - While the canary has weight, every `interval` is judged (see `analysis`): a success
//!   completes a `setWeight` step; a failure counts, and `failureLimit` of them abort; no data
//!   pauses, aborts or waits, as `onNoData` says. A `pause` step completes when its time is up.
//! - After the last step the rollout is promoted: the canary at 100%.
//! - An abort compensates every completed weight step in reverse: all in the abort's batch
//!   (`immediate`), or the first at once and one more per interval (`gradual`). The last
//!   compensation always leaves the stable Service at 100%.
//! - A run whose Rollout resource is deleted is aborted and compensated at once.

use serde_json::{json, Value};

use pilotfish_api::rollout::{OnNoData, RollbackMode, RolloutSpec, Step};
use pilotfish_api::wire::{RolloutAction, RolloutPhase, Verdict, VerdictResult};

use super::analysis::{judge, Observed};
use super::run::{kind, Reason, Run, Started, Weights};

/// Events to append (in order, to the run's aggregate) and the route's weights after them
/// (`(stable, canary)`, when they change).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub events: Vec<(&'static str, Value)>,
    pub weights: Option<(u32, u32)>,
}

impl Transition {
    fn of(kind: &'static str, data: Value) -> Self {
        Self { events: vec![(kind, data)], weights: None }
    }

    /// The saga pauses, saying why (e.g. the route cannot take the next step's weights).
    pub fn paused(reason: String) -> Self {
        Self::of(kind::PAUSED, json!(Reason { reason }))
    }

    fn then(mut self, more: Transition) -> Self {
        self.events.extend(more.events);
        self.weights = more.weights.or(self.weights);
        self
    }
}

/// The first event of a new run of `spec`.
pub fn start(namespace: &str, name: &str, spec: &RolloutSpec) -> Transition {
    let started = Started { namespace: namespace.to_owned(), name: name.to_owned(), spec: spec.clone() };
    Transition::of(kind::STARTED, json!(started))
}

/// A new canary was applied while `run` is under way: it is aborted (and compensated) first.
pub fn replaced(run: &Run, canary: &str) -> Transition {
    abort(run, format!("replaced by a new canary, {canary}"))
}

/// `run`'s Rollout resource was deleted while it was under way: nothing will drive it on, so
/// it is aborted (if not yet) and every completed step compensated at once, whatever the
/// rollback mode, leaving the stable Service at 100%.
pub fn deleted(run: &Run) -> Transition {
    let all = run.undo.len().max(1);
    if run.aborted.is_some() {
        return compensate(run, run.undo.len(), all);
    }
    let reason = "its Rollout resource was deleted".to_owned();
    Transition::of(kind::ABORTED, json!(Reason { reason })).then(compensate(run, run.undo.len(), all))
}

/// What `run` does next at `now` (Unix ms); `sample` reads the canary's telemetry over the
/// last so many seconds, asked only when an interval is due.
pub fn next(run: &Run, now: u64, sample: impl FnOnce(u64) -> Observed) -> Option<Transition> {
    let plan = run.plan();
    let interval = run.spec.analysis.interval.get().as_millis() as u64;
    match run.phase() {
        RolloutPhase::Promoted | RolloutPhase::Aborted | RolloutPhase::Paused => None,
        RolloutPhase::RollingBack => {
            (now >= run.compensated_at.unwrap_or(0) + interval).then(|| compensate(run, run.undo.len(), 1))
        }
        RolloutPhase::Progressing => {
            let Some(step_at) = run.step_at else { return Some(begin(run, &plan, 0)) };
            if run.canary_weight > 0 && now >= run.judged_at.unwrap_or(0).max(step_at) + interval {
                let verdict = judge(&run.spec.analysis, run.step, sample(interval / 1000));
                return Some(judged(run, &plan, verdict));
            }
            let done = match plan.get(run.step) {
                Some(Step::SetWeight(0)) => true,
                Some(Step::SetWeight(_)) => run.step_passed,
                Some(Step::Pause(d)) => now >= step_at + d.get().as_millis() as u64,
                None => true,
            };
            done.then(|| advance(run, &plan))
        }
    }
}

/// An admin's action on `run`; `spec` is the Rollout as stored now (a resume after an abort
/// starts a new run of it). `Err`: why the action does not apply in the run's phase.
pub fn act(run: &Run, action: RolloutAction, actor: &str, spec: &RolloutSpec) -> Result<Transition, String> {
    let phase = run.phase();
    let refuse = |what: &str| Err(format!("rollout {}/{} is {phase:?}: {what}", run.namespace, run.name));
    match (action, phase) {
        (RolloutAction::Pause, RolloutPhase::Progressing) => {
            Ok(Transition::of(kind::PAUSED, json!(Reason { reason: format!("paused by {actor}") })))
        }
        (RolloutAction::Pause, _) => refuse("only a progressing rollout pauses"),
        (RolloutAction::Resume, RolloutPhase::Paused) => Ok(Transition::of(kind::RESUMED, json!({}))),
        (RolloutAction::Resume, RolloutPhase::Aborted) => Ok(start(&run.namespace, &run.name, spec)),
        (RolloutAction::Resume, _) => {
            refuse("only a paused rollout resumes (or an aborted one, from its first step)")
        }
        (RolloutAction::Abort, RolloutPhase::Progressing | RolloutPhase::Paused) => {
            Ok(abort(run, format!("aborted by {actor}")))
        }
        (RolloutAction::Abort, _) => refuse("only a progressing or paused rollout aborts"),
        (
            RolloutAction::Promote,
            RolloutPhase::Progressing | RolloutPhase::Paused | RolloutPhase::RollingBack,
        ) => Ok(promote(run)),
        (RolloutAction::Promote, _) => refuse("it has ended; apply a new canary to start another rollout"),
    }
}

/// Step `step` begins: a `setWeight` writes its weights.
fn begin(run: &Run, plan: &[Step], step: usize) -> Transition {
    let (stable_weight, canary_weight, weights) = match plan[step] {
        Step::SetWeight(w) => (100 - w, w, Some((100 - w, w))),
        Step::Pause(_) => (run.stable_weight, run.canary_weight, None),
    };
    let data = Weights { step: step as u64, stable_weight, canary_weight };
    Transition { events: vec![(kind::STEP, json!(data))], weights }
}

/// The step after the current one, or promotion after the last.
fn advance(run: &Run, plan: &[Step]) -> Transition {
    if run.step + 1 < plan.len() {
        begin(run, plan, run.step + 1)
    } else {
        promote(run)
    }
}

fn promote(run: &Run) -> Transition {
    let weights = ((run.stable_weight, run.canary_weight) != (0, 100)).then_some((0, 100));
    Transition { events: vec![(kind::PROMOTED, json!({}))], weights }
}

/// A verdict, and what it leads to.
fn judged(run: &Run, plan: &[Step], verdict: Verdict) -> Transition {
    let a = &run.spec.analysis;
    let recorded = Transition::of(kind::VERDICT, json!(verdict));
    match verdict.result {
        VerdictResult::Failure if run.failures + 1 >= a.failure_limit => {
            let reason = format!(
                "{} failed intervals (failureLimit {}); the last: {}",
                run.failures + 1,
                a.failure_limit,
                verdict.reason
            );
            recorded.then(abort(run, reason))
        }
        VerdictResult::Failure => recorded,
        VerdictResult::NoData => match a.on_no_data {
            OnNoData::Pause => {
                let reason = format!(
                    "no data: {} to {}; resume it once the canary gets traffic (onNoData: pause)",
                    verdict.reason, run.spec.canary
                );
                recorded.then(Transition::of(kind::PAUSED, json!(Reason { reason })))
            }
            OnNoData::Abort => {
                let reason = format!("no data: {} to {} (onNoData: abort)", verdict.reason, run.spec.canary);
                recorded.then(abort(run, reason))
            }
            OnNoData::Continue => recorded,
        },
        VerdictResult::Success => match plan.get(run.step) {
            Some(Step::SetWeight(_)) => recorded.then(advance(run, plan)),
            _ => recorded,
        },
    }
}

/// Gives up: immediate compensates everything now, gradual the latest step now and the rest
/// one per interval.
fn abort(run: &Run, reason: String) -> Transition {
    let aborted = Transition::of(kind::ABORTED, json!(Reason { reason }));
    let count = match run.spec.rollback.mode {
        RollbackMode::Immediate => run.undo.len().max(1),
        RollbackMode::Gradual => 1,
    };
    aborted.then(compensate(run, run.undo.len(), count))
}

/// Compensates `count` of the `pending` completed weight steps (latest first); the last of all
/// leaves the stable Service at 100%.
fn compensate(run: &Run, pending: usize, count: usize) -> Transition {
    let mut out = Transition { events: Vec::new(), weights: None };
    let undo = &run.undo[..pending];
    for (i, &(step, before)) in undo.iter().enumerate().rev().take(count) {
        let canary_weight = if i == 0 { 0 } else { before };
        let data = Weights { step: step as u64, stable_weight: 100 - canary_weight, canary_weight };
        out.events.push((kind::COMPENSATED, json!(data)));
        out.weights = Some((100 - canary_weight, canary_weight));
    }
    if undo.is_empty() && run.canary_weight > 0 {
        // No weight step of this run to undo, yet the canary has traffic: take it away.
        let data = Weights { step: run.step as u64, stable_weight: 100, canary_weight: 0 };
        out.events.push((kind::COMPENSATED, json!(data)));
        out.weights = Some((100, 0));
    }
    out
}

#[cfg(test)]
mod tests;
