//! nginx as a proxy: one process (`master_process off`, so its CPU time is the one process's),
//! pooled keep-alive connections to what it calls. nginx calls HTTP upstreams in HTTP/1.1 only,
//! so an HTTP/2 scenario is h2c from the load generator and HTTP/1.1 behind; gRPC is HTTP/2
//! all the way (`grpc_pass`). In the mTLS pair the callee's nginx requires and verifies the
//! caller's certificate; the caller's nginx does not verify the callee's (nginx checks a DNS
//! name or IP, and the mesh leaves name only a SPIFFE URI), so the pair's handshake costs what
//! HAProxy's does but proves one side.

use std::net::SocketAddr;

use anyhow::Result;

use super::{Route, Setup};
use crate::pki::path;
use crate::procs::{tool, Proc};
use crate::scenario::Protocol;

/// `route.target` is the upstream's HTTP/1.1 port for HTTP/2 scenarios (see [`super::start`]).
pub fn start(setup: &Setup, route: &Route) -> Result<Vec<Proc>> {
    let Route { protocol, entry, target, .. } = *route;
    let pki = setup.pki;
    let grpc = protocol == Protocol::Grpc;
    let h2 = if matches!(protocol, Protocol::Http2 | Protocol::Grpc) { " http2" } else { "" };
    let Some(hop) = &route.hop else {
        return Ok(vec![nginx(setup, "nginx-a", &format!("listen {entry}{h2};"), target, grpc, "")?]);
    };
    // Between the pair: HTTP/1.1, or HTTP/2 for gRPC.
    let hop_h2 = if grpc { " http2" } else { "" };
    let (b_listen, a_calls) = match hop.tls {
        true => (
            format!(
                "listen {} ssl{hop_h2};\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_client_certificate {};\n    ssl_verify_client on;\n    ssl_protocols TLSv1.3;",
                hop.listen,
                path(&pki.backend.cert),
                path(&pki.backend.key),
                path(&pki.ca),
            ),
            {
                let p = if grpc { "grpc" } else { "proxy" };
                format!(
                    "{p}_ssl_certificate {};\n      {p}_ssl_certificate_key {};\n      {p}_ssl_protocols TLSv1.3;\n      {p}_ssl_session_reuse on;",
                    path(&pki.client.cert),
                    path(&pki.client.key),
                )
            },
        ),
        false => (format!("listen {}{hop_h2};", hop.listen), String::new()),
    };
    let b = nginx(setup, "nginx-b", &b_listen, target, grpc, "")?;
    let a = nginx(setup, "nginx-a", &format!("listen {entry}{h2};"), hop.listen, grpc, &a_calls)?;
    Ok(vec![a, b])
}

/// One nginx listening as `listen` (the directive and its TLS settings) and proxying to `next`
/// (`grpc_pass` when `grpc`), over TLS when `tls` (the `proxy_ssl_*`/`grpc_ssl_*` directives)
/// is not empty.
fn nginx(setup: &Setup, name: &str, listen: &str, next: SocketAddr, grpc: bool, tls: &str) -> Result<Proc> {
    let dir = path(setup.dir);
    let s = if tls.is_empty() { "" } else { "s" };
    let pass = match grpc {
        false => format!(
            "proxy_pass http{s}://next;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";"
        ),
        true => format!("grpc_pass grpc{s}://next;"),
    };
    let config = format!(
        "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {dir}/{name}.pid;\nerror_log {dir}/{name}.err;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n  http2_max_concurrent_streams 1024;\n  upstream next {{\n    server {next};\n    keepalive 128;\n    keepalive_requests 1000000;\n  }}\n  server {{\n    {listen}\n    location / {{\n      {pass}\n      {tls}\n    }}\n  }}\n}}\n"
    );
    let file = setup.dir.join(format!("{name}.conf"));
    std::fs::write(&file, config)?;
    Proc::spawn(setup.dir, name, &tool("nginx"), &["-c", path(&file)], &[])
}
