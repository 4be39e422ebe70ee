//! The log and the configuration's history: pages of events, the diff between two points of
//! the log, and rollback to an earlier point (as new events).

use super::error::{Error, Result};
use super::plane::ControlPlane;
use pilotfish_api::wire::{Diff, EventPage, RollbackResult};

/// Events in one page of `events`, at most.
pub const PAGE_EVENTS: usize = 1000;
/// Bytes of event data in one page, about, at most (always one event).
pub const PAGE_BYTES: usize = 4 << 20;
/// Events read from the store at a time while filling a page, so a request holds at most
/// `PAGE_BYTES` plus one such chunk (an event's document came in a request body of at most
/// 2 MiB, axum's limit).
const PAGE_CHUNK: usize = 8;

impl ControlPlane {
    /// One page of the log after `since`, bounded in events and in bytes (documents can be
    /// large); it is read from the store [`PAGE_CHUNK`] events at a time, so a request holds at
    /// most `PAGE_BYTES` plus one chunk: about 20 MiB when every event is as large as a request
    /// body may be, 4 MiB in practice. The caller pages on with `since` = the last seq it got.
    pub async fn events(&self, since: u64, limit: Option<usize>) -> Result<EventPage> {
        let limit = limit.unwrap_or(PAGE_EVENTS).min(PAGE_EVENTS);
        let mut events = Vec::new();
        let (mut after, mut bytes) = (since, 0);
        'page: while events.len() < limit {
            let chunk = self.store.events_since(after, (limit - events.len()).min(PAGE_CHUNK)).await?;
            if chunk.is_empty() {
                break;
            }
            for event in chunk {
                bytes += serde_json::to_vec(&event.data).map_or(0, |v| v.len());
                if bytes > PAGE_BYTES && !events.is_empty() {
                    break 'page;
                }
                after = event.seq;
                events.push(event);
            }
        }
        Ok(EventPage { head: self.store.head().await?, events })
    }

    /// What changed in the configuration going from `from` to `to` (default: the head); with
    /// `to` before `from`, the changes come out reversed.
    pub async fn diff(&self, from: u64, to: Option<u64>) -> Result<Diff> {
        let head = self.store.head().await?;
        let to = to.unwrap_or(head);
        if from > head || to > head {
            return Err(past_the_head(from.max(to), head));
        }
        let a = self.history.at(&*self.store, from).await?;
        let b = self.history.at(&*self.store, to).await?;
        Ok(Diff { from, to, changes: a.diff(&b) })
    }

    /// New events that restore the resources as they were after `to_seq`.
    pub async fn rollback(&self, actor: &str, to_seq: u64) -> Result<RollbackResult> {
        let head = self.store.head().await?;
        if to_seq > head {
            return Err(past_the_head(to_seq, head));
        }
        self.refresh().await?;
        let target = self.history.at(&*self.store, to_seq).await?;
        let batch = {
            let state = self.state.read().await;
            let batch = state.restore(&target, &format!("{actor} (rollback to {to_seq})"));
            super::rollouts::refuse_under_rollouts(&state, &batch)?;
            batch
        };
        let events = if batch.is_empty() { Vec::new() } else { self.store.append_batch(batch).await? };
        self.settle().await;
        Ok(RollbackResult { rolled_back_to: to_seq, events })
    }
}

/// A point of the log that is not there yet.
fn past_the_head(seq: u64, head: u64) -> Error {
    Error::NotFound(format!("seq {seq} (the log ends at seq {head})"))
}
