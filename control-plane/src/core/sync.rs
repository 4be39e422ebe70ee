//! The sidecars' sync: a sidecar connecting for its push stream (as a proxy of the service its
//! token may act for), its ACK/NACK of a version, and every proxy's status.

use super::caller::{read_only_sidecar, Caller};
use super::error::{Error, Result};
use super::plane::ControlPlane;
use crate::names::namespace_or_default;
use crate::push::ProxyKey;
use pilotfish_api::wire::{Ack, AckQuery, ProxyList, PushQuery, Versioned};

/// A push stream the control plane accepted: which proxy, which of its connections, and the
/// version the sidecar already has.
pub struct Connection {
    pub key: ProxyKey,
    pub generation: u64,
    pub resume: u64,
}

impl ControlPlane {
    /// A sidecar connects as proxy `id` of `service.namespace`, holding `version` (0: nothing).
    pub async fn connect(&self, caller: &Caller, q: &PushQuery) -> Result<Connection> {
        if let Some(protocol) = q.protocol {
            pilotfish_api::wire::protocol::check(protocol)?;
        }
        let key = ProxyKey::new(&q.service, &q.namespace, &q.id).map_err(Error::BadRequest)?;
        caller.act_for(&key.service, &key.namespace)?;
        let generation = self.proxies.connected(&key, q.version).await?;
        Ok(Connection { key, generation, resume: q.version })
    }

    /// Records proxy `id`'s ACK (or NACK) under the service its push stream named. A join
    /// token's own service when left out, as sidecars one version back do (they predate it).
    pub async fn acknowledge(
        &self,
        caller: &Caller,
        id: &str,
        AckQuery { service, namespace }: AckQuery,
        ack: Ack,
    ) -> Result<()> {
        ack.check_protocol()?;
        let (service, namespace) =
            match (service, caller) {
                (Some(service), _) => (service, namespace_or_default(namespace)),
                (None, Caller::Service(t)) => {
                    (t.service.clone(), namespace.unwrap_or_else(|| t.namespace.clone()))
                }
                (None, Caller::ReadOnly(_)) => return Err(read_only_sidecar()),
                (None, Caller::Admin) => return Err(Error::BadRequest(
                    "service is required when the admin token ACKs: add ?service=NAME (the proxy's service)"
                        .into(),
                )),
            };
        let key = ProxyKey::new(&service, &namespace, id).map_err(Error::BadRequest)?;
        caller.act_for(&key.service, &key.namespace)?;
        if let Some(error) = &ack.error {
            tracing::warn!(proxy = %id, service = %key.service, version = ack.version, error = %error, "sidecar rejected a configuration");
        }
        if !self.proxies.acknowledged(&key, ack.version, ack.error).await {
            return Err(Error::NotFound(format!("proxy {id} of {}.{}", key.service, key.namespace)));
        }
        Ok(())
    }

    /// Every sidecar, the version it acknowledged, and whether that is the one in force.
    pub async fn proxy_list(&self) -> Result<ProxyList> {
        let head = self.refresh().await?;
        let items = self.proxies.list(head).await;
        Ok(ProxyList { version: head, items })
    }
}
