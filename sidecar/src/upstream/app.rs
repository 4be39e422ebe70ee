//! The local app as the inbound path sees it: one endpoint, its metrics, the counters its
//! connections are pooled under, and the mesh mTLS mode of each of its ports.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use pilotfish_api::mtls::{MtlsMode, MtlsSettings};
use pilotfish_api::sidecar::InboundSpec;

use super::endpoint::EndpointRt;
use crate::resilience::ratelimit::policy::RateLimit;
use crate::telemetry::metrics::{EndpointMetrics, TargetMetrics};

pub struct InboundRt {
    pub spec: InboundSpec,
    pub app: Arc<EndpointRt>,
    pub metrics: TargetMetrics,
    pub local: EndpointMetrics,
    /// Connections to the app (unbounded: the app's own limits apply).
    pub connections: Arc<AtomicUsize>,
    pub pending: AtomicUsize,
    pub mtls: InboundMtls,
    /// The `{peer: true}` RateLimitPolicy on the sidecar's own Service: each caller's budget,
    /// keyed by the identity mTLS verified (its address when plaintext).
    pub rate_limit: Option<Arc<RateLimit>>,
}

/// The mesh mTLS mode of each app port, from the `Sidecar` document, the sidecar's own
/// `Service`, and the mode's default.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMtls {
    /// What the configuration sets: the `Sidecar`'s `spec.inbound.mtls`, field by field over
    /// its own Service's `spec.mtls`.
    settings: MtlsSettings,
    /// For ports the configuration leaves unset: strict in managed mode; `None` in static mode.
    default: Option<MtlsMode>,
}

impl InboundMtls {
    pub fn new(sidecar: &MtlsSettings, service: Option<&MtlsSettings>, default: Option<MtlsMode>) -> Self {
        let mut settings = service.cloned().unwrap_or_default();
        settings.ports.extend(sidecar.ports.iter().map(|(port, mode)| (*port, *mode)));
        settings.mode = sidecar.mode.or(settings.mode);
        InboundMtls { settings, default }
    }

    /// The mode for connections to app `port`, given whether this sidecar has an identity now.
    /// Unset in static mode: permissive with an identity, disabled without one. (A configured
    /// permissive port cannot terminate without an identity either, so it passes everything
    /// through; a strict one refuses everything until the identity arrives.)
    pub fn mode(&self, port: u16, has_identity: bool) -> MtlsMode {
        match self.settings.mode_for(port).or(self.default) {
            Some(MtlsMode::Permissive) | None if !has_identity => MtlsMode::Disabled,
            Some(mode) => mode,
            None => MtlsMode::Permissive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MtlsMode::*;

    fn settings(mode: Option<MtlsMode>, ports: &[(u16, MtlsMode)]) -> MtlsSettings {
        MtlsSettings { mode, ports: ports.iter().copied().collect() }
    }

    #[test]
    fn the_sidecar_wins_over_the_service_and_both_over_the_default() {
        let service = settings(Some(Permissive), &[(9090, Disabled), (7070, Permissive)]);
        let sidecar = settings(None, &[(7070, Strict)]);
        let m = InboundMtls::new(&sidecar, Some(&service), Some(Strict));
        assert_eq!(
            [m.mode(8080, true), m.mode(9090, true), m.mode(7070, true)],
            [Permissive, Disabled, Strict]
        );
        let m = InboundMtls::new(&settings(Some(Strict), &[]), Some(&service), None);
        assert_eq!(m.mode(8080, true), Strict);
        // Managed mode: strict unless configured, and still strict without an identity.
        let m = InboundMtls::new(&MtlsSettings::default(), None, Some(Strict));
        assert_eq!((m.mode(8080, true), m.mode(8080, false)), (Strict, Strict));
    }

    #[test]
    fn static_mode_defaults_to_permissive_with_an_identity_and_disabled_without() {
        let m = InboundMtls::new(&MtlsSettings::default(), None, None);
        assert_eq!((m.mode(8080, true), m.mode(8080, false)), (Permissive, Disabled));
        let m = InboundMtls::new(&settings(Some(Permissive), &[]), None, None);
        assert_eq!(m.mode(8080, false), Disabled);
    }
}
