//! HAProxy (Debian's 2.6), `nbthread 1`, keep-alive both ways: the peer a user would otherwise
//! build by hand. A pair speaks the load's protocol between the two (HTTP/2 over ALPN with
//! mTLS; gRPC is HTTP/2), mutual TLS 1.3 with the mesh leaves when the pair is encrypted; `mode tcp` for TCP.

use std::net::SocketAddr;

use anyhow::Result;

use super::{Route, Setup};
use crate::pki::path;
use crate::procs::{tool, Proc};
use crate::scenario::Protocol;

pub fn start(setup: &Setup, route: &Route) -> Result<Vec<Proc>> {
    let Route { protocol, entry, target, .. } = *route;
    let pki = setup.pki;
    let (ca, h2) = (path(&pki.ca), matches!(protocol, Protocol::Http2 | Protocol::Grpc));
    let Some(hop) = &route.hop else {
        let a = haproxy(
            setup,
            "haproxy-a",
            &config(protocol, &line("bind", entry, h2, None), &line("server next", target, h2, None)),
        )?;
        return Ok(vec![a]);
    };
    let callee_tls = hop.tls.then(|| {
        format!("ssl crt {} ca-file {ca} verify required ssl-min-ver TLSv1.3", path(&pki.backend.combined))
    });
    let caller_tls = hop.tls.then(|| {
        format!("ssl crt {} ca-file {ca} verify required ssl-min-ver TLSv1.3", path(&pki.client.combined))
    });
    let b = haproxy(
        setup,
        "haproxy-b",
        &config(protocol, &line("bind", hop.listen, h2, callee_tls), &line("server next", target, h2, None)),
    )?;
    let a = haproxy(
        setup,
        "haproxy-a",
        &config(protocol, &line("bind", entry, h2, None), &line("server next", hop.listen, h2, caller_tls)),
    )?;
    Ok(vec![a, b])
}

/// A `bind` (`keyword` "bind") or `server` ("server next") line; HTTP/2 is h2c in plaintext
/// and ALPN `h2` over TLS.
fn line(keyword: &str, addr: SocketAddr, h2: bool, tls: Option<String>) -> String {
    match (h2, tls) {
        (false, None) => format!("{keyword} {addr}"),
        (true, None) => format!("{keyword} {addr} proto h2"),
        (false, Some(tls)) => format!("{keyword} {addr} {tls}"),
        (true, Some(tls)) => format!("{keyword} {addr} {tls} alpn h2"),
    }
}

fn config(protocol: Protocol, bind: &str, server: &str) -> String {
    let mode = if protocol == Protocol::Tcp { "tcp" } else { "http" };
    format!(
        "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode {mode}\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\nfrontend fe\n  {bind}\n  default_backend be\nbackend be\n  {server}\n"
    )
}

fn haproxy(setup: &Setup, name: &str, config: &str) -> Result<Proc> {
    let file = setup.dir.join(format!("{name}.cfg"));
    std::fs::write(&file, config)?;
    Proc::spawn(setup.dir, name, &tool("haproxy"), &["-f", path(&file), "-db"], &[])
}
