//! Locks on etcd ([`EventStore::hold`](crate::store::EventStore::hold)): `locks/<name>` created
//! only if absent, in one transaction, attached to a fresh lease of [`HOLD_TTL`]. The holder keeps
//! the lease alive about three times a TTL; when a renewal fails or goes unanswered it counts the
//! lock as lost at once (the lease may live a little longer, but the holder cannot know), and
//! when the holder dies etcd deletes the key as the lease lapses, so another replica takes it
//! within [`HOLD_TTL`]. Dropping the [`Hold`] revokes the lease, freeing the lock at once.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio_util::sync::CancellationToken;

use super::client::Etcd;
use super::request::within;
use crate::store::{Hold, Result, HOLD_TTL};

/// How often the lease is renewed: three times per TTL.
const RENEW_EVERY: Duration = Duration::from_millis(HOLD_TTL.as_millis() as u64 / 3);

impl Etcd {
    pub(super) async fn take_lock(&self, name: &str) -> Result<Option<Hold>> {
        let mut lease = self.lease();
        let ttl = HOLD_TTL.as_secs() as i64;
        let id = within("granting a lock's lease", lease.grant(ttl, None)).await?.id();
        let key = self.keys().lock(name);
        let take = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([
            TxnOp::put(key, std::process::id().to_string(), Some(PutOptions::new().with_lease(id))),
        ]);
        let taken = match self.txn(take, "taking a lock", 1).await {
            Ok(response) => response.succeeded(),
            Err(e) => {
                revoke(self.clone(), id);
                return Err(e);
            }
        };
        if !taken {
            revoke(self.clone(), id);
            return Ok(None);
        }
        let (lost, stop) = (CancellationToken::new(), CancellationToken::new());
        tokio::spawn(keep_alive(self.clone(), id, lost.clone(), stop.clone()));
        Ok(Some(Hold::new(lost, stop.drop_guard())))
    }
}

/// Renews lease `id` until `stop`, then revokes it; cancels `lost` at the first renewal that
/// fails or goes unanswered within a renewal period.
async fn keep_alive(etcd: Etcd, id: i64, lost: CancellationToken, stop: CancellationToken) {
    let mut lease = etcd.lease();
    let renewed = async {
        let (mut keeper, mut answers) = within("keeping a lock's lease", lease.keep_alive(id)).await.ok()?;
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tick.tick().await;
            keeper.keep_alive().await.ok()?;
            match tokio::time::timeout(RENEW_EVERY, answers.message()).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
                _ => return None::<()>,
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = renewed => {
            lost.cancel();
            tracing::warn!(lease = id, "a lock's lease could not be renewed: the lock is lost");
            stop.cancelled().await;
        }
    }
    revoke(etcd, id);
}

/// Revokes lease `id` in the background (best effort: unrevoked, it lapses within the TTL).
fn revoke(etcd: Etcd, id: i64) {
    tokio::spawn(async move {
        let mut lease = etcd.lease();
        let _ = within("revoking a lock's lease", lease.revoke(id)).await;
    });
}
