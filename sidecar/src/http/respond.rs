//! Handing an endpoint's response back downstream: accounting, hop-by-hop headers, a tunnel for
//! a protocol switch, and the body wrapped so that its end releases the connection and writes
//! the access-log line.

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::{Completion, GrpcCall, ProxyBody};
use super::context::{PendingRecord, RequestContext};
use super::headers;
use super::pool::Reusable;
use crate::listener::accept::ConnSlot;
use crate::tcp::splice;
use crate::telemetry::access_log::Tls;
use crate::telemetry::metrics::TargetMetrics;
use crate::upstream::endpoint::EndpointRt;

/// What goes back downstream with a response: the request's access-log line and, for a
/// protocol switch, the client's half of the upgrade.
pub struct Downstream {
    pub record: PendingRecord,
    pub on_upgrade: Option<OnUpgrade>,
}

/// An endpoint's answer: the response, and the HTTP/1.1 connection to release once its body
/// has been read.
pub type Answer = (Response<Incoming>, Option<Reusable>);

/// Sends `answer` from `endpoint` downstream, accounted to `metrics` (its service's, or the
/// app's).
pub fn respond(
    cx: &RequestContext<'_>,
    (mut res, conn): Answer,
    endpoint: &EndpointRt,
    metrics: &TargetMetrics,
    downstream: Downstream,
) -> Response<ProxyBody> {
    let elapsed = cx.started.elapsed();
    metrics.duration.observe(elapsed.as_secs_f64());
    endpoint.metrics.record(res.status());
    let call = cx.edge(&endpoint.metrics).and_then(|edge| {
        // Only a gRPC call's headers can carry a grpc-status worth the lookup; a call whose
        // headers carry none ends with its status in the trailers, counted then.
        let status = res.status().as_u16();
        if cx.grpc && status < 500 && !res.headers().contains_key("grpc-status") {
            return Some(GrpcCall { edge: edge.clone(), started: cx.started });
        }
        edge.record(status, cx.grpc.then(|| res.headers()), elapsed);
        None
    });
    let Downstream { mut record, on_upgrade } = downstream;
    let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(res.headers_mut(), switching && on_upgrade.is_some());
    let conn = if switching {
        if let Some(downstream) = on_upgrade {
            let upstream = hyper::upgrade::on(&mut res);
            let tunnel = Tunnel {
                slot: cx.conn.slot.clone(),
                metrics: metrics.clone(),
                idle: cx.snap.sidecar.timeouts.idle.get(),
            };
            cx.conn.shared.tracker.spawn(tunnel.run(downstream, upstream));
        }
        None
    } else {
        conn
    };
    if let Some(r) = record.as_mut() {
        r.0.status = res.status().as_u16();
        r.0.upstream = Some(endpoint.addr);
        if let Some(server) = endpoint.conns.identity() {
            r.0.tls = Tls::Mtls;
            r.0.server = Some(server.clone());
        }
    }
    res.map(|body| ProxyBody::upstream(body, Completion::new(conn, record, call)))
}

/// An upgraded connection (e.g. WebSocket) relayed byte for byte; it keeps the downstream
/// connection's listener slot, and closes after the idle timeout like opaque TCP.
struct Tunnel {
    slot: Arc<ConnSlot>,
    metrics: TargetMetrics,
    idle: Duration,
}

impl Tunnel {
    async fn run(self, downstream: OnUpgrade, upstream: OnUpgrade) {
        match tokio::try_join!(downstream, upstream) {
            Ok((down, up)) => {
                let counters = (&self.metrics.tcp_client_to_server, &self.metrics.tcp_server_to_client);
                let (_, result) =
                    splice::splice(TokioIo::new(down), TokioIo::new(up), self.idle, counters).await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
        }
        drop(self.slot);
    }
}
