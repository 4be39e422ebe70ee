//! The sidecars' sync: a sidecar connecting for its push stream (as a proxy of the service its
//! token may act for), its ACK/NACK of a version, and every proxy's status.

use super::caller::{read_only_sidecar, Caller};
use super::error::{Error, Result};
use super::plane::ControlPlane;
use crate::names::namespace_or_default;
use crate::push::ProxyKey;
use std::time::{Duration, SystemTime};

use pilotfish_api::wire::{
    check_trusted_roots, Ack, AckQuery, CertificateReport, ProxyList, PushQuery, Versioned,
};

/// A push stream the control plane accepted: which proxy, which of its connections, the
/// version the sidecar already has, and the protocol it speaks.
pub struct Connection {
    pub key: ProxyKey,
    pub generation: u64,
    pub resume: u64,
    pub protocol: u32,
}

impl ControlPlane {
    /// A sidecar connects as proxy `id` of `service.namespace`, holding `version` (0: nothing).
    pub async fn connect(&self, caller: &Caller, q: &PushQuery) -> Result<Connection> {
        if let Some(protocol) = q.protocol {
            pilotfish_api::wire::protocol::check(protocol)?;
        }
        let key = ProxyKey::new(&q.service, &q.namespace, &q.id).map_err(Error::BadRequest)?;
        caller.act_for(&key.service, &key.namespace)?;
        let generation = self.proxies.connected(&key, q.version)?;
        Ok(Connection { key, generation, resume: q.version, protocol: q.protocol() })
    }

    /// Records proxy `id`'s ACK (or NACK) under the service its push stream named. A join
    /// token's own service when left out, as sidecars one version back do (they predate it).
    pub async fn acknowledge(&self, caller: &Caller, id: &str, q: AckQuery, ack: Ack) -> Result<()> {
        ack.check_protocol()?;
        if let Some(certificate) = &ack.certificate {
            certificate.check().map_err(Error::BadRequest)?;
        }
        if let Some(roots) = &ack.trusted_roots {
            check_trusted_roots(roots).map_err(Error::BadRequest)?;
        }
        let key = proxy_of(caller, id, q)?;
        if let Some(error) = &ack.error {
            tracing::warn!(proxy = %id, service = %key.service, version = ack.version, error = %error, "sidecar rejected a configuration");
        }
        if !self.proxies.acknowledged(&key, ack) {
            return Err(Error::NotFound(format!("proxy {id} of {}.{}", key.service, key.namespace)));
        }
        Ok(())
    }

    /// Every sidecar, the version it acknowledged, and whether that is the one in force.
    pub async fn proxy_list(&self) -> Result<ProxyList> {
        let head = self.refresh().await?;
        let mut items = self.proxies.list(head);
        let now = std::time::SystemTime::now();
        let view = self.ca.view();
        for item in items.iter_mut().filter(|p| p.connected) {
            item.certificate_warning = item
                .certificate
                .as_ref()
                .and_then(|c| certificate_warning(c, now, self.cert_ttl, |root| view.is_active(root)));
        }
        Ok(ProxyList { version: head, items })
    }
}

/// What needs attention in a connected sidecar's certificate: expired; within a fifth of the
/// certificate lifetime of expiry (sidecars renew at 65-75%, so it is not renewing); or chaining
/// to a root other than the one the CA issues under (a rotation waits for it).
pub(super) fn certificate_warning(
    cert: &CertificateReport,
    now: SystemTime,
    ttl: Duration,
    active: impl Fn(&str) -> bool,
) -> Option<String> {
    let Ok(not_after) = humantime::parse_rfc3339_weak(&cert.not_after) else {
        return Some(format!("its certificate's expiry {:?} cannot be read", cert.not_after));
    };
    match not_after.duration_since(now) {
        Err(_) => return Some(format!("its certificate expired at {}", cert.not_after)),
        Ok(left) if left < ttl / 5 => {
            return Some(format!("its certificate expires in {}s and was not renewed", left.as_secs()))
        }
        Ok(_) => {}
    }
    match &cert.root {
        Some(root) if !active(root) => Some(format!(
            "its certificate chains to root {}, not the one the CA issues under",
            &root[..root.len().min(16)]
        )),
        _ => None,
    }
}

/// The proxy `id` a sidecar's call (an ACK, a telemetry report) is from: of the service its
/// query names, or its join token's when it names none; the caller must act for it.
pub(super) fn proxy_of(
    caller: &Caller,
    id: &str,
    AckQuery { service, namespace }: AckQuery,
) -> Result<ProxyKey> {
    let (service, namespace) = match (service, caller) {
        (Some(service), _) => (service, namespace_or_default(namespace)),
        (None, Caller::Service(t)) => (t.service.clone(), namespace.unwrap_or_else(|| t.namespace.clone())),
        (None, Caller::ReadOnly(_)) => return Err(read_only_sidecar()),
        (None, Caller::Admin | Caller::Account(_)) => {
            return Err(Error::BadRequest(
                "service is required when the admin token or a service account speaks for a sidecar: add \
                 ?service=NAME (the proxy's service)"
                    .into(),
            ))
        }
    };
    let key = ProxyKey::new(&service, &namespace, id).map_err(Error::BadRequest)?;
    caller.act_for(&key.service, &key.namespace)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(not_after: &str, root: Option<&str>) -> CertificateReport {
        CertificateReport {
            identity: "spiffe://pilotfish.local/ns/default/sa/web".into(),
            not_after: not_after.into(),
            root: root.map(Into::into),
        }
    }

    #[test]
    fn a_certificate_is_flagged_when_expired_not_renewing_or_under_an_old_root() {
        let now = humantime::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
        let day = Duration::from_secs(24 * 3600);
        let (active, old) = ("a".repeat(64), "b".repeat(64));
        let warn = |not_after: &str, root: &str| {
            certificate_warning(&report(not_after, Some(root)), now, day, |r: &str| r == active)
        };
        assert_eq!(warn("2026-12-02T20:00:00Z", &active), None, "10 h of 24 left: renewing on time");
        let late = warn("2026-12-02T14:00:00Z", &active).unwrap();
        assert!(late.contains("expires in 14400s and was not renewed"), "{late}");
        let expired = warn("2026-12-02T09:59:59Z", &active).unwrap();
        assert!(expired.contains("expired at 2026-12-02T09:59:59Z"), "{expired}");
        let stale = warn("2026-12-02T20:00:00Z", &old).unwrap();
        assert!(stale.contains("chains to root bbbbbbbbbbbbbbbb"), "{stale}");
        let unreadable = certificate_warning(&report("soon", None), now, day, |_| true).unwrap();
        assert!(unreadable.contains("cannot be read"), "{unreadable}");
        assert_eq!(certificate_warning(&report("2026-12-03T00:00:00Z", None), now, day, |_| false), None);
    }
}
