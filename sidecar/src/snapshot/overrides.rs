//! Command-line settings that take precedence over the `Sidecar` document, and how they apply.

use std::net::SocketAddr;

use pilotfish_api::mtls::MtlsMode;
use pilotfish_api::sidecar::InboundSpec;
use pilotfish_api::SidecarSpec;

/// Command-line settings that take precedence over the file's `Sidecar` document.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub admin: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    pub app: Option<SocketAddr>,
    /// Replaces the inbound listener's opaque ports.
    pub opaque_ports: Option<Vec<u16>>,
    pub drain: Option<std::time::Duration>,
    pub mesh_max_age: Option<pilotfish_api::Duration>,
    /// The inbound mTLS mode of ports the configuration leaves unset (managed mode: strict).
    pub inbound_mtls: Option<MtlsMode>,
}

/// Overrides that cannot apply to the `Sidecar` document they were given with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OverrideConflict(String);

impl Overrides {
    /// `sidecar` with these overrides applied, still valid.
    pub fn apply(&self, sidecar: &mut SidecarSpec) -> Result<(), OverrideConflict> {
        if let Some(admin) = self.admin {
            sidecar.admin = admin;
        }
        if let Some(outbound) = self.outbound {
            sidecar.outbound.listen = outbound;
        }
        match (&mut sidecar.inbound, self.app) {
            (Some(inbound), Some(app)) => inbound.app = app,
            (None, Some(app)) => {
                sidecar.inbound = Some(InboundSpec {
                    listen: SocketAddr::from(([0, 0, 0, 0], 15006)),
                    app,
                    opaque_ports: Vec::new(),
                    mtls: Default::default(),
                })
            }
            _ => {}
        }
        if let Some(listen) = self.inbound {
            match &mut sidecar.inbound {
                Some(inbound) => inbound.listen = listen,
                None => {
                    return Err(OverrideConflict(
                        "--inbound needs an app to forward to: pass --app ADDR or set spec.inbound.app in the Sidecar document".into(),
                    ))
                }
            }
        }
        if let Some(ports) = &self.opaque_ports {
            match &mut sidecar.inbound {
                Some(inbound) => inbound.opaque_ports = ports.clone(),
                None => {
                    return Err(OverrideConflict(
                        "--opaque-ports applies to the inbound listener: pass --app ADDR or set spec.inbound"
                            .into(),
                    ))
                }
            }
        }
        if let Some(drain) = self.drain {
            sidecar.timeouts.drain = pilotfish_api::Duration::from_millis(drain.as_millis() as u64);
        }
        if let Some(age) = self.mesh_max_age {
            sidecar.outbound.mesh_max_age = age;
        }
        sidecar.validate().map_err(|e| {
            OverrideConflict(format!("with the command-line overrides applied, {}: {}", e.field, e.reason))
        })
    }
}
