//! The etcd backend: the event log in a shared etcd cluster, so several control-plane replicas
//! append to one log and learn of each other's writes through an etcd watch.
//!
//! Keys, all under the prefix given to [`Etcd::connect`] (a `/` is added if it lacks one):
//!
//! | key                         | value                                            |
//! |-----------------------------|--------------------------------------------------|
//! | `head`                      | the last committed seq, decimal                  |
//! | `events/<seq, 20 digits>`   | the event as JSON (zero-padded so keys sort by seq) |
//! | `versions/<aggregate>`      | the aggregate's current version, decimal         |
//! | `keys/<idempotency key>`    | the seq of the first event written with it       |
//! | `snapshot`                  | `{"seq": N, "state": ...}`, only the latest      |
//!
//! An append reads the head, the versions and the idempotency keys it touches in one read-only
//! transaction (one consistent revision), decides the outcome in memory exactly as the embedded
//! backend does, then writes everything in ONE transaction guarded by the mod revisions it read:
//! the head, every aggregate it bumps, and the absence of every idempotency key it claims. If
//! another replica committed in between, the guard fails, nothing is written, and the append
//! starts over from a fresh read — where a moved aggregate becomes a [`StoreError::Conflict`]
//! against the caller's expected version, and a claimed key becomes a replay of the first event.
//!
//! etcd limits one transaction to `--max-txn-ops` operations (128 by default); a batch of N
//! events needs up to 3·N + 1, so large batches need that limit raised on the etcd server.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse,
    WatchClient, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{AppendRequest, Event, EventStore, Result, StoreError};

/// How long one etcd request may take before the store gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Etcd::connect`] waits for etcd to answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds of read-decide-commit an append tries when other replicas keep winning the race.
const MAX_ATTEMPTS: u32 = 200;
/// The head watch reconnects after this, doubling up to [`WATCH_BACKOFF_MAX`].
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The etcd-backed [`EventStore`]. Cheap to clone; every clone shares one connection and one head
/// watch, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    kv: KvClient,
    keys: Keys,
    endpoints: String,
    head: watch::Sender<u64>,
    _stop_watch: DropGuard,
}

/// The store's key names under its prefix.
#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    fn head(&self) -> String {
        format!("{}head", self.prefix)
    }

    fn event(&self, seq: u64) -> String {
        format!("{}events/{seq:020}", self.prefix)
    }

    /// The end (exclusive) of the range holding every event key.
    fn events_end(&self) -> String {
        // '0' is the byte after '/'.
        format!("{}events0", self.prefix)
    }

    fn version(&self, aggregate: &str) -> String {
        format!("{}versions/{aggregate}", self.prefix)
    }

    fn idempotency(&self, key: &str) -> String {
        format!("{}keys/{key}", self.prefix)
    }

    fn snapshot(&self) -> String {
        format!("{}snapshot", self.prefix)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    seq: u64,
    state: serde_json::Value,
}

impl Etcd {
    /// Connects to the etcd cluster at `endpoints` (`host:port` or `http://host:port`; plain
    /// HTTP, no TLS) and opens the log under `prefix` (e.g. `/pilotfish/`), failing if etcd does
    /// not answer within a few seconds. Control planes sharing a prefix share a log.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Etcd> {
        let shown = endpoints.join(",");
        let failed = |cause: Box<dyn std::error::Error + Send + Sync>| StoreError::Database {
            context: format!("connecting to etcd at {shown}"),
            cause,
        };
        if endpoints.is_empty() {
            return Err(failed("no etcd endpoint given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // Pings find a dead connection under an idle watch; refusing without a leader makes a
            // partitioned member's watch fail over instead of going quiet.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(options)).await.map_err(|e| failed(e.into()))?;
        let keys = Keys::new(prefix);
        let kv = client.kv_client();
        let head = match tokio::time::timeout(CONNECT_TIMEOUT, read_head(&kv, &keys)).await {
            Ok(Ok((head, _))) => head,
            Ok(Err(StoreError::Database { cause, .. } | StoreError::Unavailable { cause, .. })) => {
                return Err(failed(cause))
            }
            Ok(Err(other)) => return Err(other),
            Err(_) => {
                return Err(failed(
                    format!("no answer within {CONNECT_TIMEOUT:?}; is etcd running and reachable?").into(),
                ))
            }
        };
        let head = watch::Sender::new(head);
        let stop = CancellationToken::new();
        tokio::spawn(follow_head(
            client.watch_client(),
            kv.clone(),
            keys.clone(),
            head.clone(),
            stop.clone(),
        ));
        Ok(Etcd {
            inner: Arc::new(Inner { kv, keys, endpoints: shown, head, _stop_watch: stop.drop_guard() }),
        })
    }

    /// The endpoints of a `--store` URL: `etcd://host:port[,host:port...]` → `["host:port", ...]`;
    /// `None` if it is not an `etcd://` URL or names no endpoint.
    pub fn endpoints_from_url(url: &str) -> Option<Vec<String>> {
        let rest = url.strip_prefix("etcd://")?;
        let endpoints: Vec<String> =
            rest.trim_end_matches('/').split(',').map(str::trim).map(str::to_owned).collect();
        (!endpoints.iter().any(String::is_empty)).then_some(endpoints)
    }

    fn kv(&self) -> KvClient {
        self.inner.kv.clone()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Moves the announced head forward (never back: commits and watch events arrive in any order).
    fn advance(&self, seq: u64) {
        advance(&self.inner.head, seq);
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

    /// Runs one transaction with a timeout; `ops` (its largest list) explains etcd's limit error.
    async fn txn(&self, txn: Txn, doing: &str, ops: usize) -> Result<etcd_client::TxnResponse> {
        let mut kv = self.kv();
        let result = within(doing, kv.txn(txn)).await;
        result.map_err(|e| match e {
            StoreError::Database { context, cause } if cause.to_string().contains("too many operations") => {
                StoreError::Database {
                    context: format!(
                        "{context} at {}: one etcd transaction of {ops} operations is over the etcd \
                         server's limit; start etcd with a larger --max-txn-ops (default 128), or \
                         write smaller batches",
                        self.inner.endpoints
                    ),
                    cause,
                }
            }
            other => other,
        })
    }

    async fn get(&self, key: String, options: Option<GetOptions>, doing: &str) -> Result<Vec<KeyValue>> {
        let mut kv = self.kv();
        let mut response = within(doing, kv.get(key, options)).await?;
        Ok(response.take_kvs())
    }
}

#[async_trait]
impl EventStore for Etcd {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Event>> {
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
            context: format!("appending to etcd at {}", self.inner.endpoints),
            cause: format!("other writers won the race {MAX_ATTEMPTS} times in a row").into(),
        })
    }

    async fn events_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>> {
        let Some(from) = after_seq.checked_add(1) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let options = GetOptions::new().with_range(keys.events_end()).with_limit(limit);
        let kvs = self.get(keys.event(from), Some(options), "reading events").await?;
        kvs.iter()
            .map(|kv| {
                let seq = kv
                    .key()
                    .rsplit(|&b| b == b'/')
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| malformed(&String::from_utf8_lossy(kv.key()), "not an event key"))?;
                decode_event(seq, kv.value())
            })
            .collect()
    }

    async fn head(&self) -> Result<u64> {
        let (head, _) = within_result(read_head(&self.inner.kv, self.keys())).await?;
        self.advance(head);
        Ok(head)
    }

    async fn aggregate_version(&self, aggregate: &str) -> Result<u64> {
        let key = self.keys().version(aggregate);
        let kvs = self.get(key.clone(), None, "reading an aggregate version").await?;
        kvs.first().map_or(Ok(0), |kv| parse_number(&key, kv))
    }

    async fn save_snapshot(&self, seq: u64, state: serde_json::Value) -> Result<()> {
        let head = self.head().await?;
        if seq > head {
            return Err(StoreError::SnapshotAhead { seq, head });
        }
        let key = self.keys().snapshot();
        let value =
            serde_json::to_vec(&StoredSnapshot { seq, state }).expect("a JSON value always serializes");
        // Compare-and-swap on the snapshot key, so a late writer of an older snapshot never
        // replaces a newer one written by another replica.
        for _ in 0..MAX_ATTEMPTS {
            let current = self.get(key.clone(), None, "reading the snapshot").await?;
            let revision = match current.first() {
                Some(kv) if decode_snapshot(kv)?.0 >= seq => return Ok(()),
                Some(kv) => kv.mod_revision(),
                None => 0,
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            if self.txn(txn, "saving a snapshot", 1).await?.succeeded() {
                return Ok(());
            }
        }
        Err(StoreError::Database {
            context: format!("saving a snapshot to etcd at {}", self.inner.endpoints),
            cause: "other replicas kept replacing the snapshot; try again".into(),
        })
    }

    async fn latest_snapshot(&self) -> Result<Option<(u64, serde_json::Value)>> {
        let kvs = self.get(self.keys().snapshot(), None, "reading the snapshot").await?;
        kvs.first().map(decode_snapshot).transpose()
    }

    fn shared(&self) -> bool {
        true
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }
}

/// Keeps `head` up to date with the head key, whoever writes it, until `stop`: read it, then
/// watch it from the next revision; after any failure (etcd restarting, a lost connection, a
/// compacted revision) wait, and start over with a fresh read, so no change is missed.
async fn follow_head(
    mut watch_client: WatchClient,
    kv: KvClient,
    keys: Keys,
    head: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut backoff = WATCH_BACKOFF_MIN;
    let follow = async {
        loop {
            let error = match follow_once(&mut watch_client, &kv, &keys, &head, &mut backoff).await {
                Ok(()) => "the watch stream ended".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(error, retry_in = ?backoff, key = keys.head(), "etcd head watch lost; reconnecting");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        () = follow => {}
    }
}

async fn follow_once(
    watch_client: &mut WatchClient,
    kv: &KvClient,
    keys: &Keys,
    head: &watch::Sender<u64>,
    backoff: &mut Duration,
) -> Result<()> {
    let (seq, revision) = within_result(read_head(kv, keys)).await?;
    advance(head, seq);
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let mut stream = within("watching the head", watch_client.watch(keys.head(), Some(options))).await?;
    while let Some(response) = stream.message().await.map_err(|e| etcd_error("watching the head", e))? {
        if response.canceled() {
            return Err(database(
                "watching the head",
                format!("etcd cancelled the watch: {}", response.cancel_reason()),
            ));
        }
        if response.created() {
            *backoff = WATCH_BACKOFF_MIN;
        }
        for event in response.events() {
            if let Some(kv) = event.kv() {
                if let Ok(seq) = parse_number(&keys.head(), kv) {
                    advance(head, seq);
                }
            }
        }
    }
    Ok(())
}

fn advance(head: &watch::Sender<u64>, seq: u64) {
    head.send_if_modified(|current| {
        let moved = seq > *current;
        *current = (*current).max(seq);
        moved
    });
}

/// The head and the revision of the read (0 and the read's revision when the log is empty).
async fn read_head(kv: &KvClient, keys: &Keys) -> Result<(u64, i64)> {
    let mut response =
        kv.clone().get(keys.head(), None).await.map_err(|e| etcd_error("reading the head", e))?;
    let revision = response.header().map_or(0, |h| h.revision());
    let head = match response.take_kvs().first() {
        Some(kv) => parse_number(&keys.head(), kv)?,
        None => 0,
    };
    Ok((head, revision))
}

async fn within<T>(
    doing: &str,
    request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| etcd_error(doing, e)),
        Err(_) => Err(unanswered(doing)),
    }
}

async fn within_result<T>(request: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| Err(unanswered("reading the head")))
}

/// An etcd client error: [`StoreError::Unavailable`] when etcd cannot be reached or has no
/// leader (the request can work later), [`StoreError::Database`] for anything else.
fn etcd_error(doing: &str, e: etcd_client::Error) -> StoreError {
    let unreachable = match &e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        _ => false,
    };
    if unreachable {
        StoreError::Unavailable { context: format!("etcd: {doing}"), cause: e.into() }
    } else {
        database(doing, e)
    }
}

fn unanswered(doing: &str) -> StoreError {
    StoreError::Unavailable {
        context: format!("etcd: {doing}"),
        cause: format!("etcd did not answer within {REQUEST_TIMEOUT:?}").into(),
    }
}

fn database(doing: &str, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Database { context: format!("etcd: {doing}"), cause: cause.into() }
}

fn malformed(key: &str, why: &str) -> StoreError {
    database(
        &format!("reading `{key}`"),
        format!("{why}; the key was written by something other than this store"),
    )
}

fn parse_number(key: &str, kv: &KeyValue) -> Result<u64> {
    std::str::from_utf8(kv.value())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(key, "the value is not a number"))
}

fn decode_event(seq: u64, json: &[u8]) -> Result<Event> {
    serde_json::from_slice(json)
        .map_err(|e| StoreError::Corrupt { seq, reason: format!("event is not valid JSON: {e}") })
}

fn decode_snapshot(kv: &KeyValue) -> Result<(u64, serde_json::Value)> {
    let stored: StoredSnapshot = serde_json::from_slice(kv.value())
        .map_err(|e| malformed(&String::from_utf8_lossy(kv.key()), &format!("not a snapshot: {e}")))?;
    Ok((stored.seq, stored.state))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::OnceLock;
    use std::time::Instant;

    use serde_json::json;
    use tempfile::TempDir;

    use super::*;

    /// A real etcd on free loopback ports. Dropping it stops it; a watchdog also stops it when the
    /// test process exits, so the one shared by a whole test run (never dropped) does not outlive it.
    struct EtcdServer {
        child: Child,
        dir: PathBuf,
        client_port: u16,
        peer_port: u16,
        _tmp: Option<TempDir>,
    }

    impl EtcdServer {
        /// A fresh etcd in a new temp dir; `shared`: the watchdog also deletes the dir at exit.
        fn start(shared: bool) -> Result<Self, String> {
            let tmp = tempfile::Builder::new()
                .prefix("pilotfish-etcd-")
                .tempdir()
                .map_err(|e| format!("creating a temp dir: {e}"))?;
            // Bind both at once so they differ; etcd binds them again right after.
            let client = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let peer = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let (client_port, peer_port) =
                (client.local_addr().unwrap().port(), peer.local_addr().unwrap().port());
            drop((client, peer));
            let dir = tmp.path().to_owned();
            let child = spawn_etcd(&dir, client_port, peer_port, shared)?;
            // From here on a shared dir is the watchdog's to delete, at exit.
            let tmp = if shared {
                let _ = tmp.keep();
                None
            } else {
                Some(tmp)
            };
            let server = Self { child, dir, client_port, peer_port, _tmp: tmp };
            server.wait_ready()?;
            Ok(server)
        }

        fn endpoint(&self) -> String {
            format!("127.0.0.1:{}", self.client_port)
        }

        /// SIGKILL, as a crash would.
        fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        /// Starts etcd again on the same ports and data.
        fn restart(&mut self) {
            self.child = spawn_etcd(&self.dir, self.client_port, self.peer_port, false).unwrap();
            self.wait_ready().unwrap();
        }

        fn wait_ready(&self) -> Result<(), String> {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if healthy(self.client_port) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(20).collect();
            Err(format!(
                "etcd did not become healthy on 127.0.0.1:{} within 30 s; its log ends:\n{}",
                self.client_port,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        }
    }

    impl Drop for EtcdServer {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn spawn_etcd(dir: &Path, client_port: u16, peer_port: u16, shared: bool) -> Result<Child, String> {
        let binary = std::env::var("PILOTFISH_TEST_ETCD").unwrap_or_else(|_| "etcd".to_owned());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("etcd.log"))
            .map_err(|e| format!("creating the etcd log: {e}"))?;
        let (client, peer) =
            (format!("http://127.0.0.1:{client_port}"), format!("http://127.0.0.1:{peer_port}"));
        let child = Command::new(&binary)
            .args(["--name", "pilotfish-test", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("pilotfish-test={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "etcd is not installed (no `{binary}` on PATH): the etcd backend's tests need a real \
                     etcd. Install Debian's etcd-server (`apt-get install etcd-server`), as \
                     scripts/test.sh does, or set PILOTFISH_TEST_ETCD to an etcd binary"
                ),
                _ => format!("starting `{binary}`: {e}"),
            })?;
        // The watchdog: once this test process is gone, stop etcd (and delete a shared dir).
        let remove = if shared { dir.to_string_lossy().into_owned() } else { String::new() };
        Command::new("sh")
            .args([
                "-c",
                r#"while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 0.5; done
                   kill -9 "$2" 2>/dev/null; if [ -n "$3" ]; then sleep 1; rm -rf "$3"; fi"#,
                "etcd-watchdog",
            ])
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .arg(remove)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the etcd watchdog: {e}"))?;
        Ok(child)
    }

    fn healthy(port: u16) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains(r#""health":"true""#)
    }

    /// The etcd every test of this run shares, each under its own prefix.
    fn shared_etcd() -> &'static EtcdServer {
        static SHARED: OnceLock<Result<EtcdServer, String>> = OnceLock::new();
        match SHARED.get_or_init(|| EtcdServer::start(true)) {
            Ok(server) => server,
            Err(why) => panic!("{why}"),
        }
    }

    fn fresh_prefix() -> String {
        format!("/pilotfish-test/{}/", uuid::Uuid::new_v4())
    }

    async fn fresh() -> (Arc<dyn EventStore>, String) {
        let prefix = fresh_prefix();
        let store = Etcd::connect(&[shared_etcd().endpoint()], &prefix).await.unwrap();
        (Arc::new(store), prefix)
    }

    crate::store::conformance::conformance_tests!(fresh);

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
            let shared: Vec<u64> =
                log.iter().filter(|e| e.aggregate == "shared").map(|e| e.version).collect();
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
        let batch =
            (0..50).map(|n| request(&format!("agg-{n}"), n).idempotency_key(format!("k{n}"))).collect();
        let err = store.append_batch(batch).await.unwrap_err();
        assert!(matches!(err, StoreError::Database { .. }), "{err}");
        assert!(err.to_string().contains("--max-txn-ops"), "the error says what to raise: {err}");
        assert_eq!(store.head().await.unwrap(), 0);
        // 40 events (121 operations) fit.
        let batch =
            (0..40).map(|n| request(&format!("agg-{n}"), n).idempotency_key(format!("k{n}"))).collect();
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
}
