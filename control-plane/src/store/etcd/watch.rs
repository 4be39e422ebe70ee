//! The head watch: keeps every clone's head up to date with the head key, whoever writes it, so
//! a replica learns of the others' commits; it reconnects after any failure.

use std::time::Duration;

use etcd_client::{KvClient, WatchClient, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::codec::parse_number;
use super::keys::Keys;
use super::request::{database, etcd_error, within, within_result};
use crate::store::Result;

/// The head watch reconnects after this, doubling up to [`WATCH_BACKOFF_MAX`].
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Keeps `head` up to date with the head key, whoever writes it, until `stop`: read it, then
/// watch it from the next revision; after any failure (etcd restarting, a lost connection, a
/// compacted revision) wait, and start over with a fresh read, so no change is missed.
pub(super) async fn follow_head(
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

/// Moves `head` forward (never back: commits and watch events arrive in any order).
pub(super) fn advance(head: &watch::Sender<u64>, seq: u64) {
    head.send_if_modified(|current| {
        let moved = seq > *current;
        *current = (*current).max(seq);
        moved
    });
}

/// The head and the revision of the read (0 and the read's revision when the log is empty).
pub(super) async fn read_head(kv: &KvClient, keys: &Keys) -> Result<(u64, i64)> {
    let mut response =
        kv.clone().get(keys.head(), None).await.map_err(|e| etcd_error("reading the head", e))?;
    let revision = response.header().map_or(0, |h| h.revision());
    let head = match response.take_kvs().first() {
        Some(kv) => parse_number(&keys.head(), kv)?,
        None => 0,
    };
    Ok((head, revision))
}
