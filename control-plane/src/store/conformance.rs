//! The behaviour every [`EventStore`] backend must show. A backend's tests run each case against a
//! fresh, empty store with `conformance_tests!(fresh)`, where `async fn fresh() -> (Arc<dyn
//! EventStore>, Guard)` and the guard keeps the store's resources (a temp dir, an etcd prefix)
//! alive for the test.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{AppendRequest, Event, EventStore, StoreError};

/// One `#[tokio::test]` per case, so each failure is reported on its own.
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::store::conformance::conformance_tests!(@cases $fresh;
            empty_store,
            seqs_are_global_and_gap_free,
            versions_are_per_aggregate,
            expected_version_is_checked,
            concurrent_writers_with_one_expected_version_conflict_once,
            idempotency_key_returns_the_first_event,
            concurrent_retries_with_one_idempotency_key_write_once,
            batch_is_all_or_nothing,
            batch_checks_versions_in_order,
            events_since_pages_in_order,
            snapshots_keep_the_latest,
            subscribers_see_each_new_head,
            a_lock_is_held_once_until_released,
        );
    };
    (@cases $fresh:path; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (store, _guard) = $fresh().await;
            $crate::store::conformance::$case(store).await;
        }
    )*};
}
pub(crate) use conformance_tests;

/// A watch notification, or a failure after a generous wait.
async fn within<F: std::future::Future>(notified: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), notified).await.expect("no new head within 5 s")
}

fn request(aggregate: &str, n: u64) -> AppendRequest {
    AppendRequest::new(aggregate, "Applied", json!({ "n": n }), "tester")
}

fn assert_conflict(
    result: Result<impl std::fmt::Debug, StoreError>,
    aggregate: &str,
    expected: u64,
    actual: u64,
) {
    match result {
        Err(StoreError::Conflict { aggregate: a, expected: e, actual: x }) => {
            assert_eq!((a.as_str(), e, x), (aggregate, expected, actual))
        }
        other => panic!("expected a conflict on {aggregate} ({expected} vs {actual}), got {other:?}"),
    }
}

pub async fn empty_store(store: Arc<dyn EventStore>) {
    assert_eq!(store.head().await.unwrap(), 0);
    assert_eq!(store.events_since(0, 10).await.unwrap(), vec![]);
    assert_eq!(store.aggregate_version("anything").await.unwrap(), 0);
    assert_eq!(store.latest_snapshot().await.unwrap(), None);
    assert_eq!(store.append_batch(vec![]).await.unwrap(), vec![]);
    assert_eq!(store.head().await.unwrap(), 0);
}

pub async fn seqs_are_global_and_gap_free(store: Arc<dyn EventStore>) {
    for n in 1..=5 {
        let aggregate = if n % 2 == 0 { "a" } else { "b" };
        let req = AppendRequest::new(aggregate, "Applied", json!({ "n": n, "list": [1, "x"] }), "alice");
        let event = store.append(req).await.unwrap();
        assert_eq!(event.seq, n);
        assert_eq!(
            (event.aggregate.as_str(), event.kind.as_str(), event.actor.as_str()),
            (aggregate, "Applied", "alice")
        );
        assert_eq!(event.data, json!({ "n": n, "list": [1, "x"] }));
        let id = uuid::Uuid::parse_str(&event.id).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert!(
            event.at.ends_with('Z') && event.at.len() == "2025-01-01T00:00:00.000Z".len(),
            "{}",
            event.at
        );
        humantime::parse_rfc3339(&event.at).unwrap();
    }
    assert_eq!(store.head().await.unwrap(), 5);
    let events = store.events_since(0, 100).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let mut ids: Vec<_> = events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "ids are unique");
}

pub async fn versions_are_per_aggregate(store: Arc<dyn EventStore>) {
    let mut versions = vec![];
    for aggregate in ["a", "a", "b", "a", "b"] {
        versions.push(store.append(request(aggregate, 0)).await.unwrap().version);
    }
    assert_eq!(versions, [1, 2, 1, 3, 2]);
    assert_eq!(store.aggregate_version("a").await.unwrap(), 3);
    assert_eq!(store.aggregate_version("b").await.unwrap(), 2);
    assert_eq!(store.aggregate_version("c").await.unwrap(), 0);
}

pub async fn expected_version_is_checked(store: Arc<dyn EventStore>) {
    let created = store.append(request("a", 1).expect_version(0)).await.unwrap();
    assert_eq!((created.seq, created.version), (1, 1));

    assert_conflict(store.append(request("a", 2).expect_version(0)).await, "a", 0, 1);
    assert_conflict(store.append(request("a", 2).expect_version(2)).await, "a", 2, 1);
    assert_conflict(store.append(request("new", 2).expect_version(1)).await, "new", 1, 0);
    assert_eq!(store.head().await.unwrap(), 1, "a conflict writes nothing");
    assert_eq!(store.aggregate_version("new").await.unwrap(), 0);

    let updated = store.append(request("a", 3).expect_version(1)).await.unwrap();
    assert_eq!((updated.seq, updated.version), (2, 2));
}

pub async fn concurrent_writers_with_one_expected_version_conflict_once(store: Arc<dyn EventStore>) {
    // Several rounds: one race could be won by luck of scheduling, many cannot.
    for round in 0..20 {
        let aggregate = format!("agg-{round}");
        store.append(request(&aggregate, 0)).await.unwrap();
        let write = |n| {
            let store = Arc::clone(&store);
            let req = request(&aggregate, n).expect_version(1);
            tokio::spawn(async move { store.append(req).await })
        };
        let (first, second) = tokio::join!(write(1), write(2));
        let (first, second) = (first.unwrap(), second.unwrap());
        let (won, lost) = if first.is_ok() { (first, second) } else { (second, first) };
        assert_eq!(won.unwrap().version, 2);
        assert_conflict(lost, &aggregate, 1, 2);
        assert_eq!(store.aggregate_version(&aggregate).await.unwrap(), 2);
    }
    assert_eq!(store.head().await.unwrap(), 40);
}

pub async fn idempotency_key_returns_the_first_event(store: Arc<dyn EventStore>) {
    store.append(request("a", 0)).await.unwrap();
    let first = store.append(request("a", 1).idempotency_key("k1")).await.unwrap();
    assert_eq!(first.seq, 2);

    // A repeat returns the first result even though it differs, and would otherwise conflict.
    let other = AppendRequest::new("b", "Other", json!("different"), "mallory").expect_version(7);
    let repeat = store.append(other.idempotency_key("k1")).await.unwrap();
    assert_eq!(repeat, first);
    assert_eq!(store.head().await.unwrap(), 2);
    assert_eq!(store.aggregate_version("b").await.unwrap(), 0);

    let fresh = store.append(request("a", 1).idempotency_key("k2")).await.unwrap();
    assert_eq!((fresh.seq, fresh.version), (3, 3));
}

pub async fn concurrent_retries_with_one_idempotency_key_write_once(store: Arc<dyn EventStore>) {
    let writes: Vec<_> = (0..8)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append(request("a", n).idempotency_key("same")).await.unwrap() })
        })
        .collect();
    let mut events: Vec<Event> = vec![];
    for write in writes {
        events.push(write.await.unwrap());
    }
    assert!(events.iter().all(|e| *e == events[0]), "every retry got the one event: {events:?}");
    assert_eq!(store.head().await.unwrap(), 1);
}

pub async fn batch_is_all_or_nothing(store: Arc<dyn EventStore>) {
    store.append(request("b", 0)).await.unwrap();
    let batch = vec![
        request("a", 1).expect_version(0),
        request("c", 2).idempotency_key("batch-key"),
        request("b", 3).expect_version(0),
    ];
    assert_conflict(store.append_batch(batch).await, "b", 0, 1);
    assert_eq!(store.head().await.unwrap(), 1, "no event of a failed batch is written");
    assert_eq!(store.aggregate_version("a").await.unwrap(), 0);
    assert_eq!(store.aggregate_version("c").await.unwrap(), 0);
    let unused = store.append(request("d", 4).idempotency_key("batch-key")).await.unwrap();
    assert_eq!(unused.aggregate, "d", "a failed batch does not claim its idempotency keys");

    let batch = vec![request("a", 1).expect_version(0), request("b", 3).expect_version(1), request("e", 5)];
    let events = store.append_batch(batch).await.unwrap();
    let placed: Vec<_> = events.iter().map(|e| (e.seq, e.aggregate.as_str(), e.version)).collect();
    assert_eq!(placed, [(3, "a", 1), (4, "b", 2), (5, "e", 1)]);
    assert_eq!(store.events_since(2, 10).await.unwrap(), events);
}

pub async fn batch_checks_versions_in_order(store: Arc<dyn EventStore>) {
    let events = store
        .append_batch(vec![
            request("a", 1).expect_version(0),
            request("a", 2).expect_version(1).idempotency_key("k"),
            request("x", 3).idempotency_key("k"),
            request("a", 4).expect_version(2),
        ])
        .await
        .unwrap();
    let placed: Vec<_> = events.iter().map(|e| (e.seq, e.version)).collect();
    assert_eq!(placed, [(1, 1), (2, 2), (2, 2), (3, 3)], "a key repeated within a batch returns its event");
    assert_eq!(events[1], events[2]);

    let stale = vec![request("a", 5).expect_version(3), request("a", 6).expect_version(3)];
    assert_conflict(store.append_batch(stale).await, "a", 3, 4);
    assert_eq!(store.head().await.unwrap(), 3);
}

pub async fn events_since_pages_in_order(store: Arc<dyn EventStore>) {
    for n in 0..25 {
        store.append(request(&format!("agg-{}", n % 3), n)).await.unwrap();
    }
    let mut seen = vec![];
    let mut after = 0;
    loop {
        let page = store.events_since(after, 10).await.unwrap();
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = last.seq;
        seen.extend(page);
    }
    assert_eq!(seen.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=25).collect::<Vec<_>>());
    assert_eq!(
        seen.iter().map(|e| e.data["n"].as_u64().unwrap()).collect::<Vec<_>>(),
        (0..25).collect::<Vec<_>>()
    );

    let middle = store.events_since(7, 3).await.unwrap();
    assert_eq!(middle.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9, 10]);
    assert_eq!(store.events_since(7, 0).await.unwrap(), vec![]);
    assert_eq!(store.events_since(25, 10).await.unwrap(), vec![]);
    assert_eq!(store.events_since(u64::MAX, 10).await.unwrap(), vec![]);
}

pub async fn snapshots_keep_the_latest(store: Arc<dyn EventStore>) {
    for n in 0..5 {
        store.append(request("a", n)).await.unwrap();
    }
    store.save_snapshot(3, json!({ "services": ["a"], "at": 3 })).await.unwrap();
    assert_eq!(store.latest_snapshot().await.unwrap(), Some((3, json!({ "services": ["a"], "at": 3 }))));

    store.save_snapshot(5, json!({ "at": 5 })).await.unwrap();
    assert_eq!(store.latest_snapshot().await.unwrap(), Some((5, json!({ "at": 5 }))));

    // A late writer of an older snapshot must not hide the newer one.
    store.save_snapshot(4, json!({ "at": 4 })).await.unwrap();
    assert_eq!(store.latest_snapshot().await.unwrap(), Some((5, json!({ "at": 5 }))));

    match store.save_snapshot(6, json!({})).await {
        Err(StoreError::SnapshotAhead { seq: 6, head: 5 }) => {}
        other => panic!("a snapshot past the head must be refused, got {other:?}"),
    }
    assert_eq!(store.latest_snapshot().await.unwrap(), Some((5, json!({ "at": 5 }))));
}

pub async fn subscribers_see_each_new_head(store: Arc<dyn EventStore>) {
    let mut early = store.subscribe();
    assert_eq!(*early.borrow_and_update(), 0);

    store.append(request("a", 1)).await.unwrap();
    within(early.changed()).await.unwrap();
    assert_eq!(*early.borrow_and_update(), 1);

    store.append_batch(vec![request("a", 2), request("b", 3).idempotency_key("k")]).await.unwrap();
    within(early.wait_for(|&head| head == 3)).await.unwrap();
    early.borrow_and_update();

    // Nothing written, nothing announced.
    store.append(request("c", 4).idempotency_key("k")).await.unwrap();
    assert_conflict(store.append(request("a", 5).expect_version(0)).await, "a", 0, 2);
    assert!(!early.has_changed().unwrap(), "a replay or a conflict moved the head");
    store.append(request("d", 6)).await.unwrap();
    within(early.changed()).await.unwrap();
    assert_eq!(*early.borrow_and_update(), 4);

    let late = store.subscribe();
    assert_eq!(*late.borrow(), 4, "a new subscriber starts at the current head");
}

pub async fn a_lock_is_held_once_until_released(store: Arc<dyn EventStore>) {
    let held = store.hold("rollout/default/web").await.unwrap().expect("a free lock is taken");
    assert!(store.hold("rollout/default/web").await.unwrap().is_none(), "one lock held twice");
    let other = store.hold("rollout/default/api").await.unwrap().expect("another name is another lock");
    assert!(!held.is_lost() && !other.is_lost());
    drop(held);
    // Released at once (etcd: the lease is revoked in the background, so allow it a moment).
    let again = within(async {
        loop {
            if let Some(hold) = store.hold("rollout/default/web").await.unwrap() {
                return hold;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(store.hold("rollout/default/web").await.unwrap().is_none());
    drop((again, other));
}
