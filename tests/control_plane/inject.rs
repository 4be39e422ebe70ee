//! Sidecar injection end to end: `pilotfish inject` on a manifest of every workload kind gives
//! the golden output in `inject/` (`PILOTFISH_BLESS=1` rewrites them; review the diff), which
//! `kubernetes-validate --strict` accepts for Kubernetes 1.32; injecting again changes nothing
//! and `pilotfish uninject` gives the input back byte for byte; and the control plane's
//! admission webhook, over HTTPS, answers an `AdmissionReview` with a JSONPatch that, applied
//! by the `jsonpatch` library, makes the object what the CLI makes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use crate::support;
use crate::{ControlPlane, BIN};

/// One manifest per workload kind, the legacy (pre-1.29) mode, and a stream of many documents
/// (a Namespace whose annotations apply, documents passed through, opted-out workloads, a
/// `List`, a JSON document, a kind nobody knows).
const CASES: [&str; 10] = [
    "pod",
    "deployment",
    "statefulset",
    "daemonset",
    "replicaset",
    "job",
    "cronjob",
    "legacy-job",
    "legacy-deployment",
    "stream",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/control_plane/inject").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `pilotfish <args>` with `stdin`.
pub(crate) fn pilotfish(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `pilotfish inject|uninject -f -` of `text`: its stdout, asserting success.
fn run(command: &str, text: &str) -> String {
    let out = pilotfish(&[command, "-f", "-"], text);
    assert!(out.status.success(), "pilotfish {command}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn inject_gives_the_golden_output_for_every_workload_kind() {
    let bless = std::env::var_os("PILOTFISH_BLESS").is_some();
    for case in CASES {
        let input = fixture(&format!("{case}.in.yaml"));
        let out = pilotfish(&["inject", "-f", input.to_str().unwrap()], "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{case}: {stderr}");
        let injected = String::from_utf8(out.stdout).unwrap();
        let expected = format!("{case}.out.yaml");
        if bless {
            std::fs::write(fixture(&expected), &injected).unwrap();
        }
        assert_eq!(injected, read(&expected), "{case}: the output differs from {expected}");
        if case == "legacy-job" {
            // The container without a command cannot be wrapped: said, not hidden.
            assert!(stderr.contains("container \"uploader\": no command"), "{stderr}");
        } else {
            assert!(!stderr.contains("Warning"), "{case}: {stderr}");
        }
    }
}

/// `kubernetes-validate --strict` for Kubernetes 1.32 on `text`: whether it passed, and its
/// report.
fn validate(text: &str) -> (bool, String) {
    let validator = Path::new(&support::python()).with_file_name("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(&validator)
        .args(["--strict", "--kubernetes-version", "1.32.0"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", validator.display()));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && !report.contains("ERROR"), report)
}

#[test]
fn every_injected_manifest_is_valid_for_kubernetes_1_32() {
    for case in CASES {
        let injected = run("inject", &read(&format!("{case}.in.yaml")));
        let (valid, report) = validate(&injected);
        assert!(valid, "{case}: {report}");
        // The validator skips what it has no schema for (a `List`, a custom kind): the List's
        // items are checked one by one.
        let workloads = if case == "stream" { 6 } else { 1 };
        assert_eq!(report.matches(" passed for resource ").count(), workloads, "{case}: {report}");
        if case == "stream" {
            let list = injected.split("\n---\n").find(|doc| doc.contains("kind: List")).unwrap();
            let list: Value = serde_yaml_ng::from_str(list).unwrap();
            let items: Vec<String> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| serde_yaml_ng::to_string(i).unwrap())
                .collect();
            let (valid, report) = validate(&items.join("---\n"));
            assert!(valid && report.matches(" passed for resource ").count() == 2, "{case}: {report}");
        }
    }
    // The validator would see a field Kubernetes does not know.
    let injected = run("inject", &read("pod.in.yaml"));
    let (valid, report) = validate(
        &injected.replace("    restartPolicy: Always\n", "    restartPolicy: Always\n    sidecar: true\n"),
    );
    assert!(!valid, "{report}");
}

#[test]
fn injecting_twice_changes_nothing_and_uninject_gives_back_the_input_byte_for_byte() {
    for case in CASES {
        let input = read(&format!("{case}.in.yaml"));
        let injected = run("inject", &input);
        assert_ne!(injected, input, "{case}");
        assert_eq!(run("inject", &injected), injected, "{case}: injected twice");
        assert_eq!(run("uninject", &injected), input, "{case}: uninjected");
        assert_eq!(run("uninject", &input), input, "{case}: nothing to uninject");
    }
}

#[test]
fn a_workload_in_any_layout_comes_back_from_uninject_as_the_same_object_in_the_same_key_order() {
    let input = "# web\nkind: Deployment\napiVersion: apps/v1\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: web, image: \"web:1\", ports: [{containerPort: 80}]}]  # app\n      hostname: web\n  selector: {matchLabels: {app: web}}\n";
    let uninjected = run("uninject", &run("inject", input));
    let layout = |text: &str| {
        serde_yaml_ng::to_string(&serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).unwrap()).unwrap()
    };
    assert_eq!(layout(&uninjected), layout(input));
}

#[test]
fn the_stream_keeps_what_it_does_not_inject_and_lets_the_pod_win_over_its_namespace() {
    let input = read("stream.in.yaml");
    let injected = run("inject", &input);
    let docs: Vec<&str> = injected.split("\n---\n").collect();
    let written: Vec<&str> = input.split("\n---\n").collect();
    assert_eq!(docs.len(), written.len());
    // The Namespace, ConfigMap, opted-out Deployment and Pod and the unknown kind, as written.
    for i in [0, 1, 3, 4, 5] {
        assert_eq!(docs[i], written[i], "document {}", i + 1);
    }
    let cart: Value = serde_yaml_ng::from_str(docs[2]).unwrap();
    let proxy = &cart["spec"]["template"]["spec"]["initContainers"][1];
    assert_eq!(proxy["name"], "pilotfish-proxy");
    let env = |name: &str| {
        proxy["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["value"].clone()
    };
    assert_eq!(env("RUST_LOG"), "warn", "the pod's log level wins");
    let args: Vec<&str> = proxy["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.windows(2).any(|w| w == ["--drain-delay", "10s"]), "the namespace's drain delay: {args:?}");
    assert!(args.windows(2).any(|w| w == ["--service", "cart"]), "{args:?}");
    // The List's Deployment gets the sidecar, its Service does not; the JSON document stays JSON.
    let list: Value = serde_yaml_ng::from_str(docs[6]).unwrap();
    assert!(list["items"][0]["spec"].get("initContainers").is_none());
    assert_eq!(list["items"][1]["spec"]["template"]["spec"]["initContainers"][1]["name"], "pilotfish-proxy");
    let pod: Value = serde_json::from_str(docs[7]).unwrap();
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "pilotfish-init");
}

#[test]
fn a_workload_that_cannot_be_injected_fails_the_stream_naming_the_document_and_what_to_fix() {
    let input = read("stream.in.yaml")
        .replace("pilotfish.io/log-level: warn", "pilotfish.io/skip-inbound-ports: http");
    let out = pilotfish(&["inject", "-f", "-"], &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "all or nothing");
    assert!(
        stderr.contains("document 3 (Deployment shop/cart)")
            && stderr.contains("pilotfish.io/skip-inbound-ports"),
        "{stderr}"
    );
    let unnamed =
        "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    app: Not_A_Name\nspec:\n  containers: []\n";
    let stderr = String::from_utf8(pilotfish(&["inject", "-f", "-"], unnamed).stderr).unwrap();
    assert!(stderr.contains("pilotfish.io/service"), "{stderr}");
}

/// An `AdmissionReview` of `object` created in namespace `shop`.
fn review(object: &Value, operation: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": object["kind"]},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": object["kind"]},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    })
}

#[test]
fn the_webhook_answers_over_https_with_a_patch_that_makes_the_object_what_inject_makes_it() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_on(dir.path(), "0.0.0.0:0");
    let url = format!("https://127.0.0.1:{}/inject", cp.addr.port());
    let ca = dir.path().join("ca/root.pem");
    let post = |name: &str, review: &Value| -> Value {
        let file = dir.path().join(format!("{name}.review.json"));
        std::fs::write(&file, review.to_string()).unwrap();
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--max-time", "10", "--cacert", ca.to_str().unwrap()])
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let apply = |name: &str, object: &Value, answer: &Value| -> Value {
        let (object_file, answer_file) =
            (dir.path().join(format!("{name}.json")), dir.path().join(format!("{name}.answer.json")));
        std::fs::write(&object_file, object.to_string()).unwrap();
        std::fs::write(&answer_file, answer.to_string()).unwrap();
        let out = Command::new(support::python())
            .arg(support::script("apply_json_patch.py"))
            .args([&object_file, &answer_file])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    for case in CASES.iter().filter(|c| **c != "stream") {
        let input = read(&format!("{case}.in.yaml"));
        let object: Value = serde_yaml_ng::from_str(&input).unwrap();
        let answer = post(case, &review(&object, "CREATE"));
        assert_eq!(
            (&answer["apiVersion"], &answer["kind"]),
            (&json!("admission.k8s.io/v1"), &json!("AdmissionReview"))
        );
        let response = &answer["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002", "{case}: {answer}");
        assert_eq!(
            (&response["allowed"], &response["patchType"]),
            (&json!(true), &json!("JSONPatch")),
            "{case}: {answer}"
        );
        let cli: Value = serde_yaml_ng::from_str(&run("inject", &input)).unwrap();
        assert_eq!(apply(case, &object, &answer), cli, "{case}: the webhook's patch and the CLI differ");
        if *case == "legacy-job" {
            assert!(response["warnings"][0].as_str().unwrap().contains("uploader"), "{answer}");
        }
    }

    // An injected pod, an opted-out one, an update and a kind that runs no pods: allowed as
    // they are.
    let pod: Value = serde_yaml_ng::from_str(&read("pod.in.yaml")).unwrap();
    let injected: Value = serde_yaml_ng::from_str(&read("pod.out.yaml")).unwrap();
    let mut opted_out = pod.clone();
    opted_out["metadata"]["annotations"] = json!({"pilotfish.io/inject": "disabled"});
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
    for (name, object, operation) in [
        ("injected", &injected, "CREATE"),
        ("opted-out", &opted_out, "CREATE"),
        ("update", &pod, "UPDATE"),
        ("configmap", &config_map, "CREATE"),
    ] {
        let answer = post(name, &review(object, operation));
        assert_eq!(answer["response"]["allowed"], true, "{name}: {answer}");
        assert!(answer["response"].get("patch").is_none(), "{name}: {answer}");
    }
    // Annotations it cannot honour: denied, saying which.
    let mut bad = pod.clone();
    bad["metadata"]["annotations"] = json!({"pilotfish.io/proxy-cpu-limit": "lots"});
    let answer = post("bad", &review(&bad, "CREATE"));
    assert_eq!(
        (&answer["response"]["allowed"], &answer["response"]["status"]["code"]),
        (&json!(false), &json!(400)),
        "{answer}"
    );
    assert!(
        answer["response"]["status"]["message"].as_str().unwrap().contains("pilotfish.io/proxy-cpu-limit"),
        "{answer}"
    );
    // Not an AdmissionReview: 400, with the reason.
    let answer = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
            ca.to_str().unwrap(),
        ])
        .args(["-H", "Content-Type: application/json", "--data", r#"{"kind": "Pod"}"#, &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&answer.stdout), "400");
}
