//! The configuration as it was at any point of the log, for `diff` and `rollback`, at a cost
//! per request that does not grow with the log.
//!
//! Folding the log from seq 0 for every request let any caller of `GET /v1/diff` spend the
//! control plane's CPU in proportion to the whole history. Instead, the configuration is kept
//! at checkpoints every [`FIRST_SPACING`] events: a request starts from the nearest checkpoint
//! at or before the seq it asks for and folds at most one spacing of events. Checkpoints are
//! kept as soon as a request passes them, so later requests start from them (about one replay
//! of the log per process, not one per request; requests that arrive together on a fresh
//! process may each fold their part). They hold only the resources, whose documents are shared (`Arc`) with the read
//! model and between checkpoints, so each costs about a pointer and a key per resource. Past
//! [`MAX_CHECKPOINTS`] the spacing doubles and every other checkpoint goes, which bounds the
//! memory; the per-request fold then grows by the same factor (at 256k events and beyond).
//! The lock is held only to copy a checkpoint out or put one in, never across a store read or
//! a fold: `GET /v1/diff` needs no token, so a flood of diffs (or the first one on a long log)
//! must not queue an admin's rollback behind it.

use std::collections::BTreeMap;

use std::sync::Mutex;

use crate::model::State;
use crate::store::{EventStore, StoreError};

/// Events between checkpoints while the log is short.
pub const FIRST_SPACING: u64 = 1000;
/// Checkpoints kept at most; beyond it the spacing doubles.
const MAX_CHECKPOINTS: usize = 256;

pub struct History {
    checkpoints: Mutex<Checkpoints>,
}

struct Checkpoints {
    spacing: u64,
    /// The configuration after each seq that is a multiple of `spacing` (seq 0 is the empty one).
    at: BTreeMap<u64, State>,
}

impl Default for History {
    fn default() -> Self {
        Self { checkpoints: Mutex::new(Checkpoints { spacing: FIRST_SPACING, at: BTreeMap::new() }) }
    }
}

impl History {
    /// The configuration (resources only) after event `seq`, which must not be past the head.
    pub async fn at(&self, store: &dyn EventStore, seq: u64) -> Result<State, StoreError> {
        let (mut state, mut spacing) = {
            let checkpoints = self.lock();
            let nearest = checkpoints.at.range(..=seq).next_back().map(|(_, s)| s.clone());
            (nearest.unwrap_or_default(), checkpoints.spacing)
        };
        while state.seq < seq {
            let wanted = usize::try_from(seq - state.seq).unwrap_or(usize::MAX).min(1000);
            let page = store.events_since(state.seq, wanted).await?;
            if page.is_empty() {
                break;
            }
            for event in &page {
                state.apply(event)?;
                if event.seq % spacing == 0 {
                    let checkpoint = state.configuration();
                    spacing = self.lock().keep(checkpoint);
                }
            }
        }
        Ok(state.configuration())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Checkpoints> {
        self.checkpoints.lock().expect("history lock poisoned")
    }
}

impl Checkpoints {
    /// Keeps `state` if it still falls on the spacing (another request may have widened it
    /// meanwhile); returns the spacing.
    fn keep(&mut self, state: State) -> u64 {
        if !state.seq.is_multiple_of(self.spacing) {
            return self.spacing;
        }
        self.at.insert(state.seq, state);
        if self.at.len() > MAX_CHECKPOINTS {
            self.spacing *= 2;
            let spacing = self.spacing;
            self.at.retain(|seq, _| seq % spacing == 0);
        }
        self.spacing
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::testing::{log_of, Instrumented};

    async fn replayed(store: &Instrumented, seq: u64) -> State {
        let mut state = State::default();
        for event in store.inner.events_since(0, seq as usize).await.unwrap() {
            state.apply(&event).unwrap();
        }
        state.configuration()
    }

    #[tokio::test]
    async fn any_point_of_a_long_log_costs_at_most_one_spacing_of_events() {
        let (_dir, store) = log_of(10_000).await;
        let history = History::default();
        // The first request builds the checkpoints on its way: one replay.
        assert_eq!(history.at(&*store, 10_000).await.unwrap(), replayed(&store, 10_000).await);
        assert_eq!(store.read.swap(0, Ordering::Relaxed), 10_000);
        for seq in [0, 1, 999, 1000, 1001, 4321, 7000, 9999, 10_000] {
            let state = history.at(&*store, seq).await.unwrap();
            assert_eq!(state, replayed(&store, seq).await, "at seq {seq}");
            let read = store.read.swap(0, Ordering::Relaxed) as u64;
            assert!(read < FIRST_SPACING, "seq {seq} read {read} events");
        }
    }

    #[tokio::test]
    async fn a_slow_fold_holds_up_no_other_request() {
        let (_dir, store) = log_of(10_000).await;
        let history = std::sync::Arc::new(History::default());
        history.at(&*store, 10_000).await.unwrap();
        let hung = store.hang.write().await;
        let slow = tokio::spawn({
            let (history, store) = (history.clone(), store.clone());
            async move { history.at(&*store, 9_500).await.unwrap().seq }
        });
        // The slow request is now waiting on its store read.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!slow.is_finished());
        let at_checkpoint =
            tokio::time::timeout(std::time::Duration::from_secs(2), history.at(&*store, 3000))
                .await
                .expect("a request that needs no store read waited for another's");
        assert_eq!(at_checkpoint.unwrap(), replayed(&store, 3000).await);
        drop(hung);
        assert_eq!(slow.await.unwrap(), 9_500);
    }

    #[test]
    fn checkpoints_thin_out_instead_of_growing_without_bound() {
        let mut checkpoints = Checkpoints { spacing: 1, at: BTreeMap::new() };
        for seq in 1..=10_000 {
            if seq % checkpoints.spacing == 0 {
                checkpoints.keep(State { seq, ..State::default() });
            }
        }
        assert!(checkpoints.at.len() <= MAX_CHECKPOINTS);
        assert!(checkpoints.spacing <= 10_000 / (MAX_CHECKPOINTS as u64 / 2));
        assert!(checkpoints.at.keys().all(|seq| seq % checkpoints.spacing == 0));
    }
}
