//! The identity metrics: when this sidecar's certificate expires, how its renewals went, and
//! which roots it trusts. Registered with the other families in [`super::metrics::Metrics`].

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The identity families.
pub struct IdentityMetrics {
    expiry: Gauge,
    renewals: IntCounterVec,
    roots: IntGaugeVec,
}

impl IdentityMetrics {
    pub fn register(registry: &Registry) -> IdentityMetrics {
        let expiry = Gauge::new(
            "pilotfish_identity_cert_expiry_timestamp_seconds",
            "When this sidecar's mesh certificate expires (Unix time; 0 without one)",
        )
        .expect("valid metric");
        let renewals = IntCounterVec::new(
            Opts::new(
                "pilotfish_identity_cert_renewals_total",
                "Certificate renewals with the control plane's CA, by result (ok or error)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let roots = IntGaugeVec::new(
            Opts::new(
                "pilotfish_identity_root_info",
                "The roots this sidecar trusts (1 per root, by SHA-256 fingerprint of its DER)",
            ),
            &["fingerprint"],
        )
        .expect("valid metric");
        registry.register(Box::new(expiry.clone())).expect("metric names are unique");
        registry.register(Box::new(renewals.clone())).expect("metric names are unique");
        registry.register(Box::new(roots.clone())).expect("metric names are unique");
        // Both results are exported from the start, so a rate over them is defined at once.
        renewals.with_label_values(&["ok"]);
        renewals.with_label_values(&["error"]);
        IdentityMetrics { expiry, renewals, roots }
    }

    /// A certificate and bundle are in force.
    pub fn installed(&self, not_after: SystemTime, roots: &[String]) {
        let seconds = not_after.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.expiry.set(seconds);
        self.roots.reset();
        for root in roots {
            self.roots.with_label_values(&[root]).set(1);
        }
    }

    /// Counts a renewal attempt's outcome.
    pub fn renewed(&self, ok: bool) {
        self.renewals.with_label_values(&[if ok { "ok" } else { "error" }]).inc();
    }
}
