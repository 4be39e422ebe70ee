//! The etcd backend against a real etcd: the conformance suite, replicas sharing one log, races,
//! prefixes, etcd's transaction limit, and the head watch across an etcd restart.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::server::{shared_etcd, EtcdServer};
use super::Etcd;
use crate::store::{AppendRequest, EventStore, StoreError};

fn fresh_prefix() -> String {
    format!("/pilotfish-test/{}/", uuid::Uuid::new_v4())
}

async fn fresh() -> (Arc<dyn EventStore>, String) {
    let prefix = fresh_prefix();
    let store = Etcd::connect(&[shared_etcd().endpoint()], &prefix).await.unwrap();
    (Arc::new(store), prefix)
}

crate::store::conformance::conformance_tests!(fresh);

/// A replica that dies holding a lock (its runtime gone: no renewal, no revoke) loses it to
/// another replica within the lease's TTL, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_lock_passes_to_another_within_the_ttl() {
    let prefix = fresh_prefix();
    let endpoint = shared_etcd().endpoint();
    let doomed = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (endpoints, p) = ([endpoint.clone()], prefix.clone());
    let hold = doomed
        .spawn(async move {
            let a = Etcd::connect(&endpoints, &p).await.unwrap();
            let hold = a.hold("rollout/default/web").await.unwrap().expect("a free lock");
            (a, hold)
        })
        .await
        .unwrap();
    let b = Etcd::connect(&[endpoint], &prefix).await.unwrap();
    assert!(b.hold("rollout/default/web").await.unwrap().is_none(), "held by the first replica");
    // Renewed while the first replica lives: still held after more than a TTL.
    tokio::time::sleep(crate::store::HOLD_TTL + Duration::from_secs(1)).await;
    assert!(b.hold("rollout/default/web").await.unwrap().is_none(), "renewals keep it held");
    assert!(!hold.1.is_lost());
    let died = Instant::now();
    std::mem::forget(hold);
    doomed.shutdown_background();
    let taken = loop {
        if let Some(hold) = b.hold("rollout/default/web").await.unwrap() {
            break hold;
        }
        assert!(died.elapsed() < Duration::from_secs(10), "the dead replica's lock never lapsed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(died.elapsed() <= crate::store::HOLD_TTL + Duration::from_secs(2), "{:?}", died.elapsed());
    assert!(!taken.is_lost());
}

fn request(aggregate: &str, n: u64) -> AppendRequest {
    AppendRequest::new(aggregate, "Applied", json!({ "n": n }), "tester")
}

async fn reaches(rx: &mut watch::Receiver<u64>, head: u64) {
    let reached = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|&h| h >= head)).await;
    let reached = reached.map(|r| r.map(|_| ()));
    assert!(matches!(reached, Ok(Ok(()))), "the head did not reach {head} within 10 s: {}", *rx.borrow());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_log_without_duplicate_seqs() {
    let prefix = fresh_prefix();
    let endpoints = [shared_etcd().endpoint()];
    let a = Etcd::connect(&endpoints, &prefix).await.unwrap();
    let b = Etcd::connect(&endpoints, &prefix).await.unwrap();
    let (mut seen_by_a, mut seen_by_b) = (a.subscribe(), b.subscribe());

    // Each learns of the other's writes through the etcd watch.
    a.append(request("x", 0)).await.unwrap();
    reaches(&mut seen_by_b, 1).await;
    b.append(request("x", 1)).await.unwrap();
    reaches(&mut seen_by_a, 2).await;
    assert_eq!(b.aggregate_version("x").await.unwrap(), 2);

    // Concurrent writers on both replicas, single appends and batches, one shared aggregate.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut events = vec![];
                for n in 0..8 {
                    if n % 3 == 0 {
                        let batch = vec![request("shared", n), request(&format!("w{w}"), n)];
                        events.extend(store.append_batch(batch).await.unwrap());
                    } else {
                        events.push(store.append(request("shared", n)).await.unwrap());
                    }
                }
                events
            })
        })
        .collect();
    let mut written = vec![];
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    let total = 2 + written.len() as u64;
    let seqs: HashSet<u64> = written.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), written.len(), "two appends got one seq");
    assert_eq!(seqs, (3..=total).collect::<HashSet<_>>(), "seqs are gap-free");

    for store in [&a, &b] {
        assert_eq!(store.head().await.unwrap(), total);
        let log = store.events_since(0, 1000).await.unwrap();
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
        let shared: Vec<u64> = log.iter().filter(|e| e.aggregate == "shared").map(|e| e.version).collect();
        assert_eq!(shared, (1..=shared.len() as u64).collect::<Vec<_>>(), "versions are gap-free");
        for event in &written {
            assert_eq!(&log[event.seq as usize - 1], event, "the log holds what the writer was told");
        }
    }
    reaches(&mut seen_by_a, total).await;
    reaches(&mut seen_by_b, total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_one_expected_version_conflict_once() {
    let prefix = fresh_prefix();
    let endpoints = [shared_etcd().endpoint()];
    let a = Etcd::connect(&endpoints, &prefix).await.unwrap();
    let b = Etcd::connect(&endpoints, &prefix).await.unwrap();
    for round in 0..10 {
        let aggregate = format!("agg-{round}");
        a.append(request(&aggregate, 0)).await.unwrap();
        let (ra, rb) = tokio::join!(
            a.append(request(&aggregate, 1).expect_version(1)),
            b.append(request(&aggregate, 2).expect_version(1)),
        );
        let (won, lost) = if ra.is_ok() { (ra, rb) } else { (rb, ra) };
        assert_eq!(won.unwrap().version, 2);
        assert!(
            matches!(lost, Err(StoreError::Conflict { expected: 1, actual: 2, .. })),
            "the loser gets a conflict: {lost:?}"
        );
    }
    assert_eq!(b.head().await.unwrap(), 20);
}

#[tokio::test]
async fn prefixes_are_separate_logs() {
    let prefix = fresh_prefix();
    let endpoint = [shared_etcd().endpoint()];
    let store = Etcd::connect(&endpoint, prefix.trim_end_matches('/')).await.unwrap();
    store.append(request("a", 0)).await.unwrap();
    let same = Etcd::connect(&endpoint, &prefix).await.unwrap();
    assert_eq!(same.head().await.unwrap(), 1, "a trailing / does not change the prefix");
    let longer = Etcd::connect(&endpoint, &format!("{}x", prefix.trim_end_matches('/'))).await.unwrap();
    assert_eq!(longer.head().await.unwrap(), 0);
    assert_eq!(longer.events_since(0, 10).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_batch_over_etcds_transaction_limit_fails_clearly_and_writes_nothing() {
    let (store, _prefix) = fresh().await;
    // etcd's default --max-txn-ops is 128; this batch needs 3 * 50 + 1.
    let batch = (0..50).map(|n| request(&format!("agg-{n}"), n).idempotency_key(format!("k{n}"))).collect();
    let err = store.append_batch(batch).await.unwrap_err();
    assert!(matches!(err, StoreError::Database { .. }), "{err}");
    assert!(err.to_string().contains("--max-txn-ops"), "the error says what to raise: {err}");
    assert_eq!(store.head().await.unwrap(), 0);
    // 40 events (121 operations) fit.
    let batch = (0..40).map(|n| request(&format!("agg-{n}"), n).idempotency_key(format!("k{n}"))).collect();
    assert_eq!(store.append_batch(batch).await.unwrap().len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_watch_reconnects_after_etcd_restarts() {
    let mut server = EtcdServer::start(false).unwrap_or_else(|why| panic!("{why}"));
    let prefix = fresh_prefix();
    let watcher = Etcd::connect(&[server.endpoint()], &prefix).await.unwrap();
    let mut heads = watcher.subscribe();
    let writer = Etcd::connect(&[server.endpoint()], &prefix).await.unwrap();
    writer.append(request("a", 0)).await.unwrap();
    reaches(&mut heads, 1).await;

    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(writer.append(request("a", 1)).await.is_err(), "etcd is down");
    server.restart();

    // The writer's connection recovers, and the watcher learns of the write by its watch.
    let deadline = Instant::now() + Duration::from_secs(15);
    let event = loop {
        match writer.append(request("a", 2)).await {
            Ok(event) => break event,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("etcd not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    };
    assert_eq!(event.seq, 2, "the acknowledged write survived the restart; the failed one is absent");
    reaches(&mut heads, 2).await;
    assert_eq!(watcher.events_since(0, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn connecting_to_no_etcd_fails_clearly() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let Err(err) = Etcd::connect(std::slice::from_ref(&endpoint), "/p/").await else {
        panic!("connected to nothing")
    };
    assert!(started.elapsed() < Duration::from_secs(15), "gave up only after {:?}", started.elapsed());
    assert!(err.to_string().contains(&endpoint), "the error names the endpoint: {err}");
    assert!(Etcd::connect(&[], "/p/").await.is_err());
}

#[test]
fn store_urls_name_the_endpoints() {
    assert_eq!(Etcd::endpoints_from_url("etcd://10.0.0.1:2379"), Some(vec!["10.0.0.1:2379".to_owned()]));
    assert_eq!(
        Etcd::endpoints_from_url("etcd://a:2379,b:2379/"),
        Some(vec!["a:2379".to_owned(), "b:2379".to_owned()])
    );
    assert_eq!(Etcd::endpoints_from_url("etcd://"), None);
    assert_eq!(Etcd::endpoints_from_url("etcd://a:1,,b:2"), None);
    assert_eq!(Etcd::endpoints_from_url("http://a:2379"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_replicas_storing_the_shared_ca_at_once_one_wins_and_all_read_it() {
    let prefix = fresh_prefix();
    let endpoints = [shared_etcd().endpoint()];
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(Etcd::connect(&endpoints, &prefix).await.unwrap());
    }
    assert_eq!(replicas[0].shared_ca().await.unwrap(), None);
    let racing: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(i, replica)| {
            let replica = replica.clone();
            tokio::spawn(async move { replica.create_shared_ca(vec![i as u8; 8]).await.unwrap() })
        })
        .collect();
    let mut stored = Vec::new();
    for task in racing {
        stored.push(task.await.unwrap());
    }
    assert!(stored.windows(2).all(|w| w[0] == w[1]), "{stored:?}");
    for replica in &replicas {
        assert_eq!(replica.shared_ca().await.unwrap().as_ref(), Some(&stored[0]));
    }
    assert_eq!(replicas[0].head().await.unwrap(), 0, "the CA is not an event");
    assert_eq!(replicas[0].shared_ca_key(), format!("{prefix}ca"));
}
