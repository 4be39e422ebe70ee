//! The registry: service instances registered under a lease, renewed by heartbeats, removed by
//! deregistration or when the lease lapses.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::caller::Caller;
use super::error::{Error, Result};
use super::identity::registered_identity;
use super::leases::Lease;
use super::plane::ControlPlane;
use crate::model::{endpoint_aggregate, kind, EndpointRecord};
use crate::names::{check_service, namespace_or_default};
use crate::store::{AppendRequest, StoreError};
use pilotfish_api::wire::{
    Deregistered, EndpointList, EndpointStatus, Heartbeat, Registered, Registration, Versioned,
};

/// A lease's length when the registration names none.
const DEFAULT_TTL: u64 = 30;

impl ControlPlane {
    /// Registers an instance (the admin, or the service's own join token); `key` makes a retry
    /// answer with the registration it first made. A join token's instance gets the token's
    /// identity (a registration naming another is refused); the admin names any, or none.
    pub async fn register(
        &self,
        caller: &Caller,
        reg: Registration,
        key: Option<&str>,
    ) -> Result<Registered> {
        reg.check_protocol()?;
        let namespace = namespace_or_default(reg.namespace);
        let actor = caller.act_for(&reg.service, &namespace)?;
        let identity = registered_identity(caller, &self.trust_domain, reg.identity)?;
        let ttl = reg.ttl_seconds.unwrap_or(DEFAULT_TTL);
        if !(1..=3600).contains(&ttl) {
            return Err(Error::BadRequest("ttlSeconds must be between 1 and 3600".into()));
        }
        check_service(&reg.service, &namespace).map_err(Error::BadRequest)?;
        // Names are DNS labels (no dots), so `service.namespace-address` is unambiguous.
        let id = format!("{}.{namespace}-{}", reg.service, reg.address).replace([':', '[', ']'], "-");
        let record = EndpointRecord {
            id: id.clone(),
            service: reg.service,
            namespace,
            address: reg.address,
            identity,
            labels: reg.labels,
            ttl_seconds: ttl,
        };
        let data = serde_json::to_value(&record).expect("records serialize");
        let aggregate = endpoint_aggregate(&id);
        let mut request = AppendRequest::new(&aggregate, kind::ENDPOINT_REGISTERED, data.clone(), actor);
        if let Some(key) = key {
            request = request.idempotency_key(format!("register:{key}"));
        }
        let mut leases = self.leases.lock().await;
        let event = self.store.append(request).await?;
        // A replayed key answers with the registration it first made, which must be this one: a
        // key reused for another registration would otherwise answer with an instance that is
        // not the one asked for (and may be gone since).
        if event.data != data {
            return Err(Error::KeyReused("registration"));
        }
        // A replay may answer with a registration since superseded (deregistered, registered
        // again): its lease would carry an old version, whose expiry conflicts and so never
        // removes the instance. Only the aggregate's latest registration sets the lease.
        let latest = match key {
            Some(_) => match self.store.aggregate_version(&aggregate).await {
                Ok(version) => version == event.version,
                // The registration is committed: without a lease it would never expire here.
                Err(error) => {
                    tracing::warn!(%aggregate, %error, "could not tell a replay from the latest registration; leasing it");
                    true
                }
            },
            None => true,
        };
        if latest {
            let lease_ttl = Duration::from_secs(ttl);
            let lease = Lease {
                deadline: Instant::now() + lease_ttl,
                ttl: lease_ttl,
                version: event.version,
                owned: true,
            };
            leases.insert(id.clone(), lease);
        }
        drop(leases);
        self.settle().await;
        Ok(Registered { id, ttl_seconds: ttl, seq: event.seq })
    }

    /// Renews an instance's lease.
    pub async fn heartbeat(&self, caller: &Caller, id: &str) -> Result<Heartbeat> {
        self.refresh().await?;
        self.authorize_endpoint(caller, id).await?;
        // The read model decides whether the instance is still registered (another replica may
        // have expired or removed it); the lease here only tracks when it was last heard from.
        let registered =
            self.state.read().await.endpoints.get(id).map(|e| Duration::from_secs(e.ttl_seconds));
        let mut leases = self.leases.lock().await;
        let Some(ttl) = registered else {
            leases.remove(id);
            return Err(Error::NotFound(format!("endpoint {id} (its lease lapsed: register again)")));
        };
        let version = self.store.aggregate_version(&endpoint_aggregate(id)).await?;
        let lease = leases.entry(id.to_owned()).or_insert(Lease {
            deadline: Instant::now(),
            ttl,
            version,
            owned: true,
        });
        lease.deadline = Instant::now() + lease.ttl;
        lease.owned = true;
        Ok(Heartbeat { id: id.to_owned(), ttl_seconds: lease.ttl.as_secs() })
    }

    /// Removes an instance now (rather than when its lease lapses).
    pub async fn deregister(&self, caller: &Caller, id: &str) -> Result<Deregistered> {
        self.refresh().await?;
        let actor = self.authorize_endpoint(caller, id).await?;
        let mut leases = self.leases.lock().await;
        let Some(lease) = leases.remove(id) else {
            return Err(Error::NotFound(format!("endpoint {id}")));
        };
        let request = AppendRequest::new(
            endpoint_aggregate(id),
            kind::ENDPOINT_DEREGISTERED,
            json!({ "id": id }),
            actor,
        );
        let event = match self.store.append(request).await {
            Ok(event) => event,
            Err(e) => {
                leases.insert(id.to_owned(), lease);
                return Err(e.into());
            }
        };
        drop(leases);
        self.settle().await;
        Ok(Deregistered { deregistered: id.to_owned(), seq: event.seq })
    }

    /// Registered instances, of one service (`name` or `name.namespace`) or all, with the time
    /// left on their leases.
    pub async fn endpoints(&self, service: Option<&str>) -> Result<EndpointList> {
        self.refresh().await?;
        let state = self.state.read().await;
        let leases = self.leases.lock().await;
        let now = Instant::now();
        let items = state
            .endpoints
            .values()
            .filter(|e| {
                service.is_none_or(|s| s == e.service || s == format!("{}.{}", e.service, e.namespace))
            })
            .map(|e| EndpointStatus {
                endpoint: e.clone(),
                lease_remaining_seconds: leases
                    .get(&e.id)
                    .map(|l| l.deadline.saturating_duration_since(now).as_secs_f64()),
            })
            .collect();
        Ok(EndpointList { items })
    }

    /// Records the expiry of every lease of this replica's that lapsed.
    pub async fn expire_leases(&self) {
        let now = Instant::now();
        for (id, version) in self.leases.lapsed(now).await {
            let req = AppendRequest::new(
                endpoint_aggregate(&id),
                kind::ENDPOINT_EXPIRED,
                json!({ "id": id }),
                "lease-expiry",
            )
            .expect_version(version);
            let done = match self.store.append(req).await {
                Ok(_) => {
                    tracing::info!(endpoint = %id, "lease expired; endpoint removed");
                    true
                }
                // Re-registered or deregistered meanwhile: that newer event decides.
                Err(StoreError::Conflict { .. }) => true,
                Err(e) => {
                    tracing::error!(endpoint = %id, error = %e, "cannot record a lease expiry; will retry");
                    false
                }
            };
            if done {
                self.leases.forget_lapsed(&id, version, now).await;
            }
        }
        self.settle().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Settings;
    use crate::store::testing::log_of;

    #[tokio::test]
    async fn a_replayed_registration_leaves_the_newer_lease_to_expire_the_instance() {
        let (_dir, store) = log_of(0).await;
        let cp =
            ControlPlane::open(store, Settings::new("admin".into()), crate::ca::testing::ca()).await.unwrap();
        let reg = || Registration::new("web", "default", "127.0.0.1:9001".parse().unwrap(), 1);
        let first = cp.register(&Caller::Admin, reg(), Some("k1")).await.unwrap();
        cp.deregister(&Caller::Admin, &first.id).await.unwrap();
        cp.register(&Caller::Admin, reg(), None).await.unwrap();
        // The client retries its first request: it is answered, and changes nothing.
        let replay = cp.register(&Caller::Admin, reg(), Some("k1")).await.unwrap();
        assert_eq!(replay.seq, first.seq);
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(2)).await;
        cp.expire_leases().await;
        let left = cp.endpoints(None).await.unwrap().items;
        assert!(left.is_empty(), "the lapsed instance is still registered: {left:?}");
    }
}
