//! `pilotfish up`: the README's first command, for real — the demo mesh comes up, the commands it
//! prints work (the dashboard's URL with a read-only token too), and Ctrl-C leaves nothing
//! behind; `up -f` runs the user's own services.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::BIN;

/// A block of 700 ports for one test, away from the usual ones and below the kernel's
/// ephemeral range (32768+), where clients' own ports could collide.
fn base_port(slot: u32) -> u16 {
    (20_000 + ((std::process::id() + slot) % 16) * 700) as u16
}

struct Up {
    child: std::process::Child,
    banner: Vec<String>,
}

impl Up {
    fn start(args: &[&str], dir: &std::path::Path) -> Self {
        let mut child = Command::new(BIN)
            .arg("up")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !banner.last().is_some_and(|l: &String| l.contains("Ctrl-C stops everything")) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("`pilotfish up` never finished starting: {banner:?}"));
            banner.push(line);
        }
        Self { child, banner }
    }

    /// Ctrl-C, and the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        assert!(Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "`pilotfish up` did not stop on Ctrl-C");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sh(command: &str) -> String {
    let out = Command::new("sh").args(["-c", command]).output().unwrap();
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn up_runs_the_demo_mesh_whose_printed_commands_work_and_ctrl_c_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(0);
    let base_arg = base.to_string();
    let mut up = Up::start(&["--base-port", &base_arg], dir.path());
    let commands: Vec<String> = up
        .banner
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix("curl ").map(|c| format!("curl {c}")))
        .filter(|c| !c.contains("/metrics"))
        .collect();
    assert_eq!(commands.len(), 3, "{:?}", up.banner);
    for command in &commands {
        let out = sh(&format!("{command} -w ' %{{http_code}}'"));
        assert!(out.ends_with(" 200"), "{command} → {out}");
    }
    // The flaky service: one instance fails half its requests, the client never sees it.
    let lp =
        up.banner.iter().find(|l| l.trim_start().starts_with("for i in")).expect("the flaky loop").clone();
    let codes = sh(&lp);
    assert_eq!(codes.split_whitespace().filter(|c| *c == "200").count(), 20, "{codes}");
    let metrics = up.banner.iter().find(|l| l.contains("/metrics")).unwrap().trim().to_owned();
    assert!(sh(&metrics).contains("pilotfish_requests_total"));

    // The dashboard's URL carries a read-only token in its fragment: it reads, never writes.
    let dashboard = up.banner.iter().find_map(|l| l.strip_prefix("Dashboard: ")).expect("a dashboard URL");
    let page = format!("http://127.0.0.1:{}/", base + 100);
    let token = dashboard.strip_prefix(&format!("{page}#token=")).unwrap_or_else(|| panic!("{dashboard}"));
    assert!(sh(&format!("curl -s {page}")).contains("Pilotfish dashboard"));
    let auth = format!("Authorization: Bearer {token}");
    let (status, body) = crate::curl(&["-H", &auth, &format!("{page}v1/stats?by=edge")]);
    assert_eq!(status, 200, "{body}");
    let tokens = format!("{page}v1/tokens");
    let json = "Content-Type: application/json";
    let (status, body) = crate::curl(&["-X", "POST", "-H", &auth, "-H", json, "-d", "{}", &tokens]);
    assert_eq!(status, 403, "a read-only token cannot write: {body}");

    let status = up.interrupt();
    assert!(status.success(), "{status}");
    for offset in [0, 1, 100, 200, 300, 303] {
        assert!(!listening(base + offset), "port {} still open after Ctrl-C", base + offset);
    }

    // A second `up` resumes from the data directory: the configuration is already there.
    let mut again = Up::start(&["--base-port", &base_arg], dir.path());
    let admin_token = std::fs::read_to_string(dir.path().join(".pilotfish/admin-token")).unwrap();
    let history = Command::new(BIN)
        .args(["history", "-o", "json"])
        .env("PILOTFISH_SERVER", format!("http://127.0.0.1:{}", base + 100))
        .env("PILOTFISH_TOKEN", admin_token.trim())
        .output()
        .unwrap();
    let events: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let applied = events.as_array().unwrap().iter().filter(|e| e["kind"] == "ResourceApplied").count();
    assert_eq!(applied, 5, "the demo configuration was applied once, not twice");
    assert!(again.interrupt().success());
}

#[test]
fn up_runs_your_own_services_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(8);
    let app_port = base + 650;
    std::fs::write(dir.path().join("hello.txt"), "served by your own app\n").unwrap();
    let python = crate::support::python();
    let mesh = format!(
        "services:\n- name: files\n  app: 127.0.0.1:{app_port}\n  command: \"cd . && {} -m http.server {app_port} --bind 127.0.0.1\"\n",
        python.display()
    );
    std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
    let base_arg = base.to_string();
    let mut up = Up::start(&["-f", "mesh.yaml", "--base-port", &base_arg], dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let out = Command::new("curl")
            .args(["-s", "-H", "Host: files", &format!("http://127.0.0.1:{}/hello.txt", base + 1)])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if body.contains("served by your own app") {
            break body;
        }
        assert!(Instant::now() < deadline, "the app never answered through the mesh: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(body, "served by your own app\n");
    assert!(up.interrupt().success());
    assert!(!listening(app_port), "the started command outlived `up`");
}
