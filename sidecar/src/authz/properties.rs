//! Property tests of authorization: for any policies, caller and call (paths that may be read
//! otherwise, TCP, ports out of range, plaintext callers included), evaluation does not panic and
//! names a policy of the action it took or the default; and a DENY policy that matches a call
//! denies it whatever ALLOW policies say.

use std::collections::BTreeMap;

use pilotfish_api::authz::{
    AuthorizationAction, AuthorizationPolicySpec, AuthorizationRule, IdentityPattern, MeshDefault,
    OperationMatch, PathPattern, SourceMatch,
};
use pilotfish_api::document::Object;
use pilotfish_api::policy::TargetRef;
use pilotfish_api::{Metadata, Resource, SpiffeId};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use super::{Authorizer, Call, DEFAULT_POLICY};

const PEERS: &[&str] = &[
    "spiffe://pilotfish.local/ns/default/sa/web",
    "spiffe://pilotfish.local/ns/ops/sa/admin",
    "spiffe://other.domain/ns/default/sa/web",
];
const IDENTITIES: &[&str] = &[
    "*",
    "spiffe://pilotfish.local/*",
    "spiffe://pilotfish.local/ns/default/*",
    "spiffe://pilotfish.local/ns/default/sa/web",
    "spiffe://pilotfish.local/ns/ops/sa/admin",
];
const PATH_PATTERNS: &[&str] = &["*", "/", "/api", "/api/*", "/admin*"];
const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/x",
    "/admin",
    "/./admin",
    "/api/../admin",
    "/%61dmin",
    "/a%",
    "%",
    "*",
    "",
    "/api?x=1",
    "/ü",
];
const METHODS: &[&str] = &["GET", "POST", "DELETE"];
const PORTS: &[u16] = &[0, 80, 8080, 65535];
const SERVICE: &str = "users.default";

fn operation() -> impl Strategy<Value = OperationMatch> {
    let path = select(PATH_PATTERNS).prop_map(|p| PathPattern::try_from(p.to_owned()).unwrap());
    let method = select(METHODS).prop_map(str::to_owned);
    (vec(path, 0..3), vec(method, 0..3), vec(select(PORTS), 0..3))
        .prop_map(|(paths, methods, ports)| OperationMatch { paths, methods, ports })
}

fn rule() -> impl Strategy<Value = AuthorizationRule> {
    let source = select(IDENTITIES)
        .prop_map(|i| SourceMatch { identity: IdentityPattern::try_from(i.to_owned()).unwrap() });
    (vec(source, 0..3), vec(operation(), 0..3)).prop_map(|(from, to)| AuthorizationRule { from, to })
}

fn action() -> impl Strategy<Value = AuthorizationAction> {
    select(&[AuthorizationAction::Allow, AuthorizationAction::Deny][..])
}

/// Policies named `p0`, `p1`, ..., most for `users`, some for another service.
fn policies() -> impl Strategy<Value = Vec<Resource>> {
    let one = (action(), vec(rule(), 0..4), select(&["users", "billing"][..]));
    vec(one, 0..6).prop_map(|list| {
        list.into_iter()
            .enumerate()
            .map(|(i, (action, rules, target))| document(&format!("p{i}"), action, rules, target))
            .collect()
    })
}

fn document(
    name: &str,
    action: AuthorizationAction,
    rules: Vec<AuthorizationRule>,
    target: &str,
) -> Resource {
    let metadata = Metadata {
        name: name.to_owned(),
        namespace: "default".to_owned(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
    };
    let target_ref = TargetRef { group: None, kind: "Service".into(), name: target.into(), namespace: None };
    Resource::AuthorizationPolicy(Box::new(Object {
        metadata,
        spec: AuthorizationPolicySpec { target_ref, action, rules },
    }))
}

fn call() -> impl Strategy<Value = Call<'static>> {
    prop_oneof![
        3 => (select(METHODS), select(PATHS), select(PORTS))
            .prop_map(|(method, path, port)| Call::Http { method, path, port }),
        1 => select(PORTS).prop_map(|port| Call::Tcp { port }),
    ]
}

fn mesh_default() -> impl Strategy<Value = MeshDefault> {
    select(&[MeshDefault::Allow, MeshDefault::Deny, MeshDefault::Authenticated][..])
}

fn identity(peer: Option<&str>) -> Option<SpiffeId> {
    peer.map(|p| p.parse().unwrap())
}

/// The action of the `users` policy named `name`.
fn action_of(resources: &[Resource], name: &str) -> Option<AuthorizationAction> {
    resources.iter().find_map(|r| match r {
        Resource::AuthorizationPolicy(p) if p.metadata.name == name && p.spec.target_ref.name == "users" => {
            Some(p.spec.action)
        }
        _ => None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn evaluation_never_panics_and_names_what_decided(
        resources in policies(),
        default in mesh_default(),
        peer in option::of(select(PEERS)),
        call in call(),
    ) {
        let authz = Authorizer::compile(&resources, default);
        let decision = authz.evaluate(SERVICE, identity(peer).as_ref(), call);
        if decision.policy != DEFAULT_POLICY {
            let action = if decision.allowed { AuthorizationAction::Allow } else { AuthorizationAction::Deny };
            prop_assert_eq!(action_of(&resources, decision.policy), Some(action), "{:?}", decision);
        }
    }

    #[test]
    fn a_matching_deny_always_wins(
        mut resources in policies(),
        default in mesh_default(),
        peer in option::of(select(PEERS)),
        call in call(),
        method in select(METHODS),
    ) {
        // From exactly this caller (any caller when plaintext), to any path, by this method
        // (a TCP connection drops it), on this port.
        let from = peer.map(|id| SourceMatch { identity: IdentityPattern::try_from(id.to_owned()).unwrap() }).into_iter().collect();
        let (method, port) = match call {
            Call::Http { method, port, .. } => (method, port),
            Call::Tcp { port } => (method, port),
        };
        let to = vec![OperationMatch { paths: vec![PathPattern::try_from("*".to_owned()).unwrap()], methods: vec![method.to_owned()], ports: vec![port] }];
        resources.push(document("zz-deny", AuthorizationAction::Deny, vec![AuthorizationRule { from, to }], "users"));
        let authz = Authorizer::compile(&resources, default);
        let decision = authz.evaluate(SERVICE, identity(peer).as_ref(), call);
        prop_assert!(!decision.allowed, "{:?}", decision);
        prop_assert_eq!(action_of(&resources, decision.policy), Some(AuthorizationAction::Deny));
    }

    #[test]
    fn allow_policies_never_change_what_a_deny_policy_decided(
        resources in policies(),
        default in mesh_default(),
        peer in option::of(select(PEERS)),
        call in call(),
    ) {
        let denies: Vec<Resource> = resources
            .iter()
            .filter(|r| matches!(r, Resource::AuthorizationPolicy(p) if p.spec.action == AuthorizationAction::Deny))
            .cloned()
            .collect();
        let denies = Authorizer::compile(&denies, default);
        let peer = identity(peer);
        let alone = denies.evaluate(SERVICE, peer.as_ref(), call);
        if alone.policy != DEFAULT_POLICY {
            let all = Authorizer::compile(&resources, default);
            prop_assert_eq!(all.evaluate(SERVICE, peer.as_ref(), call), alone);
        }
    }
}
