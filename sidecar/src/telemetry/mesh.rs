//! Mesh mTLS, as exported: inbound connections refused mesh mTLS by reason, outbound dials
//! whose server proved another identity than the registry's, and mesh connections opened each
//! way (with HTTP/2 between sidecars, far fewer than requests).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::tls::FailureReason;

pub struct MeshMetrics {
    /// By [`FailureReason::ALL`] order.
    refused: [IntCounter; FailureReason::ALL.len()],
    pub(super) identity_mismatch: IntCounterVec,
    /// Mesh connections accepted and dialled.
    pub opened_inbound: IntCounter,
    pub opened_outbound: IntCounter,
}

impl MeshMetrics {
    pub(super) fn register(registry: &Registry) -> MeshMetrics {
        let refused = IntCounterVec::new(
            Opts::new(
                "pilotfish_inbound_tls_refused_total",
                "Inbound connections refused mesh mTLS (strict ports), or whose mesh handshake failed, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let identity_mismatch = IntCounterVec::new(
            Opts::new(
                "pilotfish_outbound_tls_identity_mismatch_total",
                "Mesh dials whose server proved another identity than the registry holds for the endpoint",
            ),
            &["service"],
        )
        .expect("valid metric");
        let opened = IntCounterVec::new(
            Opts::new("pilotfish_mesh_connections_opened_total", "Mesh mTLS connections established"),
            &["direction"],
        )
        .expect("valid metric");
        for family in [&refused, &identity_mismatch, &opened] {
            registry.register(Box::new(family.clone())).expect("metric names are unique");
        }
        MeshMetrics {
            refused: FailureReason::ALL.map(|r| refused.with_label_values(&[r.as_str()])),
            identity_mismatch,
            opened_inbound: opened.with_label_values(&["inbound"]),
            opened_outbound: opened.with_label_values(&["outbound"]),
        }
    }

    pub fn refused(&self, reason: FailureReason) {
        let i = FailureReason::ALL.iter().position(|r| *r == reason).expect("every reason is listed");
        self.refused[i].inc();
    }

    /// The mismatch counter of one service (resolved when a snapshot is built).
    pub fn identity_mismatch(&self, service: &str) -> IntCounter {
        self.identity_mismatch.with_label_values(&[service])
    }
}
