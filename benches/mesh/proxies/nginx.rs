//! nginx as a proxy: one process (`master_process off`, so its CPU time is the one process's),
//! pooled keep-alive connections to what it calls. nginx calls upstreams in HTTP/1.1 only, so
//! an HTTP/2 scenario is h2c from the load generator and HTTP/1.1 behind. In the mTLS pair the
//! callee's nginx requires and verifies the caller's certificate; the caller's nginx does not
//! verify the callee's (nginx checks a DNS name or IP, and the mesh leaves name only a SPIFFE
//! URI), so the pair's handshake costs what HAProxy's does but proves one side.

use std::net::SocketAddr;

use anyhow::Result;

use super::{Route, Setup};
use crate::pki::path;
use crate::procs::{tool, Proc};
use crate::scenario::Protocol;

/// `route.target` is the upstream's HTTP/1.1 port whatever the protocol.
pub fn start(setup: &Setup, route: &Route) -> Result<Vec<Proc>> {
    let Route { protocol, entry, target: http1, .. } = *route;
    let pki = setup.pki;
    let h2 = if protocol == Protocol::Http2 { " http2" } else { "" };
    let Some(hop) = &route.hop else {
        return Ok(vec![nginx(setup, "nginx-a", &format!("listen {entry}{h2};"), http1, "")?]);
    };
    let (b_listen, a_calls) = match hop.tls {
        true => (
            format!(
                "listen {} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_client_certificate {};\n    ssl_verify_client on;\n    ssl_protocols TLSv1.3;",
                hop.listen,
                path(&pki.backend.cert),
                path(&pki.backend.key),
                path(&pki.ca),
            ),
            format!(
                "proxy_ssl_certificate {};\n      proxy_ssl_certificate_key {};\n      proxy_ssl_protocols TLSv1.3;\n      proxy_ssl_session_reuse on;",
                path(&pki.client.cert),
                path(&pki.client.key),
            ),
        ),
        false => (format!("listen {};", hop.listen), String::new()),
    };
    let b = nginx(setup, "nginx-b", &b_listen, http1, "")?;
    let a = nginx(setup, "nginx-a", &format!("listen {entry}{h2};"), hop.listen, &a_calls)?;
    Ok(vec![a, b])
}

/// One nginx listening as `listen` (the directive and its TLS settings) and proxying to `next`,
/// over TLS when `tls` (the `proxy_ssl_*` directives) is not empty.
fn nginx(setup: &Setup, name: &str, listen: &str, next: SocketAddr, tls: &str) -> Result<Proc> {
    let dir = path(setup.dir);
    let scheme = if tls.is_empty() { "http" } else { "https" };
    let config = format!(
        "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {dir}/{name}.pid;\nerror_log {dir}/{name}.err;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n  upstream next {{\n    server {next};\n    keepalive 128;\n    keepalive_requests 1000000;\n  }}\n  server {{\n    {listen}\n    location / {{\n      proxy_pass {scheme}://next;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      {tls}\n    }}\n  }}\n}}\n"
    );
    let file = setup.dir.join(format!("{name}.conf"));
    std::fs::write(&file, config)?;
    Proc::spawn(setup.dir, name, &tool("nginx"), &["-c", path(&file)], &[])
}
