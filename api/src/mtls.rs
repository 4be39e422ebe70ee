//! Mesh mTLS on a sidecar's inbound port: whether connections from other sidecars must, may or
//! never arrive over mesh mTLS ([`MtlsMode`]), for the whole port or per app port
//! ([`MtlsSettings`]). Set in static mode by `Sidecar.spec.inbound.mtls`, and by a Service's
//! own `spec.mtls` for its sidecars (how managed mode sets it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::field::FieldError;

/// What the inbound port accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Mesh mTLS only: plaintext and any other TLS are refused (and counted).
    Strict,
    /// Mesh mTLS is terminated; plaintext and other TLS pass through to the app as before.
    Permissive,
    /// Never terminates mesh mTLS: every connection passes through as it came.
    Disabled,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Strict => "strict",
            MtlsMode::Permissive => "permissive",
            MtlsMode::Disabled => "disabled",
        }
    }
}

/// A mode for the port, and per app port exceptions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MtlsSettings {
    /// Every app port without an entry in `ports`. Omitted: the default (strict in managed
    /// mode; in static mode permissive once the sidecar has an identity, else disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
    /// Per app port (the port a connection is for, as `opaquePorts` counts them), e.g.
    /// `{8080: strict, 9090: permissive}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, MtlsMode>)]
    pub ports: BTreeMap<u16, MtlsMode>,
}

impl MtlsSettings {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.ports.is_empty()
    }

    /// The mode set for `port`, if any.
    pub fn mode_for(&self, port: u16) -> Option<MtlsMode> {
        self.ports.get(&port).copied().or(self.mode)
    }

    /// `field` is where these settings sit in their document (`spec.inbound.mtls`).
    pub(crate) fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.ports.contains_key(&0) {
            return Err(FieldError::new(format!("{field}.ports.0"), "a port must be 1-65535"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_entry_wins_over_the_mode() {
        let s: MtlsSettings =
            serde_json::from_str(r#"{"mode": "strict", "ports": {"9090": "permissive"}}"#).unwrap();
        assert_eq!(s.mode_for(9090), Some(MtlsMode::Permissive));
        assert_eq!(s.mode_for(8080), Some(MtlsMode::Strict));
        assert_eq!(MtlsSettings::default().mode_for(8080), None);
        let zero: MtlsSettings = serde_json::from_str(r#"{"ports": {"0": "strict"}}"#).unwrap();
        assert_eq!(zero.validate("spec.inbound.mtls").unwrap_err().field, "spec.inbound.mtls.ports.0");
        assert!(serde_json::from_str::<MtlsSettings>(r#"{"mode": "STRICT"}"#).is_err());
    }
}
