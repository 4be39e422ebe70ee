//! Rollouts: each one's status as its saga's events leave it, an admin's actions (pause,
//! resume, abort, promote), and the driver's one move on a rollout — the next transition of
//! its saga committed in one batch with its route write, expecting the run's version (see the
//! `rollout` module for the saga itself).

use pilotfish_api::rollout::RolloutSpec;
use pilotfish_api::wire::{RolloutAction, RolloutList, RolloutStatus, StatsBy, StatsSide};

use super::error::{Error, Result};
use super::plane::ControlPlane;
use crate::model::{kind as log_kind, resource_aggregate, State};
use crate::rollout::{self, kind, run_aggregate, Observed, Run, Sample, Transition};
use crate::store::{AppendRequest, StoreError};

/// What one move of the driver found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// A transition was written.
    Wrote,
    /// Nothing is due yet.
    Waiting,
    /// Another writer took the transition first (another replica, an admin's action).
    Lost,
}

/// The Rollout resource `namespace/name`'s spec, when it exists.
fn spec_of(state: &State, key: &str) -> Option<RolloutSpec> {
    let (namespace, name) = key.split_once('/')?;
    let stored = state.resources.get(&resource_aggregate("Rollout", namespace, name))?;
    serde_json::from_value(stored.document["spec"].clone()).ok()
}

/// The run of `key` unless a new one must start (none yet, or the spec names a new canary).
fn current<'a>(state: &'a State, key: &str, spec: &RolloutSpec) -> Option<&'a Run> {
    state.rollouts.0.get(key).filter(|run| run.spec.canary == spec.canary)
}

/// The route aggregate a run shifts.
fn route_aggregate(run: &Run) -> String {
    resource_aggregate("HTTPRoute", run.spec.route_namespace(&run.namespace), &run.spec.target_ref.name)
}

impl ControlPlane {
    /// Every rollout whose Rollout resource exists, as its saga stands.
    pub async fn rollouts(&self) -> Result<RolloutList> {
        self.refresh().await?;
        let state = self.state.read().await;
        let items = state
            .rollouts
            .0
            .iter()
            .filter(|(key, run)| spec_of(&state, key).is_some_and(|spec| spec.canary == run.spec.canary))
            .map(|(_, run)| run.status())
            .collect();
        Ok(RolloutList { items })
    }

    /// One rollout's status.
    pub async fn rollout(&self, namespace: &str, name: &str) -> Result<RolloutStatus> {
        self.refresh().await?;
        let state = self.state.read().await;
        let key = format!("{namespace}/{name}");
        let spec = spec_of(&state, &key).ok_or_else(|| Error::NotFound(format!("Rollout {key}")))?;
        let run = current(&state, &key, &spec).ok_or_else(|| {
            Error::NotFound(format!("a run of Rollout {key} (it starts within a second of being applied)"))
        })?;
        Ok(run.status())
    }

    /// An admin's action on a rollout, taken as the saga's next transition.
    pub async fn rollout_action(
        &self,
        actor: &str,
        namespace: &str,
        name: &str,
        action: RolloutAction,
    ) -> Result<RolloutStatus> {
        let key = format!("{namespace}/{name}");
        // A driver may write between our read and our append; the run's version tells, and
        // the action is decided again on the new state.
        for _ in 0..5 {
            self.refresh().await?;
            let state = self.state.read().await;
            let spec = spec_of(&state, &key).ok_or_else(|| Error::NotFound(format!("Rollout {key}")))?;
            let run = current(&state, &key, &spec).ok_or_else(|| {
                Error::Conflict(format!("Rollout {key} has not started yet: try again in a second"))
            })?;
            let transition = rollout::act(run, action, actor, &spec).map_err(Error::Conflict)?;
            let batch = self.batch(&state, &key, run, transition, actor).map_err(Error::Conflict)?;
            drop(state);
            match self.store.append_batch(batch).await {
                Ok(_) => {
                    self.settle().await;
                    return self.rollout(namespace, name).await;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!(
            "Rollout {key} kept changing under the {} action: try again",
            action.as_str()
        )))
    }

    /// Rollouts to drive: those whose resource exists and whose run is under way or must start,
    /// and the runs under way whose resource was deleted (to be aborted and compensated).
    pub async fn rollouts_to_drive(&self) -> Vec<String> {
        let state = self.state.read().await;
        let existing = state
            .resources
            .keys()
            .filter_map(|aggregate| aggregate.strip_prefix("Rollout/"))
            .filter(|key| {
                spec_of(&state, key)
                    .is_some_and(|spec| current(&state, key, &spec).is_none_or(|run| !run.phase().is_final()))
            })
            .map(str::to_owned);
        let orphaned = state
            .rollouts
            .0
            .iter()
            .filter(|(key, run)| !run.phase().is_final() && spec_of(&state, key).is_none())
            .map(|(key, _)| key.clone());
        existing.chain(orphaned).collect()
    }

    /// The driver's one move on rollout `key` (`namespace/name`): start a run, or take the
    /// next transition of its saga if one is due.
    pub async fn drive_rollout(&self, key: &str) -> Result<Moved> {
        let state = self.state.read().await;
        let Some((namespace, name)) = key.split_once('/') else { return Ok(Moved::Waiting) };
        let actor = format!("rollout {key}");
        let run = state.rollouts.0.get(key);
        let Some(spec) = spec_of(&state, key) else {
            // The resource was deleted under a run: nothing else would ever shift the route back.
            let Some(run) = run.filter(|r| !r.phase().is_final()) else { return Ok(Moved::Waiting) };
            let batch =
                self.batch(&state, key, run, rollout::deleted(run), &actor).map_err(Error::Conflict)?;
            drop(state);
            return self.append_move(batch).await;
        };
        let (version, transition) = match (run, current(&state, key, &spec)) {
            (Some(old), None) if !old.phase().is_final() => {
                // A new canary while the last one is under way: the last is aborted first.
                (old.version, rollout::replaced(old, &spec.canary))
            }
            (old, None) => (old.map_or(0, |r| r.version), rollout::start(namespace, name, &spec)),
            (_, Some(run)) => {
                let sample = |seconds| self.canary_sample(run, seconds);
                match rollout::next(run, rollout::now_ms(), sample) {
                    Some(t) => (run.version, t),
                    None => return Ok(Moved::Waiting),
                }
            }
        };
        let batch = match run.filter(|r| r.version == version) {
            Some(run) => match self.batch(&state, key, run, transition, &actor) {
                Ok(batch) => batch,
                // The route cannot take the step: the saga pauses, saying why.
                Err(reason) => requests(key, version, Transition::paused(reason), &actor),
            },
            None => requests(key, version, transition, &actor),
        };
        drop(state);
        self.append_move(batch).await
    }

    /// Appends one move of the driver.
    async fn append_move(&self, batch: Vec<AppendRequest>) -> Result<Moved> {
        match self.store.append_batch(batch).await {
            Ok(_) => {
                self.settle().await;
                Ok(Moved::Wrote)
            }
            Err(StoreError::Conflict { .. }) => Ok(Moved::Lost),
            Err(e) => Err(e.into()),
        }
    }

    /// What the telemetry saw of `run`'s canary over the last `seconds`.
    fn canary_sample(&self, run: &Run, seconds: u64) -> Observed {
        let service = format!("{}.{}", run.spec.canary, run.spec.route_namespace(&run.namespace));
        let sample = |side| {
            let rows = self.telemetry.rows(seconds.clamp(5, 3600), side, StatsBy::Service, Some(&service));
            Sample::of(rows.iter().find(|r| r.service.as_deref() == Some(service.as_str())))
        };
        Observed { server: sample(StatsSide::Server), client: sample(StatsSide::Client) }
    }

    /// `transition` of `run` as one batch: its events, and the route with its weights. `Err`:
    /// why the route cannot take them (a compensation goes on without its route write: the
    /// route is gone or broken, and there is nothing to shift back).
    fn batch(
        &self,
        state: &State,
        key: &str,
        run: &Run,
        transition: Transition,
        actor: &str,
    ) -> Result<Vec<AppendRequest>, String> {
        let weights = transition.weights;
        let compensating =
            transition.events.iter().any(|(k, _)| *k == kind::ABORTED || *k == kind::COMPENSATED);
        let mut batch = requests(key, run.version, transition, actor);
        let Some(weights) = weights else { return Ok(batch) };
        let aggregate = route_aggregate(run);
        let route = match state.resources.get(&aggregate) {
            Some(route) => route,
            None if compensating => return Ok(batch),
            None => {
                return Err(format!("{aggregate} does not exist: apply the route, then resume the rollout"))
            }
        };
        let names = (run.spec.stable.as_str(), run.spec.canary.as_str());
        match rollout::shifted(&route.document, run.spec.route_namespace(&run.namespace), names, weights) {
            Ok(document) if document == route.document => {}
            Ok(document) => batch.push(AppendRequest {
                aggregate,
                expected_version: Some(route.version),
                kind: log_kind::RESOURCE_APPLIED.to_owned(),
                data: document,
                actor: actor.to_owned(),
                idempotency_key: None,
            }),
            Err(_) if compensating => {}
            Err(e) => return Err(format!("{e}; then resume the rollout")),
        }
        Ok(batch)
    }
}

/// A rollback may not rewrite a route a running rollout shifts: its next step would overwrite
/// the rollback. `Err`: which rollout, and what to do.
pub(super) fn refuse_under_rollouts(state: &State, batch: &[AppendRequest]) -> Result<()> {
    for run in state.rollouts.0.values() {
        let running = matches!(
            run.phase(),
            pilotfish_api::wire::RolloutPhase::Progressing | pilotfish_api::wire::RolloutPhase::RollingBack
        );
        let route = route_aggregate(run);
        let key = format!("{}/{}", run.namespace, run.name);
        // A run whose resource was deleted is compensated by the driver whatever its phase
        // (a paused one too): a rollback before that would be overwritten.
        let deleted = !run.phase().is_final() && spec_of(state, &key).is_none();
        if (running || deleted) && batch.iter().any(|r| r.aggregate == route) {
            if deleted {
                return Err(Error::Conflict(format!(
                    "{route} is being shifted back by Rollout {key}, deleted while under way: its run is \
                     being aborted and compensated; try again in a second"
                )));
            }
            let status = run.status();
            return Err(Error::Conflict(format!(
                "{route} is being shifted by Rollout {}/{} ({:?}, step {} of {}): a rollback now would be \
                     overwritten by its next step. Pause it (`pilotfish rollout pause {}`) or abort it \
                     (`pilotfish rollout abort {}`) first, then roll back",
                run.namespace,
                run.name,
                status.phase,
                status.step + 1,
                status.steps,
                run.name,
                run.name
            )));
        }
    }
    Ok(())
}

/// `transition`'s events as appends to `key`'s run, each expecting the version the one
/// before it leaves.
fn requests(key: &str, version: u64, transition: Transition, actor: &str) -> Vec<AppendRequest> {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    let aggregate = run_aggregate(namespace, name);
    transition
        .events
        .into_iter()
        .enumerate()
        .map(|(i, (kind, data))| AppendRequest {
            aggregate: aggregate.clone(),
            expected_version: Some(version + i as u64),
            kind: kind.to_owned(),
            data,
            actor: actor.to_owned(),
            idempotency_key: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use pilotfish_api::wire::RolloutPhase;

    use super::*;
    use crate::core::Settings;
    use crate::store::testing::log_of;

    const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\nspec:\n  parentRefs: [{name: web}]\n  rules:\n  - backendRefs: [{name: web-v1, port: 80}]\n";
    const ROLLOUT: &str = "apiVersion: pilotfish.io/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  targetRef: {kind: HTTPRoute, name: web}\n  stable: web-v1\n  canary: web-v2\n  steps: [{setWeight: 50}]\n  analysis: {interval: 5s}\n";

    /// The route's backends with their weights.
    async fn weights(cp: &ControlPlane) -> Vec<(String, u64)> {
        let route = cp.get("HTTPRoute", "default", "web").await.unwrap().document;
        let backends = route["spec"]["rules"][0]["backendRefs"].as_array().cloned().unwrap_or_default();
        backends
            .iter()
            .map(|b| (b["name"].as_str().unwrap_or("").to_owned(), b["weight"].as_u64().unwrap_or(1)))
            .collect()
    }

    #[tokio::test]
    async fn a_rollout_deleted_under_way_is_aborted_and_its_route_shifted_back_at_once() {
        let (_dir, store) = log_of(0).await;
        let cp =
            ControlPlane::open(store, Settings::new("admin".into()), crate::ca::testing::ca()).await.unwrap();
        let before = cp.apply("admin", ROUTE, None, None).await.unwrap().items[0].seq.unwrap();
        cp.apply("admin", ROLLOUT, None, None).await.unwrap();
        let key = "default/web";
        for _ in 0..2 {
            assert_eq!(cp.drive_rollout(key).await.unwrap(), Moved::Wrote, "started, then step 0 at 50%");
        }
        let half = [("web-v1".to_owned(), 50), ("web-v2".to_owned(), 50)];
        assert_eq!(weights(&cp).await, half);
        let err = cp.rollback("admin", before).await.unwrap_err().to_string();
        assert!(err.contains("pilotfish rollout abort web"), "{err}");

        cp.delete("admin".into(), ("Rollout", "default", "web"), None, None).await.unwrap();
        // Until the driver's next move, a rollback is refused without pointing at the gone rollout.
        let err = cp.rollback("admin", before).await.unwrap_err().to_string();
        assert!(err.contains("deleted while under way") && !err.contains("rollout abort"), "{err}");
        assert_eq!(cp.rollouts_to_drive().await, [key]);
        assert_eq!(cp.drive_rollout(key).await.unwrap(), Moved::Wrote);

        assert_eq!(weights(&cp).await, [("web-v1".to_owned(), 100), ("web-v2".to_owned(), 0)]);
        let run = cp.state().read().await.rollouts.0[key].clone();
        assert_eq!((run.phase(), run.stable_weight, run.canary_weight), (RolloutPhase::Aborted, 100, 0));
        let page = cp.events(0, None).await.unwrap();
        let last: Vec<(&str, &str, &str)> = page.events[page.events.len() - 3..]
            .iter()
            .map(|e| (e.kind.as_str(), e.aggregate.as_str(), e.actor.as_str()))
            .collect();
        let by = "rollout default/web";
        assert_eq!(
            last,
            [
                (kind::ABORTED, "RolloutRun/default/web", by),
                (kind::COMPENSATED, "RolloutRun/default/web", by),
                (log_kind::RESOURCE_APPLIED, "HTTPRoute/default/web", by)
            ],
            "one batch, as an abort is"
        );
        assert!(run.aborted.as_deref().is_some_and(|r| r.contains("deleted")), "{:?}", run.aborted);

        // Nothing is left to drive, and the route is the admin's again.
        assert!(cp.rollouts_to_drive().await.is_empty());
        assert_eq!(cp.drive_rollout(key).await.unwrap(), Moved::Waiting);
        cp.rollback("admin", before).await.unwrap();
        assert_eq!(weights(&cp).await, [("web-v1".to_owned(), 1)], "the route as first applied");
    }

    /// A paused run does not hold rollbacks; deleted, it does until the driver has shifted the
    /// route back (or the rollback would be overwritten).
    #[tokio::test]
    async fn a_paused_rollout_deleted_holds_rollbacks_until_compensated() {
        let (_dir, store) = log_of(0).await;
        let cp =
            ControlPlane::open(store, Settings::new("admin".into()), crate::ca::testing::ca()).await.unwrap();
        let before = cp.apply("admin", ROUTE, None, None).await.unwrap().items[0].seq.unwrap();
        cp.apply("admin", ROLLOUT, None, None).await.unwrap();
        let key = "default/web";
        for _ in 0..2 {
            assert_eq!(cp.drive_rollout(key).await.unwrap(), Moved::Wrote);
        }
        let paused = cp.rollout_action("admin", "default", "web", RolloutAction::Pause).await.unwrap();
        assert_eq!(paused.phase, RolloutPhase::Paused);

        cp.delete("admin".into(), ("Rollout", "default", "web"), None, None).await.unwrap();
        let err = cp.rollback("admin", before).await.unwrap_err().to_string();
        assert!(err.contains("deleted while under way"), "{err}");
        assert_eq!(cp.drive_rollout(key).await.unwrap(), Moved::Wrote);
        assert_eq!(weights(&cp).await, [("web-v1".to_owned(), 100), ("web-v2".to_owned(), 0)]);
        cp.rollback("admin", before).await.unwrap();
        assert_eq!(weights(&cp).await, [("web-v1".to_owned(), 1)], "the rollback stands");
    }
}
