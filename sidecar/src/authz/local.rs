//! [`LocalAuthz`]: the authorization a sidecar enforces on calls into its own service — the
//! snapshot's [`Authorizer`] with that service's key and its denial counters
//! (`pilotfish_authz_denied_total{service,policy}`) resolved when the snapshot is built, so a
//! check is one map lookup, a walk of the service's rules and, on a denial, an atomic add.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use pilotfish_api::authz::MeshDefault;
use pilotfish_api::SpiffeId;
use prometheus::IntCounter;

use super::evaluate::{Authorizer, Decision, DEFAULT_POLICY};
use super::matcher::Call;
use crate::telemetry::access_log::{self, TcpRecord, Tls};
use crate::telemetry::metrics::{Direction, Metrics};

/// Calls into this sidecar's service, decided and counted.
pub struct LocalAuthz {
    authorizer: Authorizer,
    /// `name.namespace`: what this service's policies are filed under.
    service: Box<str>,
    /// `name`: the service label of the sidecar's inbound series and access-log lines.
    label: Box<str>,
    /// Denials by the policy that made them: each DENY policy of the service, and the default.
    denied: HashMap<Box<str>, IntCounter>,
}

impl LocalAuthz {
    /// Authorization of calls into `name` in `namespace`, denials counted with the service
    /// label `name` (as the sidecar's other inbound series).
    pub fn new(authorizer: Authorizer, name: &str, namespace: &str, metrics: &Metrics) -> Self {
        let service: Box<str> = format!("{name}.{namespace}").into();
        let denied = authorizer
            .deny_policies(&service)
            .chain([DEFAULT_POLICY])
            .map(|policy| (policy.into(), metrics.authz_denied(name, policy)))
            .collect();
        Self { authorizer, service, label: name.into(), denied }
    }

    /// The decision on `call` from `peer` (its verified identity; `None`: plaintext); a denial
    /// is counted.
    pub fn check(&self, peer: Option<&SpiffeId>, call: Call<'_>) -> Decision<'_> {
        let decision = self.authorizer.evaluate(&self.service, peer, call);
        if !decision.allowed {
            if let Some(counter) = self.denied.get(decision.policy) {
                counter.inc();
            }
        }
        decision
    }

    /// Whether an opaque connection from `client` (`peer`: its verified identity) to the app's
    /// `port` may reach the app. A denied one is counted and logged (to the access log too when
    /// `access_log`); the caller closes it without sending a byte to the app.
    pub fn admit_connection(
        &self,
        peer: Option<&Arc<SpiffeId>>,
        client: SocketAddr,
        port: u16,
        access_log: bool,
    ) -> bool {
        let id = peer.map(|id| &**id);
        let decision = self.check(id, Call::Tcp { port });
        if decision.allowed {
            return true;
        }
        let denial = self.explain(decision, id);
        tracing::debug!(%client, %denial, "inbound connection denied");
        if access_log {
            access_log::tcp(&TcpRecord {
                direction: Direction::Inbound.as_str(),
                client,
                upstream: None,
                service: Some(self.label.to_string()),
                duration_ms: 0.0,
                bytes_client_to_server: 0,
                bytes_server_to_client: 0,
                tls: Tls::of(peer.is_some()),
                peer: peer.cloned(),
                error: Some(format!("forbidden: {denial}")),
            });
        }
        false
    }

    /// Why `decision` (a denial of a call from `peer`) was made, for the caller to read.
    pub fn explain<'a>(&'a self, decision: Decision<'a>, peer: Option<&'a SpiffeId>) -> Denial<'a> {
        let reason = if decision.policy != DEFAULT_POLICY {
            Reason::Policy(decision.policy)
        } else if self.authorizer.has_allow_policies(&self.service) {
            Reason::NoAllowMatched
        } else {
            Reason::MeshDefault(self.authorizer.default())
        };
        Denial { service: &self.service, peer, reason }
    }
}

/// A denial as the caller reads it (`pilotfish-error: forbidden`, gRPC PERMISSION_DENIED, the
/// access log): the service, the caller, and what decided.
#[derive(Debug, Clone, Copy)]
pub struct Denial<'a> {
    service: &'a str,
    peer: Option<&'a SpiffeId>,
    reason: Reason<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Reason<'a> {
    Policy(&'a str),
    NoAllowMatched,
    MeshDefault(MeshDefault),
}

impl fmt::Display for Denial<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some(id) => write!(f, "{id} may not call {}: ", self.service)?,
            None => {
                write!(f, "a caller without a mesh identity (plaintext) may not call {}: ", self.service)?
            }
        }
        match self.reason {
            Reason::Policy(name) => write!(f, "AuthorizationPolicy {name} denies it"),
            Reason::NoAllowMatched => f.write_str("no ALLOW AuthorizationPolicy of the service matches this call"),
            Reason::MeshDefault(MeshDefault::Deny) => {
                f.write_str("the mesh default is deny; add an ALLOW AuthorizationPolicy for this caller")
            }
            Reason::MeshDefault(_) => f.write_str(
                "the mesh default (authenticated) admits only callers with a mesh identity: call through a meshed sidecar",
            ),
        }
    }
}

#[cfg(test)]
mod tests;
