//! `AuthorizationPolicy` through the control plane: applied and listed with the CLI, carried on
//! the push stream like every kind, and a bad one refused with the field that is wrong.

use std::process::Command;

use pilotfish_api::wire::PushLine;
use pilotfish_api::{parse_with, Resource, UnknownFields};
use serde_json::Value;

use super::{service, table_cells, ControlPlane, TOKEN};

const POLICY: &str = "---\napiVersion: pilotfish.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: users}\nspec:\n  targetRef: {kind: Service, name: users}\n  action: ALLOW\n  rules:\n  - from: [{identity: \"spiffe://pilotfish.local/ns/default/sa/web\"}, {identity: \"spiffe://pilotfish.local/ns/ops/*\"}]\n    to: [{paths: [\"/api/*\"], methods: [GET], ports: [80]}]\n";

#[test]
fn an_authorization_policy_is_applied_listed_pushed_and_a_bad_one_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, format!("{}{POLICY}", service("users", 9001))).unwrap();
    let out = cp.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("AuthorizationPolicy/default/users configured (version 1, seq 2)"), "{out}");

    let shown: Value =
        serde_json::from_str(&cp.cli_ok(&["get", "authorizationpolicy", "users", "-o", "json"])).unwrap();
    assert_eq!(shown["kind"], "AuthorizationPolicy", "{shown}");
    assert_eq!(shown["spec"]["action"], "ALLOW", "{shown}");
    let rule = &shown["spec"]["rules"][0];
    assert_eq!(rule["from"][1]["identity"], "spiffe://pilotfish.local/ns/ops/*", "{shown}");
    assert_eq!(rule["to"][0]["paths"][0], "/api/*", "{shown}");
    let table = table_cells(&cp.cli_ok(&["get", "authorizationpolicies"]));
    assert_eq!(
        table,
        [
            ["KIND", "NAMESPACE", "NAME", "VERSION", "SEQ"],
            ["AuthorizationPolicy", "default", "users", "1", "2"]
        ]
    );

    // A sidecar's snapshot carries it, as the sidecar parses it.
    let auth = format!("Authorization: Bearer {TOKEN}");
    let stream = Command::new("curl")
        .args(["-s", "-N", "--max-time", "2", "-H", &auth, &cp.url("/v1/push?id=users-1&service=users")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&stream.stdout);
    let line: PushLine = serde_json::from_str(text.lines().next().unwrap_or_default()).expect("a push line");
    let pushed = parse_with("push", &line.config, UnknownFields::Refuse).unwrap().resources;
    let applied = pilotfish_api::parse_stream("f", POLICY).unwrap();
    assert!(pushed.contains(&applied[0]), "{}", line.config);
    assert!(matches!(applied[0], Resource::AuthorizationPolicy(_)));

    // A bad identity: refused with the document, the field and the reason; nothing changes.
    let bad = POLICY.replace("\"spiffe://pilotfish.local/ns/default/sa/web\"", "web");
    std::fs::write(&file, &bad).unwrap();
    let out = cp.cli(&["apply", "-f", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("(AuthorizationPolicy default/users): spec.rules[0].from[0].identity: "),
        "{stderr}"
    );
    assert!(stderr.contains("it must start with \"spiffe://\" (or end a pattern with `*`)"), "{stderr}");
    let shown: Value =
        serde_json::from_str(&cp.cli_ok(&["get", "authorizationpolicy", "users", "-o", "json"])).unwrap();
    assert_eq!(
        shown["spec"]["rules"][0]["from"][0]["identity"],
        "spiffe://pilotfish.local/ns/default/sa/web"
    );

    let bad = POLICY.replace("ports: [80]", "ports: [0]");
    std::fs::write(&file, &bad).unwrap();
    let stderr =
        String::from_utf8_lossy(&cp.cli(&["apply", "-f", file.to_str().unwrap()]).stderr).into_owned();
    assert!(stderr.contains("spec.rules[0].to[0].ports[0]: must be 1-65535, not 0"), "{stderr}");
}
