//! Active health checks (`BackendPolicy.healthCheck`): each endpoint of a service that has one
//! is probed with `GET path` every interval; `unhealthyThreshold` consecutive failures take it
//! out of the balancer, `healthyThreshold` consecutive successes put it back. Passive checks are
//! the circuit breaker's job. Probes stop when the snapshot they belong to is replaced.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use pilotfish_api::policy::HealthCheck;
use tokio_util::sync::CancellationToken;

use crate::snapshot::Snapshot;
use crate::transport;
use crate::upstream::endpoint::EndpointRt;

/// Starts the probes of every service in `snap` that asks for them.
pub fn spawn(snap: &Snapshot) {
    for service in snap.built_services() {
        let Some(check) = &service.policy.health_check else { continue };
        for endpoint in &service.endpoints {
            let probe = Probe { endpoint: endpoint.clone(), check: check.clone(), host: service.key.clone() };
            tokio::spawn(probe.run(snap.retired.clone()));
        }
    }
}

struct Probe {
    endpoint: Arc<EndpointRt>,
    check: HealthCheck,
    host: Arc<str>,
}

impl Probe {
    async fn run(self, stop: CancellationToken) {
        let Some(guard) = &self.endpoint.guard else { return };
        let mut tick = tokio::time::interval(self.check.interval.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut passed, mut failed) = (0u32, 0u32);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let ok = tokio::select! {
                _ = stop.cancelled() => return,
                ok = self.probe() => ok,
            };
            if ok {
                (passed, failed) = (passed.saturating_add(1), 0);
            } else {
                (passed, failed) = (0, failed.saturating_add(1));
            }
            let healthy = guard.healthy.load(Ordering::Relaxed);
            if !healthy && passed >= self.check.healthy_threshold {
                guard.healthy.store(true, Ordering::Relaxed);
                tracing::info!(service = %self.host, endpoint = %self.endpoint.addr, "endpoint healthy again");
            } else if healthy && failed >= self.check.unhealthy_threshold {
                guard.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(service = %self.host, endpoint = %self.endpoint.addr, "endpoint unhealthy: no traffic until it passes its health check");
            }
        }
    }

    /// One `GET path` on a fresh connection; healthy means a 2xx within the timeout.
    async fn probe(&self) -> bool {
        let timeout = self.check.timeout.get();
        let attempt = async {
            let stream = transport::connect(self.endpoint.addr, timeout).await.ok()?;
            let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
            tokio::spawn(conn);
            let uri: Uri = self.check.path.parse().ok()?;
            let req = Request::get(uri)
                .header(http::header::HOST, &*self.host)
                .header(http::header::USER_AGENT, "pilotfish-health-check")
                .body(Empty::<Bytes>::new())
                .ok()?;
            let res = sender.send_request(req).await.ok()?;
            Some(res.status().is_success())
        };
        matches!(tokio::time::timeout(timeout.max(Duration::from_millis(1)), attempt).await, Ok(Some(true)))
    }
}
