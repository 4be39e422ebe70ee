//! Route tables: precedence, matching, traffic split and filters as compiled.

use super::*;

fn table(yaml_rules: &str) -> RouteTable {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: users}}]\n  rules:\n{yaml_rules}"
    );
    let resources = pilotfish_api::parse_stream("t", &text).unwrap();
    let pilotfish_api::Resource::HttpRoute(route) = &resources[0] else { panic!() };
    let source = RouteSource { name: "default/r".into(), id: 1, spec: &route.spec, rate_limit: None };
    RouteTable::compile(&Arc::from("users.default"), "default", &[source])
}

fn pick(t: &RouteTable, method: &str, uri: &str, headers: &[(&str, &str)]) -> Option<String> {
    let uri: http::Uri = uri.parse().unwrap();
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    let method: Method = method.parse().unwrap();
    t.select(&method, uri.path(), uri.query(), &h).map(|s| s.rule.backends[0].0.to_string())
}

#[test]
fn precedence_follows_the_gateway_api() {
    let t = table(concat!(
        "  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: catchall}]\n",
        "  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: api}]\n",
        "  - matches: [{path: {type: PathPrefix, value: /api/users}}]\n    backendRefs: [{name: users-prefix}]\n",
        "  - matches: [{path: {type: Exact, value: /api/users}}]\n    backendRefs: [{name: users-exact}]\n",
        "  - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]\n    backendRefs: [{name: api-post}]\n",
        "  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-canary, value: 'yes'}]}]\n    backendRefs: [{name: canary}]\n",
        "  - matches: [{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}]\n    backendRefs: [{name: versioned}]\n",
        "  - matches: [{path: {type: PathPrefix, value: /search}, queryParams: [{name: q, value: pilotfish}]}]\n    backendRefs: [{name: search}]\n",
    ));
    assert_eq!(pick(&t, "GET", "/api/users", &[]).unwrap(), "users-exact.default");
    assert_eq!(pick(&t, "GET", "/api/users/42", &[]).unwrap(), "users-prefix.default");
    assert_eq!(pick(&t, "GET", "/api/usersx", &[]).unwrap(), "api.default", "prefixes match whole segments");
    assert_eq!(pick(&t, "POST", "/api/orders", &[]).unwrap(), "api-post.default");
    assert_eq!(pick(&t, "GET", "/api/orders", &[("X-Canary", "yes")]).unwrap(), "canary.default");
    assert_eq!(pick(&t, "GET", "/api/orders", &[("x-canary", "no")]).unwrap(), "api.default");
    assert_eq!(pick(&t, "GET", "/v2/things", &[]).unwrap(), "versioned.default");
    assert_eq!(
        pick(&t, "GET", "/x/v2/things", &[]).unwrap(),
        "catchall.default",
        "regexes match the whole path"
    );
    assert_eq!(pick(&t, "GET", "/search?a=1&q=pilotfish", &[]).unwrap(), "search.default");
    assert_eq!(pick(&t, "GET", "/search?q=other", &[]).unwrap(), "catchall.default");
}

#[test]
fn no_match_is_none() {
    let t = table("  - matches: [{path: {type: Exact, value: /only}}]\n");
    assert!(pick(&t, "GET", "/other", &[]).is_none());
    assert_eq!(pick(&t, "GET", "/only", &[]).unwrap(), "users.default", "no backendRefs: the parent");
}

#[test]
fn weighted_split_follows_weights() {
    let t = table("  - backendRefs: [{name: stable, weight: 90}, {name: canary, weight: 10}]\n");
    let rule = t.select(&Method::GET, "/", None, &HeaderMap::new()).unwrap().rule;
    fastrand::seed(7);
    let canary = (0..10_000).filter(|_| &**rule.pick_backend() == "canary.default").count();
    assert!((800..1200).contains(&canary), "{canary} of 10000 went to the canary");
}

#[test]
fn path_modifiers() {
    let full = PathModifier::ReplaceFullPath { replace_full_path: "/new".into() };
    assert_eq!(modify_path("/old/x", &full, Some("/old")), "/new");
    let prefix = PathModifier::ReplacePrefixMatch { replace_prefix_match: "/v2".into() };
    assert_eq!(modify_path("/api/users", &prefix, Some("/api")), "/v2/users");
    assert_eq!(modify_path("/api", &prefix, Some("/api")), "/v2");
    let strip = PathModifier::ReplacePrefixMatch { replace_prefix_match: "/".into() };
    assert_eq!(modify_path("/api/users", &strip, Some("/api")), "/users");
    assert_eq!(modify_path("/api", &strip, Some("/api/")), "/");
}

#[test]
fn header_modifiers() {
    let mods = HeaderMods::compile(&HeaderModifier {
        set: vec![pilotfish_api::route::Header { name: "x-set".into(), value: "1".into() }],
        add: vec![pilotfish_api::route::Header { name: "x-add".into(), value: "2".into() }],
        remove: vec!["x-gone".into()],
    });
    let mut h = HeaderMap::new();
    h.insert("x-set", HeaderValue::from_static("0"));
    h.insert("x-add", HeaderValue::from_static("1"));
    h.insert("x-gone", HeaderValue::from_static("1"));
    mods.apply(&mut h);
    assert_eq!(h["x-set"], "1");
    assert_eq!(h.get_all("x-add").iter().count(), 2);
    assert!(!h.contains_key("x-gone"));
}
