//! The HTTP/2 side of an endpoint's pool: one shared, multiplexed connection, opened by one
//! request at a time while the others wait for it (or fail with it).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{Connect, EndpointConns, H2Failure, Reusable, SendError, UpstreamError, Version};
use crate::http::request_body::RequestBody;
use crate::resilience::limit::{Claim, Limit, OwnedClaim};

impl EndpointConns {
    pub(super) async fn send_h2(
        &self,
        mut req: Box<Request<RequestBody>>,
        connect: &Connect<'_>,
    ) -> Result<(Response<Incoming>, Option<Reusable>), SendError> {
        let max_age = self.max_age(connect.mesh);
        if let Some(mut sender) = self.shared_h2(max_age) {
            match sender.try_send_request(*req).await {
                Ok(res) => return Ok((res, None)),
                Err(e) => req = Box::new(self.unsent(e)?),
            }
        }
        // Boxed: opening a connection is rare, and its handshake future would otherwise make
        // every request's future (moved through each stage of the path) kilobytes larger.
        let mut sender = match Box::pin(self.connect_h2(connect)).await {
            Ok(sender) => sender,
            Err(error) => return Err(SendError { error, unsent: Some(req) }),
        };
        let res = sender.try_send_request(*req).await.map_err(|mut e| match e.take_message() {
            Some(back) => SendError::unsent(UpstreamError::ClosedBeforeSend { addr: self.addr }, back),
            None => SendError {
                error: UpstreamError::Request { addr: self.addr, source: e.into_error() },
                unsent: None,
            },
        })?;
        Ok((res, None))
    }

    /// The shared connection, unless it closed or is past `max_age` (then requests in flight
    /// finish on it, and it closes once the last of them drops it).
    fn shared_h2(&self, max_age: Option<Duration>) -> Option<http2::SendRequest<RequestBody>> {
        let h2 = self.h2.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let young = |opened: &Instant| max_age.is_none_or(|age| opened.elapsed() < age);
        h2.as_ref().filter(|(s, opened)| !s.is_closed() && young(opened)).map(|(s, _)| s.clone())
    }

    async fn connect_h2(
        &self,
        connect: &Connect<'_>,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        // Waiting for the connection counts as pending, so the queue behind it is bounded too.
        let _pending = Claim::take(connect.pending, connect.max_pending)
            .ok_or(UpstreamError::Overflow(Limit::MaxPendingRequests))?;
        // One connection attempt at a time: concurrent requests wait for it and share it, or
        // fail with it.
        let queued_at = self.h2_attempts.load(Ordering::Acquire);
        let _connecting = self.h2_connecting.lock().await;
        if let Some(sender) = self.shared_h2(self.max_age(connect.mesh)) {
            return Ok(sender);
        }
        if let Some((attempt, why)) = &*self.h2_failed.lock().unwrap_or_else(|p| p.into_inner()) {
            if *attempt >= queued_at {
                return Err(match why.clone() {
                    H2Failure::Overflow(limit) => UpstreamError::Overflow(limit),
                    H2Failure::Connect(reason) => UpstreamError::QueuedBehind { addr: self.addr, reason },
                });
            }
        }
        let attempt = self.h2_attempts.fetch_add(1, Ordering::AcqRel);
        let connected = self.open_h2(connect).await;
        let mut failed = self.h2_failed.lock().unwrap_or_else(|p| p.into_inner());
        *failed = connected.as_ref().err().map(|e| match e {
            UpstreamError::Overflow(limit) => (attempt, H2Failure::Overflow(*limit)),
            e => (attempt, H2Failure::Connect(e.to_string())),
        });
        connected
    }

    async fn open_h2(&self, connect: &Connect<'_>) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        let open = OwnedClaim::take(connect.open, connect.max_open)
            .ok_or(UpstreamError::Overflow(Limit::MaxConnections))?;
        let stream = self.open_stream(connect.timeout, connect.mesh, Version::Http2).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr: self.addr, source })?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "HTTP/2 connection to endpoint ended");
            }
            drop(open);
        });
        *self.h2.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((sender.clone(), Instant::now()));
        Ok(sender)
    }
}
