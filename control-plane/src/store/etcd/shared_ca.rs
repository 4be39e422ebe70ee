//! The mesh CA's one key beside the log (`<prefix>ca`, never an event): read by every replica,
//! created by whichever starts first. What is stored there (certificates, sealed keys) is the
//! CA's business (`ca::shared`); this only keeps the bytes and decides the race.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::client::Etcd;
use super::request::database;
use crate::store::Result;

impl Etcd {
    /// The key the shared CA is stored under, as errors and logs name it.
    pub fn shared_ca_key(&self) -> String {
        self.keys().ca()
    }

    /// The shared CA as stored, or `None` before any replica stored one.
    pub async fn shared_ca(&self) -> Result<Option<Vec<u8>>> {
        let kvs = self.get(self.keys().ca(), None, "reading the shared CA").await?;
        Ok(kvs.into_iter().next().map(|kv| kv.value().to_vec()))
    }

    /// Stores `value` as the shared CA unless one is stored already (another replica's, written
    /// meanwhile), in one transaction; answers the one stored — `value` or the other.
    pub async fn create_shared_ca(&self, value: Vec<u8>) -> Result<Vec<u8>> {
        let key = self.keys().ca();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn(txn, "storing the shared CA", 1).await?;
        if response.succeeded() {
            return Ok(value);
        }
        let stored = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        stored.ok_or_else(|| database("storing the shared CA", "the key was there, then gone"))
    }
}
