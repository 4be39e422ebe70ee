//! The local app as the inbound path sees it: one endpoint, its metrics, and the counters its
//! connections are pooled under.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use pilotfish_api::sidecar::InboundSpec;

use super::endpoint::EndpointRt;
use crate::telemetry::metrics::{EndpointMetrics, TargetMetrics};

pub struct InboundRt {
    pub spec: InboundSpec,
    pub app: Arc<EndpointRt>,
    pub metrics: TargetMetrics,
    pub local: EndpointMetrics,
    /// Connections to the app (unbounded: the app's own limits apply).
    pub connections: Arc<AtomicUsize>,
    pub pending: AtomicUsize,
}
