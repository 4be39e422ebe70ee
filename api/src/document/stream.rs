//! The checks across the documents of one stream: no object twice, one Sidecar at most, and no
//! address or local port claimed by two Services.

use std::collections::{HashMap, HashSet};

use super::resource::Resource;
use crate::field::FieldError;

/// The first document that conflicts with one before it, by its index, and why.
pub(super) fn validate_stream(resources: &[Resource]) -> Result<(), (usize, FieldError)> {
    let mut seen = HashSet::new();
    let mut local_ports = HashMap::new();
    let mut addresses = HashMap::new();
    let mut sidecars = 0;
    for (i, r) in resources.iter().enumerate() {
        let m = r.metadata();
        if !seen.insert((r.kind(), m.namespace.as_str(), m.name.as_str())) {
            return Err((i, FieldError::new("metadata.name", "defined twice in this stream")));
        }
        match r {
            Resource::HttpRoute(_)
            | Resource::BackendPolicy(_)
            | Resource::RateLimitPolicy(_)
            | Resource::AuthorizationPolicy(_)
            | Resource::Rollout(_) => {}
            Resource::Sidecar(_) => {
                sidecars += 1;
                if sidecars > 1 {
                    return Err((i, FieldError::new("kind", "only one Sidecar document is allowed")));
                }
            }
            Resource::Service(s) => {
                for ip in &s.spec.addresses {
                    for p in &s.spec.ports {
                        let addr = std::net::SocketAddr::new(*ip, p.port);
                        if let Some(other) = addresses.insert(addr, r.describe()) {
                            return Err((
                                i,
                                FieldError::new(
                                    "spec.addresses",
                                    format!("{addr} already belongs to {other}"),
                                ),
                            ));
                        }
                    }
                }
                if let Some(port) = s.spec.local_port {
                    if let Some(other) = local_ports.insert(port, r.describe()) {
                        return Err((
                            i,
                            FieldError::new(
                                "spec.localPort",
                                format!("port {port} is already the localPort of {other}"),
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
