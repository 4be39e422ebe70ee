//! [`Authorizer`]: a snapshot's `AuthorizationPolicy` documents grouped by the service they
//! target, DENY and ALLOW apart, in name order; built with the snapshot, so deciding on a call is
//! one map lookup and a walk of that service's rules, without allocating.

use std::collections::HashMap;

use pilotfish_api::authz::{AuthorizationAction, AuthorizationRule, MeshDefault};
use pilotfish_api::{Resource, SpiffeId};

use super::matcher::{rules_match, Call};

/// What [`Decision::policy`] says when no policy decided: the mesh default applied, or ALLOW
/// policies target the service and none matched.
pub const DEFAULT_POLICY: &str = "default";

/// The decision on a call, and what made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    /// The name of the policy that matched, or [`DEFAULT_POLICY`].
    pub policy: &'a str,
}

/// The policies of one snapshot, by the service (`name.namespace`) they target.
#[derive(Debug, Default)]
pub struct Authorizer {
    services: HashMap<Box<str>, ServicePolicies>,
    default: MeshDefault,
}

#[derive(Debug, Default)]
struct ServicePolicies {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
}

#[derive(Debug)]
struct Policy {
    name: Box<str>,
    rules: Vec<AuthorizationRule>,
}

impl Authorizer {
    /// Groups the `AuthorizationPolicy` documents of `resources` (validated) by their service;
    /// `default` applies to services without ALLOW policies.
    pub fn compile(resources: &[Resource], default: MeshDefault) -> Self {
        let mut policies: Vec<_> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::AuthorizationPolicy(p) => Some(p),
                _ => None,
            })
            .collect();
        policies.sort_by(|a, b| {
            (&a.metadata.name, &a.metadata.namespace).cmp(&(&b.metadata.name, &b.metadata.namespace))
        });
        let mut services: HashMap<Box<str>, ServicePolicies> = HashMap::new();
        for p in policies {
            let target = &p.spec.target_ref;
            let namespace = target.namespace.as_deref().unwrap_or(&p.metadata.namespace);
            let service = services.entry(format!("{}.{namespace}", target.name).into()).or_default();
            let list = match p.spec.action {
                AuthorizationAction::Deny => &mut service.deny,
                AuthorizationAction::Allow => &mut service.allow,
            };
            list.push(Policy { name: p.metadata.name.as_str().into(), rules: p.spec.rules.clone() });
        }
        Self { services, default }
    }

    /// The decision on `call` to `service` (`name.namespace`) from `peer`: its verified
    /// identity, `None` for a plaintext caller.
    pub fn evaluate(&self, service: &str, peer: Option<&SpiffeId>, call: Call<'_>) -> Decision<'_> {
        let Some(policies) = self.services.get(service) else { return self.mesh_default(peer) };
        if let Some(policy) = first_match(&policies.deny, AuthorizationAction::Deny, peer, call) {
            return Decision { allowed: false, policy };
        }
        if policies.allow.is_empty() {
            return self.mesh_default(peer);
        }
        match first_match(&policies.allow, AuthorizationAction::Allow, peer, call) {
            Some(policy) => Decision { allowed: true, policy },
            None => Decision { allowed: false, policy: DEFAULT_POLICY },
        }
    }

    /// The mesh default, for services no ALLOW policy targets.
    pub fn default(&self) -> MeshDefault {
        self.default
    }

    /// Whether ALLOW policies target `service`: then a call none of them allows is denied,
    /// whatever the mesh default.
    pub fn has_allow_policies(&self, service: &str) -> bool {
        self.services.get(service).is_some_and(|p| !p.allow.is_empty())
    }

    /// The names of the DENY policies that target `service`: what a denial can be counted under,
    /// besides [`DEFAULT_POLICY`].
    pub fn deny_policies<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.services.get(service).into_iter().flat_map(|p| p.deny.iter().map(|policy| &*policy.name))
    }

    fn mesh_default(&self, peer: Option<&SpiffeId>) -> Decision<'_> {
        let allowed = match self.default {
            MeshDefault::Allow => true,
            MeshDefault::Deny => false,
            MeshDefault::Authenticated => peer.is_some(),
        };
        Decision { allowed, policy: DEFAULT_POLICY }
    }
}

/// The name of the first of `policies` whose rules match.
fn first_match<'p>(
    policies: &'p [Policy],
    action: AuthorizationAction,
    peer: Option<&SpiffeId>,
    call: Call<'_>,
) -> Option<&'p str> {
    policies.iter().find(|p| rules_match(&p.rules, action, peer, call)).map(|p| &*p.name)
}
