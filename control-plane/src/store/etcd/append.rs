//! An append: one round reads what the decision depends on at one revision, decides exactly as
//! the embedded backend does, and commits in one transaction guarded by what it read; a lost race
//! starts a new round (see the `etcd` module doc).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, KeyValue, Txn, TxnOp, TxnOpResponse};

use super::client::{Etcd, MAX_ATTEMPTS};
use super::codec::{decode_event, parse_number};
use crate::store::{AppendRequest, Event, Result, StoreError};

impl Etcd {
    /// [`EventStore::append_batch`](crate::store::EventStore::append_batch) on etcd.
    pub(super) async fn append_rounds(&self, requests: Vec<AppendRequest>) -> Result<Vec<Event>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        for attempt in 1..=MAX_ATTEMPTS {
            if let Some(events) = self.try_append(&requests).await? {
                return Ok(events);
            }
            // Another replica (or task) committed first. Retry at once the first times; under
            // sustained contention spread the retries so that someone wins each round.
            if attempt > 2 {
                let cap = 1u64 << attempt.min(6);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap))).await;
            }
        }
        // Contention, not a fault: the same append can succeed in a moment.
        Err(StoreError::Unavailable {
            context: format!("appending to etcd at {}", self.endpoints()),
            cause: format!("other writers won the race {MAX_ATTEMPTS} times in a row").into(),
        })
    }

    /// One round: read, decide, commit. `Ok(None)` when another writer won the race.
    async fn try_append(&self, requests: &[AppendRequest]) -> Result<Option<Vec<Event>>> {
        let keys = self.keys();
        let mut aggregates: Vec<&str> = requests.iter().map(|r| r.aggregate.as_str()).collect();
        aggregates.sort_unstable();
        aggregates.dedup();
        let mut idempotency: Vec<&str> =
            requests.iter().filter_map(|r| r.idempotency_key.as_deref()).collect();
        idempotency.sort_unstable();
        idempotency.dedup();

        // 1. Everything the decision depends on, at one revision.
        let mut reads = vec![TxnOp::get(keys.head(), None)];
        reads.extend(aggregates.iter().map(|a| TxnOp::get(keys.version(a), None)));
        reads.extend(idempotency.iter().map(|k| TxnOp::get(keys.idempotency(k), None)));
        let read_ops = reads.len();
        let response = self.txn(Txn::new().and_then(reads), "reading before an append", read_ops).await?;
        let mut found = response.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        let head_kv = found.next().flatten();
        let head = head_kv.as_ref().map(|kv| parse_number(&keys.head(), kv)).transpose()?.unwrap_or(0);
        let head_revision = head_kv.as_ref().map_or(0, KeyValue::mod_revision);
        let mut versions: HashMap<&str, (u64, i64)> = HashMap::new();
        for &aggregate in &aggregates {
            let kv = found.next().flatten();
            let version = kv.as_ref().map(|kv| parse_number(&keys.version(aggregate), kv)).transpose()?;
            versions.insert(aggregate, (version.unwrap_or(0), kv.as_ref().map_or(0, KeyValue::mod_revision)));
        }
        let mut claimed: HashMap<&str, u64> = HashMap::new();
        for &key in &idempotency {
            if let Some(kv) = found.next().flatten() {
                claimed.insert(key, parse_number(&keys.idempotency(key), &kv)?);
            }
        }

        // 2. The first events of keys used before: events never change, so any read will do.
        let mut replayed: HashMap<u64, Event> = HashMap::new();
        if !claimed.is_empty() {
            let mut seqs: Vec<u64> = claimed.values().copied().collect();
            seqs.sort_unstable();
            seqs.dedup();
            let gets: Vec<_> = seqs.iter().map(|&seq| TxnOp::get(keys.event(seq), None)).collect();
            let ops = gets.len();
            let response = self.txn(Txn::new().and_then(gets), "reading replayed events", ops).await?;
            for (seq, op) in seqs.iter().zip(response.op_responses()) {
                let TxnOpResponse::Get(mut get) = op else { continue };
                if let Some(kv) = get.take_kvs().into_iter().next() {
                    replayed.insert(*seq, decode_event(*seq, kv.value())?);
                }
            }
            for (key, seq) in &claimed {
                if !replayed.contains_key(seq) {
                    return Err(StoreError::Corrupt {
                        seq: *seq,
                        reason: format!("idempotency key `{key}` points at a missing event"),
                    });
                }
            }
        }

        // 3. The decision, as the embedded backend makes it.
        let mut events = Vec::with_capacity(requests.len());
        let mut new_events: Vec<Event> = Vec::new();
        let mut current: BTreeMap<&str, u64> = BTreeMap::new();
        let mut new_keys: BTreeMap<&str, u64> = BTreeMap::new();
        let mut seq = head;
        for request in requests {
            if let Some(key) = request.idempotency_key.as_deref() {
                if let Some(first) = claimed.get(key) {
                    events.push(replayed[first].clone());
                    continue;
                }
                if let Some(first) = new_keys.get(key) {
                    let event = new_events.iter().find(|e| e.seq == *first).expect("placed in this batch");
                    events.push(event.clone());
                    continue;
                }
            }
            let aggregate = request.aggregate.as_str();
            let actual = current.get(aggregate).copied().unwrap_or(versions[aggregate].0);
            if let Some(expected) = request.expected_version.filter(|&v| v != actual) {
                // Decided against one consistent read: a valid answer, nothing written.
                return Err(StoreError::Conflict { aggregate: request.aggregate.clone(), expected, actual });
            }
            seq += 1;
            current.insert(aggregate, actual + 1);
            if let Some(key) = request.idempotency_key.as_deref() {
                new_keys.insert(key, seq);
            }
            let event = request.clone().into_event(seq, actual + 1);
            new_events.push(event.clone());
            events.push(event);
        }
        if new_events.is_empty() {
            return Ok(Some(events));
        }

        // 4. One transaction, guarded by everything read in step 1 that it builds on.
        let mut guards = vec![Compare::mod_revision(keys.head(), CompareOp::Equal, head_revision)];
        let mut writes = vec![TxnOp::put(keys.head(), seq.to_string(), None)];
        for (aggregate, version) in &current {
            guards.push(Compare::mod_revision(
                keys.version(aggregate),
                CompareOp::Equal,
                versions[aggregate].1,
            ));
            writes.push(TxnOp::put(keys.version(aggregate), version.to_string(), None));
        }
        for (key, seq) in &new_keys {
            guards.push(Compare::create_revision(keys.idempotency(key), CompareOp::Equal, 0));
            writes.push(TxnOp::put(keys.idempotency(key), seq.to_string(), None));
        }
        for event in &new_events {
            let json = serde_json::to_vec(event).expect("an event always serializes");
            writes.push(TxnOp::put(keys.event(event.seq), json, None));
        }
        let ops = guards.len().max(writes.len());
        let what = format!("appending {} event(s)", new_events.len());
        let response = self.txn(Txn::new().when(guards).and_then(writes), &what, ops).await?;
        if !response.succeeded() {
            return Ok(None);
        }
        self.advance(seq);
        Ok(Some(events))
    }
}
