//! The evaluation order and matching of the plan's §4, case by case: a table of policies, a
//! caller and a call, and the decision with the policy that made it.

use pilotfish_api::authz::MeshDefault;

use super::{Authorizer, Call, Decision, DEFAULT_POLICY};

const WEB: &str = "spiffe://pilotfish.local/ns/default/sa/web";
const OPS: &str = "spiffe://pilotfish.local/ns/ops/sa/admin";
const OTHER: &str = "spiffe://pilotfish.local/ns/default/sa/other";

fn get(path: &str) -> Call<'_> {
    Call::Http { method: "GET", path, port: 80 }
}

/// An AuthorizationPolicy document for `users` (unless `spec` sets its own `targetRef`).
fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: pilotfish.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: Service, name: users}}\n  action: {action}\n  rules: {rules}\n"
    )
}

fn authorizer(docs: &str, default: MeshDefault) -> Authorizer {
    let resources = pilotfish_api::parse_stream("test", docs).unwrap_or_else(|e| panic!("{e}"));
    Authorizer::compile(&resources, default)
}

/// (case, policies, mesh default, peer, call, allowed, deciding policy)
type Case<'a> = (&'a str, String, MeshDefault, Option<&'a str>, Call<'a>, bool, &'a str);

fn check(cases: Vec<Case<'_>>) {
    for (case, docs, default, peer, call, allowed, policy) in cases {
        let authz = authorizer(&docs, default);
        let id = peer.map(|p| p.parse().unwrap());
        let decision = authz.evaluate("users.default", id.as_ref(), call);
        assert_eq!(decision, Decision { allowed, policy }, "{case}: {peer:?} {call:?}\n{docs}");
    }
}

#[test]
fn without_allow_policies_the_mesh_default_decides() {
    use MeshDefault::{Allow, Authenticated, Deny};
    let none = String::new;
    let deny_ops =
        || policy("deny-ops", "DENY", "[{from: [{identity: 'spiffe://pilotfish.local/ns/ops/*'}]}]");
    let d = DEFAULT_POLICY;
    check(vec![
        ("authenticated, meshed caller", none(), Authenticated, Some(WEB), get("/"), true, d),
        ("authenticated, plaintext caller", none(), Authenticated, None, get("/"), false, d),
        ("allow, plaintext caller", none(), Allow, None, get("/"), true, d),
        ("deny, meshed caller", none(), Deny, Some(WEB), get("/"), false, d),
        ("a DENY alone does not change the default", deny_ops(), Authenticated, Some(WEB), get("/"), true, d),
        ("the DENY matched", deny_ops(), Allow, Some(OPS), get("/"), false, "deny-ops"),
        ("plaintext under a DENY with from", deny_ops(), Allow, None, get("/"), true, d),
        (
            "another service's ALLOW policy",
            policy("allow-billing", "ALLOW", "[{}]").replace("name: users}", "name: billing}"),
            Deny,
            Some(WEB),
            get("/"),
            false,
            d,
        ),
    ]);
}

#[test]
fn a_matching_deny_wins_then_one_allow_must_match() {
    use MeshDefault::{Allow, Authenticated};
    let allow_web = || {
        policy(
            "allow-web",
            "ALLOW",
            &format!("[{{from: [{{identity: '{WEB}'}}], to: [{{paths: ['/api/*'], methods: [GET]}}]}}]"),
        )
    };
    let both =
        || format!("{}{}", allow_web(), policy("deny-admin", "DENY", "[{to: [{paths: ['/api/admin*']}]}]"));
    let post = Call::Http { method: "POST", path: "/api/users", port: 80 };
    let d = DEFAULT_POLICY;
    check(vec![
        ("from and to match", allow_web(), Authenticated, Some(WEB), get("/api/users"), true, "allow-web"),
        ("the method does not", allow_web(), Allow, Some(WEB), post, false, d),
        ("the path does not", allow_web(), Allow, Some(WEB), get("/api"), false, d),
        ("the caller does not", allow_web(), Allow, Some(OTHER), get("/api/users"), false, d),
        ("no caller identity", allow_web(), Allow, None, get("/api/users"), false, d),
        ("a DENY beats the ALLOW", both(), Allow, Some(WEB), get("/api/admin/x"), false, "deny-admin"),
        ("the DENY does not match", both(), Allow, Some(WEB), get("/api/users"), true, "allow-web"),
        (
            "an ALLOW without rules allows nothing",
            policy("nothing", "ALLOW", "[]"),
            Allow,
            Some(WEB),
            get("/"),
            false,
            d,
        ),
        (
            "an empty rule allows everything",
            policy("all", "ALLOW", "[{}]"),
            MeshDefault::Deny,
            None,
            get("/"),
            true,
            "all",
        ),
        ("a DENY without rules denies nothing", policy("no", "DENY", "[]"), Allow, None, get("/"), true, d),
    ]);
}

#[test]
fn patterns_lists_and_rules_combine_as_documented() {
    use MeshDefault::Allow;
    let rules = format!(
        "[{{from: [{{identity: '{OPS}'}}, {{identity: 'spiffe://pilotfish.local/ns/default/*'}}], to: [{{paths: [/exact]}}, {{ports: [8080]}}]}}, {{from: [{{identity: '*'}}], to: [{{methods: [DELETE]}}]}}]"
    );
    let p = || policy("p", "ALLOW", &rules);
    let d = DEFAULT_POLICY;
    let delete = Call::Http { method: "DELETE", path: "/x", port: 80 };
    let on_8080 = Call::Http { method: "PUT", path: "/x", port: 8080 };
    check(vec![
        ("namespace wildcard, exact path", p(), Allow, Some(OTHER), get("/exact"), true, "p"),
        ("exact identity, second `to` entry (port)", p(), Allow, Some(OPS), on_8080, true, "p"),
        ("exact path is not a prefix", p(), Allow, Some(WEB), get("/exact/more"), false, d),
        ("the query is not part of the path", p(), Allow, Some(WEB), get("/exact?x=1"), true, "p"),
        ("`*` is any identity, second rule", p(), Allow, Some("spiffe://x/ns/y/sa/z"), delete, true, "p"),
        ("`*` is not a plaintext caller", p(), Allow, None, delete, false, d),
        (
            "another namespace",
            p(),
            Allow,
            Some("spiffe://pilotfish.local/ns/prod/sa/web"),
            get("/exact"),
            false,
            d,
        ),
        (
            "a policy targets a service of another namespace",
            policy("p", "DENY", "[{}]")
                .replace("name: users}", "name: users, namespace: default}")
                .replace("{name: p}", "{name: p, namespace: shop}"),
            Allow,
            Some(WEB),
            get("/"),
            false,
            "p",
        ),
    ]);
}

#[test]
fn tcp_connections_never_match_http_only_allow_rules_and_deny_rules_drop_them() {
    use MeshDefault::Allow;
    let tcp = Call::Tcp { port: 80 };
    let allow =
        |to: &str| policy("allow", "ALLOW", &format!("[{{from: [{{identity: '{WEB}'}}], to: [{to}]}}]"));
    let deny = |to: &str| policy("deny", "DENY", &format!("[{{from: [{{identity: '{OPS}'}}], to: [{to}]}}]"));
    let d = DEFAULT_POLICY;
    check(vec![
        ("ALLOW with paths", allow("{paths: ['*']}"), Allow, Some(WEB), tcp, false, d),
        ("ALLOW with methods", allow("{methods: [GET], ports: [80]}"), Allow, Some(WEB), tcp, false, d),
        ("ALLOW by port", allow("{ports: [80]}"), Allow, Some(WEB), tcp, true, "allow"),
        ("ALLOW by another port", allow("{ports: [81]}"), Allow, Some(WEB), tcp, false, d),
        (
            "DENY with paths denies the caller's connections",
            deny("{paths: [/admin]}"),
            Allow,
            Some(OPS),
            tcp,
            false,
            "deny",
        ),
        ("... but not another caller's", deny("{paths: [/admin]}"), Allow, Some(WEB), tcp, true, d),
        (
            "DENY keeps its port condition",
            deny("{methods: [GET], ports: [9000]}"),
            Allow,
            Some(OPS),
            tcp,
            true,
            d,
        ),
    ]);
}

#[test]
fn a_path_the_app_may_read_otherwise_fails_closed() {
    use MeshDefault::Allow;
    let deny = || policy("deny-admin", "DENY", "[{to: [{paths: ['/admin*']}]}]");
    let allow = || policy("allow-public", "ALLOW", "[{to: [{paths: ['/public/*']}]}]");
    let d = DEFAULT_POLICY;
    let mut cases: Vec<Case<'_>> = Vec::new();
    for path in [
        "/./admin",
        "//admin",
        "/x/../admin",
        "/%61dmin",
        "/%252e%252e/admin",
        "/%2e/admin",
        "/x%2F..%2Fadmin",
        "/x\\..\\admin",
        "/admin;x",
    ] {
        cases.push(("DENY counts it matched", deny(), Allow, Some(WEB), get(path), false, "deny-admin"));
    }
    for path in ["/public/../admin", "/public/%2e%2e/admin", "/public//x", "/public/.", "/public/a;b"] {
        cases.push(("ALLOW counts it failed", allow(), Allow, Some(WEB), get(path), false, d));
    }
    cases.push((
        "an encoded space is no disguise",
        allow(),
        Allow,
        Some(WEB),
        get("/public/a%20b"),
        true,
        "allow-public",
    ));
    cases.push((
        "nor a dot inside a name",
        allow(),
        Allow,
        Some(WEB),
        get("/public/a.b/..c"),
        true,
        "allow-public",
    ));
    cases.push(("nor a stray %", deny(), Allow, Some(WEB), get("/x%zz"), true, d));
    check(cases);
}

#[test]
fn the_first_matching_policy_by_name_is_named() {
    let docs = format!(
        "{}{}{}",
        policy("b-deny", "DENY", "[{}]"),
        policy("a-deny", "DENY", "[{}]"),
        policy("c-allow", "ALLOW", "[{}]")
    );
    let authz = authorizer(&docs, MeshDefault::Allow);
    assert_eq!(
        authz.evaluate("users.default", Some(&WEB.parse().unwrap()), get("/")),
        Decision { allowed: false, policy: "a-deny" }
    );
}

#[test]
fn an_identity_is_matched_part_by_part_as_it_is_spelled() {
    use MeshDefault::Deny;
    let allow = |identity: &str| policy("p", "ALLOW", &format!("[{{from: [{{identity: '{identity}'}}]}}]"));
    let d = DEFAULT_POLICY;
    let caller = |ns: &str| format!("spiffe://pilotfish.local/ns/{ns}/sa/web");
    let (default, evil, other_td) = (
        caller("default"),
        caller("default-evil"),
        "spiffe://pilotfish.local.evil/ns/default/sa/web".to_owned(),
    );
    let namespace = "spiffe://pilotfish.local/ns/default/*";
    let domain = "spiffe://pilotfish.local/*";
    check(vec![
        ("exact", allow(WEB), Deny, Some(&default), get("/"), true, "p"),
        (
            "exact is not a prefix",
            allow(WEB),
            Deny,
            Some("spiffe://pilotfish.local/ns/default/sa/webx"),
            get("/"),
            false,
            d,
        ),
        ("namespace", allow(namespace), Deny, Some(&default), get("/"), true, "p"),
        ("a longer namespace", allow(namespace), Deny, Some(&evil), get("/"), false, d),
        ("trust domain", allow(domain), Deny, Some(OPS), get("/"), true, "p"),
        ("a longer trust domain", allow(domain), Deny, Some(&other_td), get("/"), false, d),
    ]);
}
