//! A real etcd for the tests: started on free loopback ports, stopped when dropped or when the
//! test process exits, and one shared by a whole test run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A real etcd on free loopback ports. Dropping it stops it; a watchdog also stops it when the
/// test process exits, so the one shared by a whole test run (never dropped) does not outlive it.
pub(super) struct EtcdServer {
    child: Child,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    _tmp: Option<TempDir>,
}

impl EtcdServer {
    /// A fresh etcd in a new temp dir; `shared`: the watchdog also deletes the dir at exit.
    pub(super) fn start(shared: bool) -> Result<Self, String> {
        let tmp = tempfile::Builder::new()
            .prefix("pilotfish-etcd-")
            .tempdir()
            .map_err(|e| format!("creating a temp dir: {e}"))?;
        // Bind both at once so they differ; etcd binds them again right after.
        let client = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let peer = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let (client_port, peer_port) =
            (client.local_addr().unwrap().port(), peer.local_addr().unwrap().port());
        drop((client, peer));
        let dir = tmp.path().to_owned();
        let child = spawn_etcd(&dir, client_port, peer_port, shared)?;
        // From here on a shared dir is the watchdog's to delete, at exit.
        let tmp = if shared {
            let _ = tmp.keep();
            None
        } else {
            Some(tmp)
        };
        let server = Self { child, dir, client_port, peer_port, _tmp: tmp };
        server.wait_ready()?;
        Ok(server)
    }

    pub(super) fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// SIGKILL, as a crash would.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts etcd again on the same ports and data.
    pub(super) fn restart(&mut self) {
        self.child = spawn_etcd(&self.dir, self.client_port, self.peer_port, false).unwrap();
        self.wait_ready().unwrap();
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if healthy(self.client_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let tail: Vec<_> = log.lines().rev().take(20).collect();
        Err(format!(
            "etcd did not become healthy on 127.0.0.1:{} within 30 s; its log ends:\n{}",
            self.client_port,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_etcd(dir: &Path, client_port: u16, peer_port: u16, shared: bool) -> Result<Child, String> {
    let binary = std::env::var("PILOTFISH_TEST_ETCD").unwrap_or_else(|_| "etcd".to_owned());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .map_err(|e| format!("creating the etcd log: {e}"))?;
    let (client, peer) = (format!("http://127.0.0.1:{client_port}"), format!("http://127.0.0.1:{peer_port}"));
    let child = Command::new(&binary)
        .args(["--name", "pilotfish-test", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("pilotfish-test={peer}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "etcd is not installed (no `{binary}` on PATH): the etcd backend's tests need a real \
                 etcd. Install Debian's etcd-server (`apt-get install etcd-server`), as \
                 scripts/test.sh does, or set PILOTFISH_TEST_ETCD to an etcd binary"
            ),
            _ => format!("starting `{binary}`: {e}"),
        })?;
    // The watchdog: once this test process is gone, stop etcd (and delete a shared dir).
    let remove = if shared { dir.to_string_lossy().into_owned() } else { String::new() };
    Command::new("sh")
        .args([
            "-c",
            r#"while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 0.5; done
               kill -9 "$2" 2>/dev/null; if [ -n "$3" ]; then sleep 1; rm -rf "$3"; fi"#,
            "etcd-watchdog",
        ])
        .arg(std::process::id().to_string())
        .arg(child.id().to_string())
        .arg(remove)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the etcd watchdog: {e}"))?;
    Ok(child)
}

fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains(r#""health":"true""#)
}

/// The etcd every test of this run shares, each under its own prefix.
pub(super) fn shared_etcd() -> &'static EtcdServer {
    static SHARED: OnceLock<Result<EtcdServer, String>> = OnceLock::new();
    match SHARED.get_or_init(|| EtcdServer::start(true)) {
        Ok(server) => server,
        Err(why) => panic!("{why}"),
    }
}
