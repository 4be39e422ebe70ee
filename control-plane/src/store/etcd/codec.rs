//! The values as stored: decimal numbers, events and the snapshot as JSON; a value that does
//! not decode names its key.

use etcd_client::KeyValue;
use serde::{Deserialize, Serialize};

use super::request::database;
use crate::store::{Event, Result, StoreError};

#[derive(Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) seq: u64,
    pub(super) state: serde_json::Value,
}

pub(super) fn malformed(key: &str, why: &str) -> StoreError {
    database(
        &format!("reading `{key}`"),
        format!("{why}; the key was written by something other than this store"),
    )
}

pub(super) fn parse_number(key: &str, kv: &KeyValue) -> Result<u64> {
    std::str::from_utf8(kv.value())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(key, "the value is not a number"))
}

pub(super) fn decode_event(seq: u64, json: &[u8]) -> Result<Event> {
    serde_json::from_slice(json)
        .map_err(|e| StoreError::Corrupt { seq, reason: format!("event is not valid JSON: {e}") })
}

pub(super) fn decode_snapshot(kv: &KeyValue) -> Result<(u64, serde_json::Value)> {
    let stored: StoredSnapshot = serde_json::from_slice(kv.value())
        .map_err(|e| malformed(&String::from_utf8_lossy(kv.key()), &format!("not a snapshot: {e}")))?;
    Ok((stored.seq, stored.state))
}
