//! The sidecar in a pod, without a kubelet: the status port the kubelet probes, the drain
//! delay after SIGTERM, and the Job that completes.
//!
//! The tests stand in for the kubelet. For a native sidecar (an init container with
//! `restartPolicy: Always`) the kubelet waits for its startup probe (`/ready` on the status
//! port) before it starts the app containers, and once they have all exited it stops the
//! sidecar with SIGTERM: here the test polls `/ready`, runs the app, and sends the SIGTERM. For
//! the legacy fallback (the sidecar as a regular container) nothing stops the sidecar: the
//! app's command is wrapped in `pilotfish await -- CMD`, which here runs as it would in the
//! container, and the "pod" completes when both processes have exited.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One request on a new connection, in-process: a curl process could take longer to start
/// than a 300 ms drain delay lasts on a busy machine.
async fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_port_serves_readiness_and_the_apps_probes_and_nothing_else() {
    let app = backend("app").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let probes = format!(
        r#"{{"/app-health/web/readiness": {{"port": {port}, "path": "/healthy"}},
            "/app-health/web/liveness": {{"port": {port}, "path": "/status/500", "headers": [["x-probe", "1"]]}},
            "/app-health/web/startup": {{"tcp": {closed}}}}}"#,
        port = app.addr.port()
    );
    let sc = Sidecar::start_with(
        &sidecar_doc(None, ""),
        &["--status", "127.0.0.1:0"],
        &[("PILOTFISH_APP_PROBES", &probes)],
    );
    let status = sc.status.expect("the status address in the log");
    let url = |path: &str| format!("http://{status}{path}");

    assert_eq!(curl(&[&url("/ready")]).await.status, 200);
    assert_eq!(curl(&[&url("/live")]).await.status, 200);
    assert_eq!(curl(&[&url("/app-health/web/readiness")]).await.status, 200, "the app's 200");
    assert_eq!(curl(&[&url("/app-health/web/liveness")]).await.status, 500, "the app's 500");
    assert_eq!(app.served(), 2, "each probe reached the app once");
    let startup = curl(&[&url("/app-health/web/startup")]).await;
    assert_eq!(startup.status, 503, "a tcp probe of a closed port");
    assert!(String::from_utf8_lossy(&startup.body).contains("did not answer"));

    // Nothing else: no app probe that was not configured, no admin path, no other method.
    for path in ["/app-health/other/liveness", "/app-health/web", "/config", "/metrics", "/shutdown", "/"] {
        assert_eq!(curl(&[&url(path)]).await.status, 404, "{path}");
    }
    let post = curl(&["-X", "POST", &url("/shutdown")]).await;
    assert_eq!(post.status, 404, "POST /shutdown on the status port");
    for path in ["/ready", "/app-health/web/readiness"] {
        let r = curl(&["-X", "POST", &url(path)]).await;
        assert_eq!((r.status, r.header("allow")), (405, Some("GET")), "POST {path}");
    }
    assert_eq!(curl(&["-I", &url("/live")]).await.status, 405, "HEAD");
    // Oversized requests are refused, not buffered.
    let big = format!("x-big: {}", "a".repeat(16 * 1024));
    assert_eq!(curl(&["-H", &big, &url("/ready")]).await.status, 431);
    assert_eq!(sc.admin_get("/ready").await.status, 200, "the sidecar was not shut down");
    assert_eq!(app.served(), 2, "no probe forwarded by the refused requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_port_serves_a_few_connections_at_once_and_cuts_slow_clients_off() {
    let sc = Sidecar::start_with(&sidecar_doc(None, ""), &["--status", "127.0.0.1:0"], &[]);
    let status = sc.status.unwrap();
    // One client that never finishes its headers, and more idle ones than the port serves at once.
    let mut slow = TcpStream::connect(status).await.unwrap();
    slow.write_all(b"GET /ready HTTP/1.1\r\nHost: pod\r\n").await.unwrap();
    let mut idle = Vec::new();
    for _ in 0..70 {
        idle.push(TcpStream::connect(status).await.unwrap());
    }
    // A probe now waits for the 1 s header deadline to clear them, and is then answered.
    let started = Instant::now();
    let (code, _) = get(status, "pod", "/ready").await.unwrap();
    let waited = started.elapsed();
    assert_eq!(code, 200);
    assert!(waited >= Duration::from_millis(700), "answered after {waited:?}: no connection limit");
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow client is still connected");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "the slow client was served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_drain_delay_serves_on_not_ready_then_drains() {
    let users = backend("users").await;
    let config = format!("{}{}", sidecar_doc(None, ""), service_doc("users", &[users.addr], ""));
    let delay = Duration::from_millis(300);
    let mut sc = Sidecar::start_with(&config, &["--status", "127.0.0.1:0", "--drain-delay", "300ms"], &[]);
    let status = sc.status.unwrap();
    assert_eq!(get(sc.outbound, "users", "/").await.unwrap().0, 200);

    let signalled = Instant::now();
    sc.signal("TERM");
    // The kubelet's readiness probe fails at once...
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(status, "pod", "/ready").await.unwrap().0 != 503 {
        assert!(Instant::now() < deadline, "/ready stayed 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (admin, body) = get(sc.admin, "pod", "/ready").await.unwrap();
    assert_eq!(admin, 503, "{body}");
    assert!(body.contains("terminating"), "{body}");
    // ...while callers that have not heard yet are still served, on new connections too: one
    // quick request, and one that outlasts the delay.
    let (quick, _) = get(sc.outbound, "users", "/").await.expect("a new connection during the delay");
    let slow = tokio::spawn(get(sc.outbound, "users", "/slow/1000"));
    while users.served() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let within = signalled.elapsed();
    assert!(within < delay, "took {within:?}, beyond the delay: nothing here proves it");
    assert_eq!(quick, 200);

    // Then it drains as without a delay: no new connections, the slow request finishes.
    sc.wait_for_log("drain delay over: draining").await;
    assert!(signalled.elapsed() >= delay);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(sc.outbound).await.is_ok() {
        assert!(Instant::now() < deadline, "new connections are still accepted after the delay");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!slow.is_finished(), "the slow request ended before drain could be observed");
    assert_eq!(slow.await.unwrap().unwrap().0, 200, "the request accepted during the delay was cut");
    let exit = tokio::task::block_in_place(|| sc.wait_exit(Duration::from_secs(30)));
    assert!(exit.success(), "{exit}: {}", sc.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_or_post_shutdown_cuts_the_drain_delay_short() {
    for cut in ["SIGTERM", "POST /shutdown"] {
        let mut sc = Sidecar::start_with(&sidecar_doc(None, ""), &[], &[("PILOTFISH_DRAIN_DELAY", "60s")]);
        sc.signal("TERM");
        sc.wait_for_log("serving on for the drain delay of 60s").await;
        let cut_at = Instant::now();
        match cut {
            "SIGTERM" => sc.signal("TERM"),
            _ => {
                assert_eq!(curl(&["-X", "POST", &format!("http://{}/shutdown", sc.admin)]).await.status, 200)
            }
        }
        let exit = tokio::task::block_in_place(|| sc.wait_exit(Duration::from_secs(20)));
        assert!(exit.success(), "{cut}: {exit}: {}", sc.stderr());
        assert!(cut_at.elapsed() < Duration::from_secs(20), "{cut}");
        assert!(sc.stderr().contains("draining now"), "{cut}: {}", sc.stderr());
    }
}

/// `pilotfish await -- sh -c SCRIPT` beside a sidecar, as the legacy injection wraps a Job's
/// command: returns await's exit status once both it and the sidecar have exited.
async fn legacy_job(script: &str) -> (std::process::ExitStatus, Backend, Sidecar) {
    let users = backend("users").await;
    let config = format!("{}{}", sidecar_doc(None, ""), service_doc("users", &[users.addr], ""));
    let mut sc = Sidecar::start(&config);
    let script = script.replace("OUTBOUND", &sc.outbound.to_string());
    let admin = sc.admin.to_string();
    let out = tokio::process::Command::new(BIN)
        .args(["await", "--admin", &admin, "--timeout", "20s", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let exit = tokio::task::block_in_place(|| sc.wait_exit(Duration::from_secs(20)));
    assert!(exit.success(), "the sidecar: {exit}: {}", sc.stderr());
    assert!(sc.stderr().contains("shutdown requested on the admin endpoint"), "{}", sc.stderr());
    assert!(out.stderr.is_empty(), "await said: {}", String::from_utf8_lossy(&out.stderr));
    (out.status, users, sc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pod_completes_through_pilotfish_await_with_the_apps_exit_code() {
    let call = "curl -sf -o /dev/null -H 'Host: users' http://OUTBOUND/job";
    let (status, users, _sc) = legacy_job(&format!("{call} && exit 0")).await;
    assert_eq!(status.code(), Some(0), "the pod completes");
    assert_eq!(users.served(), 1, "the app called through the mesh");

    let (status, users, _sc) = legacy_job(&format!("{call}; exit 3")).await;
    assert_eq!(status.code(), Some(3), "the app's failure is the Job's");
    assert_eq!(users.served(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pod_completes_with_a_native_sidecar_stopped_by_sigterm() {
    let users = backend("users").await;
    let config = format!("{}{}", sidecar_doc(None, ""), service_doc("users", &[users.addr], ""));
    let mut sc = Sidecar::start_with(&config, &["--status", "127.0.0.1:0", "--drain-delay", "300ms"], &[]);
    // The startup probe passes before the app container starts.
    let status = sc.status.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(status, "pod", "/ready").await.map(|r| r.0).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "the startup probe never passed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("http://{}/job", sc.outbound);
    let app = tokio::process::Command::new("sh")
        .args(["-c", &format!("curl -sf -o /dev/null -H 'Host: users' {url} && exit 0")])
        .status()
        .await
        .unwrap();
    assert!(app.success());
    assert_eq!(users.served(), 1);
    // Every main container has exited: the kubelet stops the sidecar.
    let signalled = Instant::now();
    sc.signal("TERM");
    let exit = tokio::task::block_in_place(|| sc.wait_exit(Duration::from_secs(20)));
    assert!(exit.success(), "{exit}: {}", sc.stderr());
    assert!(signalled.elapsed() >= Duration::from_millis(300), "exited before the drain delay ran out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilotfish_await_forwards_signals_and_gives_up_on_a_sidecar_that_is_not_there() {
    // Without a command (a postStart hook, which may start before the sidecar): polls until
    // the sidecar is ready, then exits 0.
    let admin = format!("127.0.0.1:{}", free_port());
    let hook_admin = admin.clone();
    let hook = tokio::spawn(async move {
        tokio::process::Command::new(BIN).args(["await", "--admin", &hook_admin]).output().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!hook.is_finished(), "await returned before there was a sidecar");
    let mut sc = Sidecar::start_with(&sidecar_doc(None, ""), &["--admin", &admin], &[]);
    let out = tokio::time::timeout(Duration::from_secs(10), hook).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sc.admin_get("/ready").await.status, 200, "no command, no shutdown");

    // SIGTERM to await (the container's PID 1) reaches the command; the sidecar still stops.
    let mut wrapped = tokio::process::Command::new(BIN)
        .args(["await", "--admin", &admin, "--", "sleep", "30"])
        .spawn()
        .unwrap();
    let sleeping = Instant::now() + Duration::from_secs(10);
    let parent = wrapped.id().unwrap().to_string();
    let pgrep = || Command::new("pgrep").args(["-P", &parent, "sleep"]).stdout(Stdio::null()).status();
    while !pgrep().unwrap().success() {
        assert!(Instant::now() < sleeping, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill").args(["-TERM", &parent]).status().unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), wrapped.wait()).await.unwrap().unwrap();
    assert_eq!(code.code(), Some(128 + 15), "killed by the forwarded SIGTERM");
    let exit = tokio::task::block_in_place(|| sc.wait_exit(Duration::from_secs(20)));
    assert!(exit.success());

    // Nothing listening: a clear error once the timeout is over, and the command never runs.
    let gone = sc.admin.to_string();
    let started = Instant::now();
    let out = tokio::process::Command::new(BIN)
        .args(["await", "--admin", &gone, "--timeout", "500ms", "--", "sh", "-c", "echo ran"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "the command ran");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("the sidecar at http://{gone} was not ready within 500ms")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
