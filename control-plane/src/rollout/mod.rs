//! Progressive delivery as a saga: a `Rollout` shifts an HTTPRoute's weights from the stable to
//! the canary Service step by step, judges each analysis interval from the mesh's own
//! telemetry, and on failure compensates every completed step in reverse.
//!
//! The saga's state is never kept anywhere but the event log: each step, verdict, pause,
//! abort, compensation and promotion is an event of aggregate `RolloutRun/namespace/name`, and
//! a weight change is written in the same atomic batch as its step's event (the route as a
//! normal versioned change, so `history`, `diff` and the sidecars see it like any other).
//! Every batch expects the run's version, so a transition is taken once however many writers
//! race for it (two replicas, a driver and an admin's `pause`), and a restarted or failed-over
//! control plane folds the same events and resumes at the same step. One replica drives a
//! given rollout at a time, holding the store's lock `rollout/namespace/name`.
//!
//! - `run`: the saga's events and the [`Run`] they fold into (part of the read model).
//! - `saga`: what a run does next — pure decisions over a run, the time and a sample.
//! - `analysis`: one interval of the canary's telemetry judged against the thresholds.
//! - `weights`: a step's weights written into the HTTPRoute document.
//! - `driver`: the background loop that takes each rollout's lock and drives it.

mod analysis;
pub mod driver;
mod run;
mod saga;
mod weights;

pub use analysis::{Observed, Sample};
pub use run::{kind, now_ms, run_aggregate, Run, Runs};
pub use saga::{act, deleted, next, replaced, start, Transition};
pub use weights::{shifted, WeightsError};
