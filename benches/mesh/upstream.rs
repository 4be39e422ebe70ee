//! What every scenario calls: nginx with a 1 KiB body (one process, keep-alive without limit;
//! an HTTP/1.1 port and an h2c port), a gRPC server answering every unary call with a 1 KiB
//! message, and a TCP sink for the bulk scenarios. All run pinned with the proxies, as the app
//! shares its pod's CPU with its sidecar. The gRPC server and the sink are this bench's own
//! binary in a hidden mode (nginx cannot answer gRPC itself, and a Python or Go server would
//! measure its runtime more than the proxies).

use std::convert::Infallible;
use std::future::Ready;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use anyhow::Result;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::WithTrailers;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::pki::path;
use crate::procs::{free_port, tool, wait_port, Proc};

/// The response body's size (gRPC: the reply message's).
pub const BODY_BYTES: usize = 1024;
/// gRPC's length prefix before each message: a compression flag and a 32-bit length.
pub const GRPC_FRAME: usize = 5;
/// The one method the gRPC server answers (any path gets the same answer).
pub const GRPC_METHOD: &str = "/pilotfish.bench.Echo/Get";

pub struct Upstream {
    pub http1: SocketAddr,
    pub http2: SocketAddr,
    pub grpc: SocketAddr,
    pub tcp: SocketAddr,
    _procs: Vec<Proc>,
}

impl Upstream {
    pub fn start(dir: &Path) -> Result<Upstream> {
        let http1 = loopback(free_port());
        let http2 = loopback(free_port());
        let grpc = loopback(free_port());
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
        let server =
            Proc::spawn(dir, "grpc-server", &exe, &[crate::options::GRPC_SERVER, &grpc.to_string()], &[])?;
        let mut procs = vec![nginx, sink, server];
        for addr in [http1, http2, grpc, tcp] {
            wait_port(addr, &mut procs)?;
        }
        Ok(Upstream { http1, http2, grpc, tcp, _procs: procs })
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

/// The gRPC server (this bench's own binary, run with `--grpc-server ADDR`): h2c, one thread;
/// every call's request is read whole and answered with one 1 KiB message and `grpc-status: 0`.
pub fn serve_grpc(addr: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let serve = http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(1024)
                .serve_connection(TokioIo::new(stream), service_fn(unary));
            tokio::spawn(serve);
        }
    })
}

type Reply = WithTrailers<Full<Bytes>, Ready<Option<Result<HeaderMap, Infallible>>>>;

async fn unary(request: Request<Incoming>) -> Result<Response<Reply>, hyper::Error> {
    request.into_body().collect().await?;
    let mut message = vec![b'x'; GRPC_FRAME + BODY_BYTES];
    message[..GRPC_FRAME].copy_from_slice(&[0, 0, 0, 4, 0]); // uncompressed, 1,024 bytes
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from(message)).with_trailers(std::future::ready(Some(Ok(trailers))));
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .body(body)
        .expect("static headers are valid"))
}
