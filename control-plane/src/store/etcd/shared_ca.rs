//! The mesh CA's keys beside the log (never events): `<prefix>ca`, read by every replica and
//! created by whichever starts first, and `<prefix>ca/<root fingerprint>` for each root a
//! rotation made. What is stored there (certificates, sealed keys) is the CA's business
//! (`ca::shared`); this only keeps the bytes and decides the race.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::client::Etcd;
use super::request::database;
use crate::store::Result;

impl Etcd {
    /// The key the shared CA is stored under, as errors and logs name it.
    pub fn shared_ca_key(&self) -> String {
        self.keys().ca()
    }

    /// The key a rotation's CA under the root `fingerprint` is stored under.
    pub fn rotated_ca_key(&self, fingerprint: &str) -> String {
        format!("{}/{fingerprint}", self.keys().ca())
    }

    /// The shared CA as stored, or `None` before any replica stored one.
    pub async fn shared_ca(&self) -> Result<Option<Vec<u8>>> {
        self.stored_ca(self.keys().ca()).await
    }

    /// Stores `value` as the shared CA unless one is stored already (another replica's, written
    /// meanwhile), in one transaction; answers the one stored — `value` or the other.
    pub async fn create_shared_ca(&self, value: Vec<u8>) -> Result<Vec<u8>> {
        self.create_ca(self.keys().ca(), value).await
    }

    /// The CA a rotation made under the root `fingerprint`, or `None`.
    pub async fn rotated_ca(&self, fingerprint: &str) -> Result<Option<Vec<u8>>> {
        self.stored_ca(self.rotated_ca_key(fingerprint)).await
    }

    /// Stores the CA a rotation made under the root `fingerprint` (put-if-absent, as
    /// [`Etcd::create_shared_ca`]).
    pub async fn create_rotated_ca(&self, fingerprint: &str, value: Vec<u8>) -> Result<Vec<u8>> {
        self.create_ca(self.rotated_ca_key(fingerprint), value).await
    }

    async fn stored_ca(&self, key: String) -> Result<Option<Vec<u8>>> {
        let kvs = self.get(key, None, "reading the shared CA").await?;
        Ok(kvs.into_iter().next().map(|kv| kv.value().to_vec()))
    }

    async fn create_ca(&self, key: String, value: Vec<u8>) -> Result<Vec<u8>> {
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
