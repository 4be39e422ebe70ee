//! Transparent mode for real: in a network namespace, an iptables REDIRECT sends the app's
//! connections to the outbound listener, which reads `SO_ORIGINAL_DST`. A service's
//! `ADDRESS:PORT` is proxied to an endpoint; an unknown destination passes through unchanged.
//! Needs root (the test command runs as root).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("pf-test-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        sh(&["ip", "netns", "add", &name]);
        let ns = Self(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        sh(&full);
    }

    fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// curl run as an unprivileged app user (uid 65534) inside the namespace.
    fn curl_as_app(&self, url: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["curl", "-s", "-S", "--max-time", "20", url])
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?} failed");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(ns: &Netns, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (host, port) = addr.split_once(':').unwrap();
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns.0, "bash", "-c", &format!("exec 3<>/dev/tcp/{host}/{port}")])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_redirect_reaches_service_endpoints_and_passes_unknown_destinations_through() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    for (sub, text) in
        [("endpoint", "served by the users endpoint\n"), ("elsewhere", "served by an unknown host\n")]
    {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("who"), text).unwrap();
    }
    let py = python();
    let serve = |sub: &str, bind: &str, port: &str| {
        let root = dir.path().join(sub);
        Killed(ns.spawn(&[
            py.to_str().unwrap(),
            "-m",
            "http.server",
            port,
            "--bind",
            bind,
            "--directory",
            root.to_str().unwrap(),
        ]))
    };
    // The namespace is ours alone, so fixed addresses and ports cannot collide.
    let _endpoint = serve("endpoint", "127.0.0.1", "9001");
    let _elsewhere = serve("elsewhere", "127.88.0.1", "9002");
    wait_for_port(&ns, "127.0.0.1:9001");
    wait_for_port(&ns, "127.88.0.1:9002");

    let config = "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {name: app}\nspec:\n  admin: 127.0.0.1:15000\n  outbound: {listen: 127.0.0.1:15001}\n---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {name: users}\nspec:\n  ports: [{port: 80, protocol: http}]\n  addresses: [127.77.0.1]\n  endpoints: [{address: 127.0.0.1:9001}]\n";
    let sc = Sidecar::start_in(config, &[], Some(&ns.0));
    // Redirect every TCP connection of the app's user (not root, who runs the sidecar).
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-m",
        "owner",
        "--uid-owner",
        "65534",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);

    let body = ns.curl_as_app("http://127.77.0.1/who");
    assert_eq!(body, "served by the users endpoint\n");
    let body = ns.curl_as_app("http://127.88.0.1:9002/who");
    assert_eq!(body, "served by an unknown host\n");

    let metrics = Command::new("ip")
        .args(["netns", "exec", &ns.0, "curl", "-s", "http://127.0.0.1:15000/metrics"])
        .output()
        .unwrap();
    let m = parse_metrics(&metrics.stdout).await;
    assert_eq!(sample(&m, "pilotfish_requests_total", &[("service", "users.default"), ("code", "200")]), 1.0);
    assert!(
        sample(&m, "pilotfish_tcp_bytes_total", &[("service", ""), ("flow", "server_to_client")]) > 0.0,
        "the unknown destination did not pass through the sidecar"
    );
    drop(sc);
}
