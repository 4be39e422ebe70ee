//! The proxies: what the control plane knows of each sidecar's sync (connected, the version it
//! was sent and acknowledged, its last NACK). Sidecars ACK or NACK every version; the proxies
//! API shows who is current and why anyone is not.
//!
//! A sidecar names itself when it connects, so a proxy is known by its service *and* that name
//! ([`ProxyKey`]): the service comes from what the caller's token may act for, so one service's
//! token can only ever create or touch its own service's proxies, whatever id it claims. (Refusing
//! an id already taken by another service would let any token squat the ids another service's
//! sidecars are going to use, e.g. `web.default-1` in a container, and lock them out.) A proxy
//! that disconnects stays listed, as disconnected, for the retention period, then is forgotten,
//! so restarted sidecars (each a new id) do not pile up. A service has at most a set number of
//! connected proxies, so one token cannot open push streams without end under made-up ids.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pilotfish_api::wire::{Ack, Nack, ProxyStatus};
use tokio::time::Instant;

use crate::names::check_service;

/// How long a disconnected proxy stays listed by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(15 * 60);
/// Connected proxies one service may have by default. A join token names any number of ids,
/// so without a cap one token could hold push streams (a task and a socket each) without end.
pub const DEFAULT_MAX_PER_SERVICE: usize = 10_000;

/// A connection refused because its service already has as many connected proxies as allowed.
#[derive(Debug, thiserror::Error)]
#[error(
    "service {service}.{namespace} already has {max} connected proxies, the most a service may have: \
     stop unused sidecars, or raise --max-proxies-per-service on the control plane"
)]
pub struct TooManyProxies {
    pub service: String,
    pub namespace: String,
    pub max: usize,
}

/// A proxy: the id its sidecar chose, under the service its token may act for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProxyKey {
    pub service: String,
    pub namespace: String,
    pub id: String,
}

impl ProxyKey {
    /// A key from a request; the id is 1-253 visible characters, the names are DNS labels.
    pub fn new(service: &str, namespace: &str, id: &str) -> Result<Self, String> {
        check_service(service, namespace)?;
        if id.is_empty() || id.len() > 253 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("id must be 1-253 visible ASCII characters".into());
        }
        Ok(Self { service: service.to_owned(), namespace: namespace.to_owned(), id: id.to_owned() })
    }
}

/// A proxy's status as the API shows it, and what the control plane keeps beside it.
struct Proxy {
    /// `current` is left false here: it depends on the head, known when the list is read.
    status: ProxyStatus,
    /// When its last connection ended (it is forgotten a retention period later).
    gone_since: Option<Instant>,
    /// Which connection of this sidecar the status belongs to.
    generation: u64,
}

pub struct Proxies {
    by_key: Mutex<HashMap<ProxyKey, Proxy>>,
    generations: std::sync::atomic::AtomicU64,
    /// How long a disconnected proxy stays listed.
    retention: Duration,
    /// Connected proxies one service may have.
    max_per_service: usize,
    /// Snapshots sent, over all sidecars.
    pub pushes: std::sync::atomic::AtomicU64,
}

impl Proxies {
    pub fn new(retention: Duration, max_per_service: usize) -> Self {
        Self {
            by_key: Mutex::default(),
            generations: Default::default(),
            retention,
            max_per_service,
            pushes: Default::default(),
        }
    }

    /// The table. Held only for a lookup or an update, never across an await: every push
    /// stream and every ACK takes it, so with thousands of sidecars a blocking lock costs far
    /// less than queueing each of them as a waiting task.
    fn table(&self) -> MutexGuard<'_, HashMap<ProxyKey, Proxy>> {
        // A panic elsewhere under this lock leaves the table as consistent as each
        // single-step update made it: keep serving rather than fail every push and ACK.
        self.by_key.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a (re)connection; returns its generation. `resume` is the version the sidecar
    /// says it already has (acknowledged earlier, perhaps to another replica). A reconnection
    /// replaces its proxy's old connection, so it is never refused.
    pub fn connected(&self, key: &ProxyKey, resume: u64) -> Result<u64, TooManyProxies> {
        let mut by_key = self.table();
        let others = by_key
            .iter()
            .filter(|(k, p)| {
                p.status.connected && *k != key && k.service == key.service && k.namespace == key.namespace
            })
            .count();
        if others >= self.max_per_service {
            return Err(TooManyProxies {
                service: key.service.clone(),
                namespace: key.namespace.clone(),
                max: self.max_per_service,
            });
        }
        let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let status = ProxyStatus {
            id: key.id.clone(),
            service: key.service.clone(),
            namespace: key.namespace.clone(),
            connected: true,
            connected_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            disconnected_at: None,
            sent_version: resume,
            acked_version: resume,
            current: false,
            last_nack: None,
            certificate: None,
            certificate_warning: None,
            trusted_roots: None,
        };
        let previous = by_key.insert(key.clone(), Proxy { status, gone_since: None, generation });
        // A reconnecting sidecar keeps what it had acknowledged.
        if let (Some(old), Some(new)) = (previous, by_key.get_mut(key)) {
            new.status.acked_version = new.status.acked_version.max(old.status.acked_version);
            new.status.last_nack = old.status.last_nack;
            new.status.certificate = old.status.certificate;
            new.status.trusted_roots = old.status.trusted_roots;
        }
        Ok(generation)
    }

    pub fn sent(&self, key: &ProxyKey, version: u64) {
        self.pushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = self.table().get_mut(key) {
            p.status.sent_version = version;
        }
    }

    /// Marks a connection gone, unless a newer connection of the same sidecar replaced it.
    pub fn disconnected(&self, key: &ProxyKey, generation: u64) {
        if let Some(p) = self.table().get_mut(key).filter(|p| p.generation == generation) {
            p.status.connected = false;
            p.status.disconnected_at =
                Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
            p.gone_since = Some(Instant::now());
        }
    }

    /// Records an ACK (`error: None`) or a NACK, and the certificate and trusted roots it
    /// reports (what it leaves out stays as last reported); false if the proxy is unknown.
    pub fn acknowledged(&self, key: &ProxyKey, ack: Ack) -> bool {
        let mut by_key = self.table();
        let Some(p) = by_key.get_mut(key) else { return false };
        let version = ack.version;
        match ack.error {
            None => p.status.acked_version = p.status.acked_version.max(version),
            Some(error) => p.status.last_nack = Some(Nack { version, error }),
        }
        if ack.certificate.is_some() {
            p.status.certificate = ack.certificate;
        }
        if ack.trusted_roots.is_some() {
            p.status.trusted_roots = ack.trusted_roots;
        }
        true
    }

    /// Forgets the proxies that have been disconnected for longer than the retention period.
    pub fn forget_disconnected(&self) {
        let now = Instant::now();
        self.table()
            .retain(|_, p| p.gone_since.is_none_or(|since| now.duration_since(since) < self.retention));
    }

    /// Every proxy's status, `current` when it acknowledged `head`.
    pub fn list(&self, head: u64) -> Vec<ProxyStatus> {
        let statuses = self.table().values().map(|p| p.status.clone()).collect::<Vec<_>>();
        let mut all: Vec<_> =
            statuses.into_iter().map(|p| ProxyStatus { current: p.acked_version == head, ..p }).collect();
        all.sort_by(|a, b| (&a.id, &a.service, &a.namespace).cmp(&(&b.id, &b.service, &b.namespace)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(service: &str, id: &str) -> ProxyKey {
        ProxyKey::new(service, "default", id).unwrap()
    }

    #[test]
    fn the_same_id_under_two_services_is_two_proxies() {
        let proxies = Proxies::new(DEFAULT_RETENTION, DEFAULT_MAX_PER_SERVICE);
        let (real, claimed) = (key("users", "users.default-1"), key("evil", "users.default-1"));
        proxies.connected(&real, 0).unwrap();
        proxies.connected(&claimed, 0).unwrap();
        assert!(proxies.acknowledged(&real, Ack::accepted(7)), "the real sidecar's ACK still lands");
        let all = proxies.list(0);
        assert_eq!(all.len(), 2);
        let users = all.iter().find(|p| p.service == "users").unwrap();
        assert_eq!((users.connected, users.acked_version), (true, 7));
    }

    #[test]
    fn the_trusted_roots_reported_last_are_kept_across_reconnection() {
        let proxies = Proxies::new(DEFAULT_RETENTION, DEFAULT_MAX_PER_SERVICE);
        let web = key("web", "web-1");
        let (old, new) = ("a".repeat(64), "b".repeat(64));
        let generation = proxies.connected(&web, 0).unwrap();
        assert!(!proxies.acknowledged(&key("web", "web-2"), Ack::accepted(1)), "unknown proxy");
        assert!(proxies.acknowledged(&web, Ack::accepted(1).with_trusted_roots(Some(vec![old.clone()]))));
        assert_eq!(proxies.list(1)[0].trusted_roots, Some(vec![old.clone()]));
        // A NACK reports them too; an ACK without them (an older sidecar) leaves them be.
        let both = vec![old.clone(), new.clone()];
        let nack = Ack::refused(2, "bad".into()).with_trusted_roots(Some(both.clone()));
        assert!(proxies.acknowledged(&web, nack));
        assert!(proxies.acknowledged(&web, Ack::accepted(1)));
        let listed = &proxies.list(2)[0];
        assert_eq!((listed.acked_version, listed.trusted_roots.as_ref()), (1, Some(&both)));
        proxies.disconnected(&web, generation);
        proxies.connected(&web, 1).unwrap();
        let listed = &proxies.list(2)[0];
        assert!(listed.connected);
        assert_eq!(listed.trusted_roots, Some(both));
    }

    #[tokio::test(start_paused = true)]
    async fn a_disconnected_proxy_is_listed_until_the_retention_period_ends() {
        let proxies = Proxies::new(Duration::from_secs(60), DEFAULT_MAX_PER_SERVICE);
        let (gone, staying) = (key("web", "web.default-1"), key("web", "web.default-2"));
        let generation = proxies.connected(&gone, 0).unwrap();
        proxies.connected(&staying, 0).unwrap();
        proxies.disconnected(&gone, generation);
        tokio::time::advance(Duration::from_secs(59)).await;
        proxies.forget_disconnected();
        let listed = proxies.list(0);
        assert_eq!(listed.len(), 2);
        assert!(!listed[0].connected && listed[0].disconnected_at.is_some(), "{listed:?}");
        tokio::time::advance(Duration::from_secs(2)).await;
        proxies.forget_disconnected();
        let listed = proxies.list(0);
        assert_eq!(listed.len(), 1, "forgotten after the retention period");
        assert_eq!(listed[0].id, "web.default-2", "a connected proxy is never forgotten");
        // A sidecar that reconnects within the period is listed as connected again.
        let generation = proxies.connected(&gone, 3).unwrap();
        tokio::time::advance(Duration::from_secs(120)).await;
        proxies.forget_disconnected();
        assert_eq!(proxies.list(0).len(), 2);
        proxies.disconnected(&gone, generation - 1);
        assert!(proxies.list(0).iter().all(|p| p.connected), "an older connection's end is ignored");
    }

    #[test]
    fn a_service_has_at_most_its_cap_of_connected_proxies() {
        let proxies = Proxies::new(DEFAULT_RETENTION, 2);
        let first = proxies.connected(&key("web", "web-1"), 0).unwrap();
        proxies.connected(&key("web", "web-2"), 0).unwrap();
        let refused = proxies.connected(&key("web", "web-3"), 0).unwrap_err();
        assert!(refused.to_string().contains("web.default already has 2 connected proxies"), "{refused}");
        // Other services have caps of their own, and a reconnection replaces its old connection.
        proxies.connected(&key("users", "users-1"), 0).unwrap();
        proxies.connected(&key("web", "web-2"), 0).unwrap();
        // A disconnected proxy, though still listed, leaves room.
        proxies.disconnected(&key("web", "web-1"), first);
        proxies.connected(&key("web", "web-3"), 0).unwrap();
        assert_eq!(proxies.list(0).len(), 4);
    }

    #[test]
    fn proxy_ids_are_bounded_and_names_are_labels() {
        assert!(ProxyKey::new("web", "default", "web.default-42").is_ok());
        assert!(ProxyKey::new("web", "default", "").is_err());
        assert!(ProxyKey::new("web", "default", &"x".repeat(254)).is_err());
        assert!(ProxyKey::new("web", "default", "a b").is_err());
        assert!(ProxyKey::new("Web!", "default", "x").is_err());
    }
}
