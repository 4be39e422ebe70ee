//! The connection to etcd: [`Etcd`], which every clone shares with one head watch, and the
//! requests the other parts make through it.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, KvClient, LeaseClient, Txn};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::keys::Keys;
use super::request::within;
use super::watch::{advance, follow_head, read_head};
use crate::store::{Result, StoreError};

/// How long [`Etcd::connect`] waits for etcd to answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds of read-decide-commit (an append, a snapshot) tried when other replicas keep winning
/// the race.
pub(super) const MAX_ATTEMPTS: u32 = 200;

/// The etcd-backed [`EventStore`](crate::store::EventStore). Cheap to clone; every clone shares one connection and one head
/// watch, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    kv: KvClient,
    lease: LeaseClient,
    keys: Keys,
    endpoints: String,
    head: watch::Sender<u64>,
    _stop_watch: DropGuard,
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
            inner: Arc::new(Inner {
                kv,
                lease: client.lease_client(),
                keys,
                endpoints: shown,
                head,
                _stop_watch: stop.drop_guard(),
            }),
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

    pub(super) fn kv(&self) -> KvClient {
        self.inner.kv.clone()
    }

    pub(super) fn lease(&self) -> LeaseClient {
        self.inner.lease.clone()
    }

    pub(super) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The endpoints, as errors name them.
    pub(super) fn endpoints(&self) -> &str {
        &self.inner.endpoints
    }

    pub(super) fn heads(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    /// Moves the announced head forward (never back: commits and watch events arrive in any order).
    pub(super) fn advance(&self, seq: u64) {
        advance(&self.inner.head, seq);
    }

    /// Runs one transaction with a timeout; `ops` (its largest list) explains etcd's limit error.
    pub(super) async fn txn(&self, txn: Txn, doing: &str, ops: usize) -> Result<etcd_client::TxnResponse> {
        let mut kv = self.kv();
        let result = within(doing, kv.txn(txn)).await;
        result.map_err(|e| match e {
            StoreError::Database { context, cause } if cause.to_string().contains("too many operations") => {
                StoreError::Database {
                    context: format!(
                        "{context} at {}: one etcd transaction of {ops} operations is over the etcd \
                         server's limit; start etcd with a larger --max-txn-ops (default 128), or \
                         write smaller batches",
                        self.endpoints()
                    ),
                    cause,
                }
            }
            other => other,
        })
    }

    pub(super) async fn get(
        &self,
        key: String,
        options: Option<GetOptions>,
        doing: &str,
    ) -> Result<Vec<KeyValue>> {
        let mut kv = self.kv();
        let mut response = within(doing, kv.get(key, options)).await?;
        Ok(response.take_kvs())
    }
}
