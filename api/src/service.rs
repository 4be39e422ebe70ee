//! The `Service` kind: a service other apps call — its ports, the virtual addresses apps may dial
//! in transparent mode, and (in static mode) its endpoints inline.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::field::FieldError;
use crate::identity::SpiffeId;
use crate::mtls::MtlsSettings;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// The ports the service is called on, each with its application protocol.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Virtual IPs the app may dial (a Kubernetes ClusterIP). In transparent mode a connection to
    /// `ADDRESS:PORT`, for one of these addresses and one of `ports`, is routed to this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>, example = json!(["10.96.0.20"]))]
    pub addresses: Vec<IpAddr>,
    /// The instances serving it (static mode; the control plane's registry fills these otherwise).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Optional local listener port: whatever arrives on `127.0.0.1:localPort` goes to this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub local_port: Option<u16>,
    /// Mesh mTLS on the inbound port of this service's own sidecars (how managed mode sets it;
    /// a static sidecar's `spec.inbound.mtls` takes precedence).
    #[serde(default, skip_serializing_if = "MtlsSettings::is_empty")]
    pub mtls: MtlsSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// Omitted: the sidecar detects HTTP/1, HTTP/2 or opaque TCP per connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The application protocol declared for a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `IP:PORT` of the instance (its sidecar's inbound listener when it has one).
    #[schema(value_type = String, example = "10.0.0.7:8080")]
    pub address: SocketAddr,
    /// The instance's mesh identity (`spiffe://<trust-domain>/ns/<namespace>/sa/<account>`):
    /// when set, callers' sidecars reach it over mesh mTLS and require exactly this identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ServiceSpec {
    /// The protocol declared for `port`; with no port given, the protocol when only one is declared.
    pub fn protocol(&self, port: Option<u16>) -> Option<Protocol> {
        match port {
            Some(port) => self.ports.iter().find(|p| p.port == port)?.protocol,
            None if self.ports.len() == 1 => self.ports[0].protocol,
            None => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        let mut seen = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.port == 0 {
                return Err(FieldError::new(format!("spec.ports[{i}].port"), "must be 1-65535"));
            }
            if !seen.insert(p.port) {
                return Err(FieldError::new(
                    format!("spec.ports[{i}].port"),
                    format!("port {} is declared twice", p.port),
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            if e.address.port() == 0 {
                return Err(FieldError::new(
                    format!("spec.endpoints[{i}].address"),
                    "needs a port (IP:PORT, port 1-65535)",
                ));
            }
            if e.address.ip().is_unspecified() {
                return Err(FieldError::new(
                    format!("spec.endpoints[{i}].address"),
                    "0.0.0.0 / :: is not an address a connection can be made to",
                ));
            }
            if let Some(Err(e)) = e.identity.as_deref().map(str::parse::<SpiffeId>) {
                return Err(FieldError::new(format!("spec.endpoints[{i}].identity"), e.to_string()));
            }
            if !seen.insert(e.address) {
                return Err(FieldError::new(
                    format!("spec.endpoints[{i}].address"),
                    format!("endpoint {} is listed twice", e.address),
                ));
            }
        }
        self.mtls.validate("spec.mtls")?;
        if self.local_port == Some(0) {
            return Err(FieldError::new("spec.localPort", "must be 1-65535"));
        }
        if !self.addresses.is_empty() && self.ports.is_empty() {
            return Err(FieldError::new(
                "spec.ports",
                "a service with `addresses` needs at least one port to match ADDRESS:PORT",
            ));
        }
        Ok(())
    }
}
