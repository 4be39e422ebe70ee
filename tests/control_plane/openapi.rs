//! The OpenAPI document against the real server: schemathesis generates requests from it (valid
//! and invalid, every documented operation) and checks every answer against it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{curl, service, support, ControlPlane, TOKEN};

/// Schemathesis's seed: every run generates the same requests, so a failure reproduces with the
/// command the report prints.
const SEED: u64 = 20_261_202;

/// How long the whole run may take. It takes well under a minute; a hung request or a phase
/// that does not end fails the test instead of holding up the suite.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Schemathesis runs every check on every operation with a bounded number of examples and finds
/// nothing: statuses, bodies, headers and content types are as documented, valid input is
/// accepted, invalid input refused, auth enforced, unknown methods answer 405.
///
/// Bounded: fuzzing and each stateful run stop at `--max-examples` (no `--max-time`, which
/// would make them repeat until it is spent), stateful scenarios at `max-steps` (in
/// `schemathesis.toml`), and the coverage phase derives a fixed set of cases from the document.
///
/// Left out: `/v1/push` and `/v1/tap`, whose answers are streams that do not end (a tap's ends
/// after an hour or `max` events, and with no sidecar to tap there are none), which
/// schemathesis cannot read whole (the push stream's answers are tested in the crate,
/// `http/tests.rs`, and its lines below; the tap stream's in `tap.rs`); and
/// the stateful check that a registered instance can then be deregistered: schemathesis sends
/// the same registration with the same `Idempotency-Key` again after deregistering it, and the
/// replay answers with the first registration as it was, which is what the key promises.
#[test]
fn schemathesis_finds_nothing_wrong_with_the_api_or_its_document() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let schemathesis = std::path::Path::new(&support::python()).with_file_name("schemathesis");
    eprintln!("schemathesis --seed {SEED}");
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(&schemathesis)
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(support::script("schemathesis.toml"))
        .args(["run", &cp.url("/v1/openapi.json"), "-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all", "--exclude-checks", "ensure_resource_availability"])
        .args(["--max-examples", "20", "--exclude-path", "/v1/push", "--exclude-path", "/v1/tap"])
        .args(["--seed", &SEED.to_string(), "--request-timeout", "10"])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", schemathesis.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = format!(
        "(seed {SEED})\n{}\n{}",
        std::fs::read_to_string(&stdout).unwrap_or_default(),
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    let status =
        status.unwrap_or_else(|| panic!("schemathesis ran over {RUN_LIMIT:?} and was stopped {report}"));
    assert!(status.success(), "schemathesis found problems {report}");
}

/// What `/v1/push` sends is what the document says its lines are: each line is a `PushLine`.
#[test]
fn the_push_streams_lines_are_what_the_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "--data-binary",
        &service("users", 9001),
        &cp.url("/v1/resources"),
    ]);
    assert_eq!(status, 200, "{body}");
    // The stream does not end: curl stops it, with the first snapshot read.
    let stream = Command::new("curl")
        .args(["-s", "-N", "--max-time", "2", "-H", &auth, &cp.url("/v1/push?id=web-1&service=web")])
        .output()
        .unwrap();
    let lines = dir.path().join("push.ndjson");
    std::fs::write(&lines, &stream.stdout).unwrap();
    assert!(String::from_utf8_lossy(&stream.stdout).contains("users"), "{stream:?}");
    let verdict = validate(&cp, "PushLine", &lines);
    assert!(
        verdict.status.success(),
        "a push line is not a PushLine: {}",
        String::from_utf8_lossy(&verdict.stderr)
    );
}

/// An instance at an IPv6 address registers, and the document allows that registration.
#[test]
fn an_ipv6_registration_the_server_takes_is_one_the_document_allows() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let registration = r#"{"service": "web", "address": "[::1]:8080"}"#;
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        registration,
        &cp.url("/v1/endpoints"),
    ]);
    assert_eq!(status, 201, "{body}");
    let line = dir.path().join("registration.json");
    std::fs::write(&line, registration).unwrap();
    let verdict = validate(&cp, "Registration", &line);
    assert!(
        verdict.status.success(),
        "the document refuses it: {}",
        String::from_utf8_lossy(&verdict.stderr)
    );
}

/// `validate_openapi.py` on the served document: each JSON line of `lines` against the
/// document's schema `schema`.
pub(crate) fn validate(cp: &ControlPlane, schema: &str, lines: &std::path::Path) -> std::process::Output {
    let doc = Command::new("curl").args(["-s", &cp.url("/v1/openapi.json")]).output().unwrap().stdout;
    let mut validator = Command::new(support::python())
        .arg(support::script("validate_openapi.py"))
        .args([schema.as_ref(), lines.as_os_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut validator.stdin.take().unwrap(), &doc).unwrap();
    validator.wait_with_output().unwrap()
}
