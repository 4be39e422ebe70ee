//! What every scenario calls: nginx with a 1 KiB body (one process, keep-alive without limit;
//! an HTTP/1.1 port and an h2c port), and a TCP sink for the bulk scenarios. Both run pinned
//! with the proxies, as the app shares its pod's CPU with its sidecar.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use anyhow::Result;

use crate::pki::path;
use crate::procs::{free_port, tool, wait_port, Proc};

/// The response body's size.
pub const BODY_BYTES: usize = 1024;

pub struct Upstream {
    pub http1: SocketAddr,
    pub http2: SocketAddr,
    pub tcp: SocketAddr,
    _procs: Vec<Proc>,
}

impl Upstream {
    pub fn start(dir: &Path) -> Result<Upstream> {
        let http1 = loopback(free_port());
        let http2 = loopback(free_port());
        let tcp = loopback(free_port());
        let body = "x".repeat(BODY_BYTES - 1);
        let conf = dir.join("upstream-nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {dir}/upstream-nginx.pid;\nerror_log {dir}/upstream-nginx.err;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n  http2_max_concurrent_streams 1024;\n  default_type text/plain;\n  server {{\n    listen {http1};\n    listen {http2} http2;\n    location / {{ return 200 \"{body}\\n\"; }}\n  }}\n}}\n",
                dir = path(dir),
            ),
        )?;
        let nginx = Proc::spawn(dir, "upstream-nginx", &tool("nginx"), &["-c", path(&conf)], &[])?;
        let exe = std::env::current_exe()?;
        let sink = Proc::spawn(dir, "tcp-sink", &exe, &[crate::options::TCP_SINK, &tcp.to_string()], &[])?;
        let mut procs = vec![nginx, sink];
        for addr in [http1, http2, tcp] {
            wait_port(addr, &mut procs)?;
        }
        Ok(Upstream { http1, http2, tcp, _procs: procs })
    }
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The TCP sink (this bench's own binary, run with `--tcp-sink ADDR`): reads each connection to
/// its end, then answers with the number of bytes it read (8 bytes, big-endian) and closes.
pub fn serve_tcp_sink(addr: &str) -> Result<()> {
    let listener = TcpListener::bind(addr)?;
    for conn in listener.incoming() {
        let mut conn = conn?;
        std::thread::spawn(move || drain(&mut conn));
    }
    Ok(())
}

fn drain(conn: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        match conn.read(&mut buf)? {
            0 => break,
            n => total += n as u64,
        }
    }
    conn.write_all(&total.to_be_bytes())
}
