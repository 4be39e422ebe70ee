//! One etcd request: bounded by a timeout, its failure mapped to a [`StoreError`] that says
//! whether trying again later can work.

use std::future::Future;
use std::time::Duration;

use crate::store::{Result, StoreError};

/// How long one etcd request may take before the store gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn within<T>(
    doing: &str,
    request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| etcd_error(doing, e)),
        Err(_) => Err(unanswered(doing)),
    }
}

pub(super) async fn within_result<T>(request: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| Err(unanswered("reading the head")))
}

/// An etcd client error: [`StoreError::Unavailable`] when etcd cannot be reached or has no
/// leader (the request can work later), [`StoreError::Database`] for anything else.
pub(super) fn etcd_error(doing: &str, e: etcd_client::Error) -> StoreError {
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

pub(super) fn unanswered(doing: &str) -> StoreError {
    StoreError::Unavailable {
        context: format!("etcd: {doing}"),
        cause: format!("etcd did not answer within {REQUEST_TIMEOUT:?}").into(),
    }
}

pub(super) fn database(
    doing: &str,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Database { context: format!("etcd: {doing}"), cause: cause.into() }
}
