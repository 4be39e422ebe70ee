//! `pilotfish tap` end to end: the real CLI against a control plane whose managed sidecars call
//! each other over mTLS. Requests show up as they happen, with every field; filters pick what
//! is shown; a flood is sampled within the sidecar's budget while the traffic sees no error;
//! a tap's sidecars stop recording when its client goes away; and only the admin token taps.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::managed::eventually;
use crate::mesh::{call_until, control_plane, greeter_and_client};
use crate::openapi::validate;
use crate::support::{self, Sidecar};
use crate::{curl, ControlPlane, BIN, TOKEN};

const TRUST_DOMAIN: &str = "spiffe://pilotfish.local/ns/default/sa";
/// What a sidecar logs when the filters it records for change.
const STARTED: &str = "tap filters changed active=true";
const STOPPED: &str = "tap filters changed active=false";

/// A running `pilotfish tap`, its stdout lines collected as they come (with when), killed on
/// drop.
struct Tap {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Tap {
    fn start(cp: &ControlPlane, args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("tap")
            .args(args)
            .env("PILOTFISH_SERVER", cp.url(""))
            .env("PILOTFISH_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (stdout, sink) = (child.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// `-o json`'s events.
    fn events(&self) -> Vec<(Instant, Value)> {
        self.lines().into_iter().map(|(at, l)| (at, serde_json::from_str(&l).unwrap())).collect()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.kill();
    }
}

fn said(sidecar: &Sidecar, what: &str) -> usize {
    sidecar.stderr().matches(what).count()
}

async fn request(caller: &Sidecar, method: &str, path: &str, id: &str) -> Instant {
    let url = format!("http://{}{path}", caller.outbound);
    let r = support::curl(&["-X", method, "-H", "Host: greeter", "-H", &format!("x-request-id: {id}"), &url])
        .await;
    assert_eq!(r.status, 200, "{method} {path}");
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_shows_requests_as_they_happen_filtered_and_bounded_and_stops_with_its_client() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &[]);
    let (_app, greeter, client) = greeter_and_client(&cp, &[]).await;
    call_until(&client, "greeter", 200, &[]).await;

    // Everything to and from greeter, as JSON; and only client's POSTs under /api, as text
    // (the method as typed: the CLI sends it upper-case).
    let mut all = tokio::task::block_in_place(|| Tap::start(&cp, &["greeter", "-o", "json"]));
    let mut posts =
        tokio::task::block_in_place(|| Tap::start(&cp, &["client", "--path", "/api", "--method", "post"]));
    greeter.wait_for_log(STARTED).await;
    client.wait_for_log(STARTED).await;

    let hello = request(&client, "GET", "/hello", "tap-get-1").await;
    request(&client, "POST", "/api/items", "tap-post-1").await;
    request(&client, "GET", "/api/items", "tap-get-2").await;

    let seen = eventually("greeter's tap shows the three requests", async || {
        let events = all.events();
        let ids: Vec<&str> = events.iter().filter_map(|(_, e)| e["requestId"].as_str()).collect();
        ["tap-get-1", "tap-post-1", "tap-get-2"].iter().all(|id| ids.contains(id)).then_some(events)
    })
    .await;
    let (at, get) = seen.iter().find(|(_, e)| e["requestId"] == "tap-get-1").unwrap();
    assert!(
        at.duration_since(hello) < Duration::from_secs(2),
        "as it happens: {:?}",
        at.duration_since(hello)
    );
    assert_eq!(
        (&get["direction"], &get["method"], &get["authority"], &get["path"], &get["status"]),
        (&"inbound".into(), &"GET".into(), &"greeter".into(), &"/hello".into(), &200.into()),
        "{get}"
    );
    assert!(get["latencyMs"].as_f64().unwrap() > 0.0, "{get}");
    assert_eq!(
        (get["peer"].as_str(), get["secured"].as_bool()),
        (Some(&*format!("{TRUST_DOMAIN}/client")), Some(true))
    );
    assert!(get["proxy"].as_str().is_some_and(|p| !p.is_empty()), "{get}");
    // Each event is what the OpenAPI document says one is.
    let events = dir.path().join("events.ndjson");
    let lines: Vec<String> = all.lines().into_iter().map(|(_, l)| l + "\n").collect();
    std::fs::write(&events, lines.concat()).unwrap();
    let verdict = tokio::task::block_in_place(|| validate(&cp, "TapEvent", &events));
    assert!(verdict.status.success(), "not a TapEvent: {}", String::from_utf8_lossy(&verdict.stderr));

    // client's side: its one outbound POST under /api, the peer being greeter.
    let post =
        eventually("client's filtered tap shows the POST", async || posts.lines().into_iter().next()).await;
    let line = post.1;
    for part in [
        " out POST ",
        " 200 ",
        "ms greeter /api/items ",
        "id=tap-post-1 ",
        &format!("peer={TRUST_DOMAIN}/greeter"),
    ] {
        assert!(line.contains(part), "{part:?} in {line:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(posts.lines().len(), 1, "GETs and /hello are filtered out: {:?}", posts.lines());

    // Its client gone, a tap ends and its sidecars stop recording.
    posts.kill();
    eventually("client's sidecar stops recording", async || (said(&client, STOPPED) >= 1).then_some(()))
        .await;
    assert_eq!(said(&greeter, STOPPED), 0, "greeter's tap is still open");

    // A flood: every request answered, and the tap sees at most the sidecar's budget of 100 a
    // second.
    let before = all.lines().len();
    let started = Instant::now();
    let url = format!("http://{}/hello", client.outbound);
    let statuses = support::curl_many(1500, 8, &["-H", "Host: greeter"], &url).await;
    let took = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 200), "tapping hurt the traffic: {statuses:?}");
    assert!(1500.0 / took.as_secs_f64() > 200.0, "not a flood: {took:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let recorded = all.lines().len() - before;
    let budget = 100 * (took.as_secs() as usize + 2);
    eprintln!("flood: 1500 requests in {took:?}, {recorded} tapped (budget {budget})");
    assert!((1..=budget).contains(&recorded), "{recorded} events for 1500 requests in {took:?}");

    all.kill();
    eventually("greeter's sidecar stops recording", async || (said(&greeter, STOPPED) >= 1).then_some(()))
        .await;
}

#[test]
fn only_the_admin_token_taps_and_bad_filters_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let read_only = cp.cli_ok(&["token", "create", "--read-only"]);
    let join = cp.cli_ok(&["token", "create", "--service", "web"]);
    let url = cp.url("/v1/tap?service=web");
    let bearer = |token: &str| format!("Authorization: Bearer {}", token.trim());

    let refused = Command::new(BIN)
        .args(["tap", "web"])
        .env("PILOTFISH_SERVER", cp.url(""))
        .env("PILOTFISH_TOKEN", read_only.trim())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("read-only") && stderr.contains("admin token"),
        "{stderr}"
    );
    assert_eq!(curl(&["-H", &bearer(&read_only), &url]).0, 403);
    assert_eq!(curl(&["-H", &bearer(&join), &url]).0, 401);
    assert_eq!(curl(&[&url]).0, 401);

    let admin = bearer(TOKEN);
    for (query, field) in [("method=GE%20T", "method"), ("path=api", "path"), ("max=0", "max")] {
        let (status, body) = curl(&["-H", &admin, &cp.url(&format!("/v1/tap?service=web&{query}"))]);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().starts_with(field), "{query}: {body}");
    }
    let (status, body) = curl(&["-H", &admin, &cp.url("/v1/tap?service=Web_1")]);
    assert_eq!(status, 400, "{body}");
}
