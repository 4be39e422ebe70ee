//! The saga run against a simulated clock and telemetry: each transition is folded back in as
//! the log would, so these are the same steps a control plane takes.

use std::time::{Duration, UNIX_EPOCH};

use pilotfish_api::rollout::{RollbackMode, RolloutSpec};
use pilotfish_api::wire::{RolloutAction, RolloutPhase, VerdictResult};

use super::super::analysis::{Observed, Sample};
use super::super::run::{kind, Runs};
use super::{act, deleted, next, start, Transition};
use crate::store::Event;

const KEY: &str = "default/web";

fn spec(steps: &str, analysis: &str) -> RolloutSpec {
    let doc = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Rollout\nmetadata: {{name: web}}\nspec:\n  targetRef: {{kind: HTTPRoute, name: web}}\n  stable: web-v1\n  canary: web-v2\n  steps: {steps}\n  analysis: {analysis}\n"
    );
    match pilotfish_api::parse_stream("test", &doc).unwrap().remove(0) {
        pilotfish_api::Resource::Rollout(r) => r.spec,
        other => panic!("{other:?}"),
    }
}

/// A rollout's log and clock.
struct Sim {
    runs: Runs,
    seq: u64,
    version: u64,
    /// Unix ms.
    now: u64,
    /// Every event kind written, with the route's weights when a batch changed them.
    log: Vec<(&'static str, Option<(u32, u32)>)>,
}

impl Sim {
    fn new(spec: &RolloutSpec) -> Self {
        let mut sim =
            Self { runs: Runs::default(), seq: 0, version: 0, now: 1_800_000_000_000, log: Vec::new() };
        sim.commit(start("default", "web", spec));
        sim
    }

    fn commit(&mut self, t: Transition) {
        let at = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.now)).to_string();
        let n = t.events.len();
        for (i, (kind, data)) in t.events.into_iter().enumerate() {
            self.seq += 1;
            self.version += 1;
            let event = Event {
                seq: self.seq,
                id: String::new(),
                at: at.clone(),
                kind: kind.to_owned(),
                aggregate: "RolloutRun/default/web".into(),
                version: self.version,
                data,
                actor: "test".into(),
            };
            self.runs.apply(&event).unwrap();
            self.log.push((kind, if i + 1 == n { t.weights } else { None }));
        }
    }

    fn run(&self) -> &super::Run {
        &self.runs.0[KEY]
    }

    /// Ticks each 250 ms for `seconds`, the canary's telemetry as `sample` says.
    fn tick_for(&mut self, seconds: u64, sample: Sample) {
        for _ in 0..seconds * 4 {
            self.now += 250;
            let seen = Observed { server: sample, client: sample };
            if let Some(t) = next(self.run(), self.now, |_| seen) {
                self.commit(t);
            }
        }
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.log.iter().map(|(k, _)| *k).collect()
    }

    fn weights(&self) -> Vec<(u32, u32)> {
        self.log.iter().filter_map(|(_, w)| *w).collect()
    }
}

fn healthy() -> Sample {
    Sample { requests: 100, successes: 100, p99_ms: Some(5) }
}

fn failing_a_fifth() -> Sample {
    Sample { requests: 100, successes: 80, p99_ms: Some(5) }
}

#[test]
fn a_healthy_canary_is_promoted_step_by_step_each_weight_judged_once() {
    let spec = spec("[{setWeight: 20}, {pause: 10s}, {setWeight: 50}]", "{interval: 5s}");
    let mut sim = Sim::new(&spec);
    sim.tick_for(1, healthy());
    assert_eq!((sim.run().step, sim.run().canary_weight), (0, 20));
    sim.tick_for(40, healthy());
    assert_eq!(sim.run().phase(), RolloutPhase::Promoted);
    assert_eq!(sim.weights(), [(80, 20), (50, 50), (0, 100)]);
    let began = sim.kinds().iter().filter(|k| **k == kind::STEP).count();
    assert_eq!(began, 4, "each of the 4 steps (with the final setWeight 100) once: {:?}", sim.kinds());
    assert!(sim.run().verdicts.iter().all(|v| v.result == VerdictResult::Success));
    // 5 s at 20%, 10 s paused, 5 s at 50%, 5 s at 100%: promoted after about 25 s.
    let mut timed = Sim::new(&spec);
    timed.tick_for(24, healthy());
    assert_ne!(timed.run().phase(), RolloutPhase::Promoted);
    timed.tick_for(2, healthy());
    assert_eq!(timed.run().phase(), RolloutPhase::Promoted);
}

#[test]
fn failing_intervals_abort_at_the_limit_and_compensate_every_step_in_reverse_at_once() {
    let spec = spec("[{setWeight: 10}, {setWeight: 30}, {setWeight: 60}]", "{interval: 5s, failureLimit: 2}");
    let mut sim = Sim::new(&spec);
    sim.tick_for(11, healthy());
    assert_eq!((sim.run().step, sim.run().canary_weight), (2, 60));
    sim.tick_for(5, failing_a_fifth());
    assert_eq!((sim.run().phase(), sim.run().failures), (RolloutPhase::Progressing, 1));
    sim.tick_for(5, failing_a_fifth());
    let run = sim.run();
    assert_eq!(run.phase(), RolloutPhase::Aborted);
    assert_eq!((run.stable_weight, run.canary_weight), (100, 0));
    assert!(
        run.aborted.as_ref().unwrap().contains("2 failed intervals (failureLimit 2)"),
        "{:?}",
        run.aborted
    );
    assert!(run.aborted.as_ref().unwrap().contains("success rate 80.00%"), "{:?}", run.aborted);
    let tail: Vec<&str> = sim.kinds().into_iter().rev().take(5).collect();
    assert_eq!(tail, [kind::COMPENSATED, kind::COMPENSATED, kind::COMPENSATED, kind::ABORTED, kind::VERDICT]);
    assert_eq!(sim.weights().last(), Some(&(100, 0)));
    // Nothing more happens, however long.
    let written = sim.log.len();
    sim.tick_for(60, healthy());
    assert_eq!(sim.log.len(), written);
}

#[test]
fn a_gradual_rollback_undoes_one_step_per_interval() {
    let mut spec =
        spec("[{setWeight: 10}, {setWeight: 30}, {setWeight: 60}]", "{interval: 5s, failureLimit: 1}");
    spec.rollback.mode = RollbackMode::Gradual;
    let mut sim = Sim::new(&spec);
    sim.tick_for(11, healthy());
    sim.tick_for(5, failing_a_fifth());
    assert_eq!(sim.run().phase(), RolloutPhase::RollingBack);
    assert_eq!(sim.run().canary_weight, 30);
    sim.tick_for(5, healthy());
    assert_eq!(sim.run().canary_weight, 10);
    sim.tick_for(5, healthy());
    assert_eq!((sim.run().phase(), sim.run().canary_weight), (RolloutPhase::Aborted, 0));
    assert_eq!(&sim.weights()[3..], [(70, 30), (90, 10), (100, 0)]);
}

#[test]
fn no_data_never_promotes_and_does_what_on_no_data_says() {
    let none = Sample::default();
    let mut paused = Sim::new(&spec("[{setWeight: 50}]", "{interval: 5s}"));
    paused.tick_for(60, none);
    let run = paused.run();
    assert_eq!(run.phase(), RolloutPhase::Paused);
    assert!(run.paused.as_ref().unwrap().contains("no data: 0 requests"), "{:?}", run.paused);
    assert_eq!((run.canary_weight, run.verdicts.len()), (50, 1), "paused where it was, judged once");

    let mut waiting = Sim::new(&spec("[{setWeight: 50}]", "{interval: 5s, onNoData: continue}"));
    waiting.tick_for(60, none);
    assert_eq!(waiting.run().phase(), RolloutPhase::Progressing);
    assert_eq!(waiting.run().verdicts.len(), 10, "judged every interval, the latest 10 kept");
    assert!(waiting.run().verdicts.iter().all(|v| v.result == VerdictResult::NoData));
    waiting.tick_for(11, healthy());
    assert_eq!(waiting.run().phase(), RolloutPhase::Promoted, "data comes, it goes on");

    let mut aborted = Sim::new(&spec("[{setWeight: 50}]", "{interval: 5s, onNoData: abort}"));
    aborted.tick_for(6, none);
    assert_eq!((aborted.run().phase(), aborted.run().canary_weight), (RolloutPhase::Aborted, 0));
    assert!(aborted.run().aborted.as_ref().unwrap().contains("onNoData: abort"));
}

#[test]
fn actions_apply_in_their_phases_only() {
    let spec = spec("[{setWeight: 20}, {setWeight: 50}]", "{interval: 5s}");
    let mut sim = Sim::new(&spec);
    sim.tick_for(1, healthy());
    let t = act(sim.run(), RolloutAction::Pause, "admin", &spec).unwrap();
    sim.commit(t);
    assert_eq!(sim.run().phase(), RolloutPhase::Paused);
    sim.tick_for(30, healthy());
    assert_eq!((sim.run().step, sim.run().canary_weight), (0, 20), "a paused rollout holds");
    let err = act(sim.run(), RolloutAction::Pause, "admin", &spec).unwrap_err();
    assert!(err.contains("is Paused"), "{err}");
    let t = act(sim.run(), RolloutAction::Resume, "admin", &spec).unwrap();
    sim.commit(t);
    sim.tick_for(6, healthy());
    assert_eq!(sim.run().step, 1);

    let t = act(sim.run(), RolloutAction::Promote, "admin", &spec).unwrap();
    assert_eq!(t.weights, Some((0, 100)));
    sim.commit(t);
    assert_eq!(sim.run().phase(), RolloutPhase::Promoted);
    assert!(act(sim.run(), RolloutAction::Abort, "admin", &spec).is_err());

    let mut sim = Sim::new(&spec);
    sim.tick_for(1, healthy());
    let t = act(sim.run(), RolloutAction::Abort, "admin", &spec).unwrap();
    sim.commit(t);
    assert_eq!(sim.run().phase(), RolloutPhase::Aborted);
    assert_eq!(sim.run().aborted.as_deref(), Some("aborted by admin"));
    // Resuming an aborted rollout runs it again from its first step.
    let t = act(sim.run(), RolloutAction::Resume, "admin", &spec).unwrap();
    assert_eq!(t.events[0].0, kind::STARTED);
    sim.commit(t);
    sim.tick_for(1, healthy());
    assert_eq!(
        (sim.run().phase(), sim.run().step, sim.run().canary_weight),
        (RolloutPhase::Progressing, 0, 20)
    );
}

#[test]
fn a_deleted_rollout_is_aborted_and_compensated_at_once_even_when_gradual() {
    let mut spec =
        spec("[{setWeight: 10}, {setWeight: 30}, {setWeight: 60}]", "{interval: 5s, failureLimit: 1}");
    spec.rollback.mode = RollbackMode::Gradual;
    for phase in [RolloutPhase::Progressing, RolloutPhase::Paused, RolloutPhase::RollingBack] {
        let mut sim = Sim::new(&spec);
        sim.tick_for(11, healthy());
        match phase {
            RolloutPhase::Paused => sim.commit(act(sim.run(), RolloutAction::Pause, "admin", &spec).unwrap()),
            RolloutPhase::RollingBack => sim.tick_for(5, failing_a_fifth()),
            _ => {}
        }
        assert_eq!(sim.run().phase(), phase);
        let written = sim.log.len();
        sim.commit(deleted(sim.run()));
        let run = sim.run();
        assert_eq!(
            (run.phase(), run.stable_weight, run.canary_weight),
            (RolloutPhase::Aborted, 100, 0),
            "{phase:?}"
        );
        let undone = if phase == RolloutPhase::RollingBack { 2 } else { 3 };
        let mut expected = vec![kind::COMPENSATED; undone];
        if phase != RolloutPhase::RollingBack {
            expected.insert(0, kind::ABORTED);
            assert!(run.aborted.as_ref().unwrap().contains("deleted"), "{:?}", run.aborted);
        }
        assert_eq!(sim.kinds()[written..], expected, "{phase:?}");
        assert_eq!(sim.weights().last(), Some(&(100, 0)));
    }
}
