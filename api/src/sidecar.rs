//! The `Sidecar` kind: one sidecar's own listeners, timeouts and limits (static mode).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::authz::AuthorizationSettings;
use crate::field::FieldError;
use crate::mtls::MtlsSettings;
use crate::{bounds, Duration};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct SidecarSpec {
    /// Admin listener: `/live`, `/ready`, `/metrics`, `/config`, `/shutdown`.
    #[serde(default = "default_admin")]
    #[schema(value_type = String)]
    pub admin: SocketAddr,
    /// Traffic from other sidecars to the local app. Omitted: no inbound listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundSpec>,
    /// Traffic from the local app to other services.
    #[serde(default)]
    pub outbound: OutboundSpec,
    /// One JSON line per request or TCP connection on stdout.
    #[serde(default)]
    pub access_log: bool,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    /// Who may call this sidecar's service when no ALLOW policy targets it (static mode).
    #[serde(default)]
    pub authorization: AuthorizationSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundSpec {
    #[serde(default = "default_inbound")]
    #[schema(value_type = String, default = default_inbound)]
    pub listen: SocketAddr,
    /// Where the local app listens.
    #[schema(value_type = String, example = "127.0.0.1:8080")]
    pub app: SocketAddr,
    /// App ports that carry opaque TCP (e.g. server-speaks-first protocols): no protocol detection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = ports)]
    pub opaque_ports: Vec<u16>,
    /// Whether connections from other sidecars must (`strict`), may (`permissive`) or never
    /// (`disabled`) arrive over mesh mTLS, for every app port or per port.
    #[serde(default, skip_serializing_if = "MtlsSettings::is_empty")]
    pub mtls: MtlsSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct OutboundSpec {
    #[serde(default = "default_outbound")]
    #[schema(value_type = String)]
    pub listen: SocketAddr,
    /// How long a mesh mTLS connection to another sidecar is used for new requests: a renewed
    /// certificate or a changed trust bundle takes effect on connections opened after it.
    #[serde(default = "default_mesh_max_age")]
    pub mesh_max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct Timeouts {
    /// Establishing a TCP connection to an endpoint or the app.
    #[serde(default = "default_connect")]
    pub connect: Duration,
    /// An opaque TCP connection with no bytes either way for this long is closed.
    #[serde(default = "default_idle")]
    pub idle: Duration,
    /// How long to wait for the first bytes of a connection to detect its protocol; on expiry the
    /// connection is treated as opaque TCP.
    #[serde(default = "default_detect")]
    pub detect: Duration,
    /// Bound on reading an HTTP/1 request's headers (slow clients).
    #[serde(default = "default_header_read")]
    pub header_read: Duration,
    /// Bound on reading a request body kept for retries (up to the policy's `maxBodyBytes`),
    /// when the route's own timeout is not shorter: a stalled body gets 408 instead of holding
    /// its place under `maxRequests`.
    #[serde(default = "default_request_body")]
    pub request_body: Duration,
    /// Grace period for in-flight work on shutdown.
    #[serde(default = "default_drain")]
    pub drain: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct Limits {
    /// Concurrent connections per listener; further connections wait in the accept backlog.
    #[serde(default = "default_max_connections")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_connections: usize,
    /// Bytes of HTTP/1 request head (request line and headers); over it → 431.
    #[serde(default = "default_max_header_bytes")]
    #[schema(minimum = 1024, maximum = 1_048_576)]
    pub max_header_bytes: usize,
    /// Number of headers in one request; over it → 431.
    #[serde(default = "default_max_headers")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub max_headers: usize,
    /// Concurrent HTTP/2 streams one client connection may open.
    #[serde(default = "default_max_concurrent_streams")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_concurrent_streams: u32,
}

fn ports() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let port = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(65535));
    ArrayBuilder::new().items(port).build()
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}
fn default_inbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 15006))
}
fn default_outbound() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15001))
}
fn default_mesh_max_age() -> Duration {
    Duration::from_secs(3600)
}
/// Covers a SYN retransmit (1 s, then 3 s) to an endpoint whose listen backlog overflowed, as
/// Envoy's default does.
fn default_connect() -> Duration {
    Duration::from_secs(5)
}
fn default_idle() -> Duration {
    Duration::from_secs(3600)
}
fn default_detect() -> Duration {
    Duration::from_secs(10)
}
fn default_header_read() -> Duration {
    Duration::from_secs(10)
}
fn default_request_body() -> Duration {
    Duration::from_secs(30)
}
fn default_drain() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_max_concurrent_streams() -> u32 {
    1000
}

impl Default for SidecarSpec {
    fn default() -> Self {
        Self {
            admin: default_admin(),
            inbound: None,
            outbound: OutboundSpec::default(),
            access_log: false,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            authorization: AuthorizationSettings::default(),
        }
    }
}

impl Default for OutboundSpec {
    fn default() -> Self {
        Self { listen: default_outbound(), mesh_max_age: default_mesh_max_age() }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: default_connect(),
            idle: default_idle(),
            detect: default_detect(),
            header_read: default_header_read(),
            request_body: default_request_body(),
            drain: default_drain(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_concurrent_streams: default_max_concurrent_streams(),
        }
    }
}

impl SidecarSpec {
    /// Checks the values serde cannot; run again after command-line overrides are applied.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(inbound) = &self.inbound {
            if inbound.app.port() == 0 {
                return Err(FieldError::new("spec.inbound.app", "needs a port (IP:PORT)"));
            }
            if let Some(i) = inbound.opaque_ports.iter().position(|p| *p == 0) {
                return Err(FieldError::new(format!("spec.inbound.opaquePorts[{i}]"), "must be 1-65535"));
            }
            inbound.mtls.validate("spec.inbound.mtls")?;
        }
        bounds::duration(
            "spec.outbound.meshMaxAge",
            self.outbound.mesh_max_age,
            Duration::from_secs(1),
            bounds::MAX_DURATION,
        )?;
        for (field, d) in [
            ("spec.timeouts.connect", self.timeouts.connect),
            ("spec.timeouts.detect", self.timeouts.detect),
            ("spec.timeouts.headerRead", self.timeouts.header_read),
            ("spec.timeouts.requestBody", self.timeouts.request_body),
        ] {
            bounds::duration(field, d, bounds::MIN_DURATION, bounds::MAX_DURATION)?;
        }
        bounds::duration("spec.timeouts.idle", self.timeouts.idle, bounds::MIN_DURATION, bounds::MAX_IDLE)?;
        bounds::duration(
            "spec.timeouts.drain",
            self.timeouts.drain,
            Duration::default(),
            bounds::MAX_DURATION,
        )?;
        let limits = &self.limits;
        bounds::count("spec.limits.maxConnections", limits.max_connections as u64, 1, bounds::MAX_COUNT)?;
        let header_bytes = limits.max_header_bytes as u64;
        bounds::count("spec.limits.maxHeaderBytes", header_bytes, 1024, bounds::MAX_HEADER_BYTES)?;
        bounds::count("spec.limits.maxHeaders", limits.max_headers as u64, 1, bounds::MAX_HEADERS)?;
        let streams = u64::from(limits.max_concurrent_streams);
        bounds::count("spec.limits.maxConcurrentStreams", streams, 1, bounds::MAX_COUNT)?;
        Ok(())
    }
}
