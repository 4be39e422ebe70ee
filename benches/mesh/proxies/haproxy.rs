//! HAProxy (Debian's 2.6), `nbthread 1`, keep-alive both ways: the peer a user would otherwise
//! build by hand. A pair speaks the load's protocol between the two (HTTP/2 over ALPN with
//! mTLS), mutual TLS 1.3 with the mesh leaves when the pair is encrypted; `mode tcp` for TCP.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;

use super::{Hop, Setup};
use crate::pki::path;
use crate::procs::Proc;
use crate::scenario::Protocol;

pub fn start(
    setup: &Setup,
    protocol: Protocol,
    entry: SocketAddr,
    hop: Option<&Hop>,
    target: SocketAddr,
) -> Result<Vec<Proc>> {
    let pki = setup.pki;
    let (ca, h2) = (path(&pki.ca), protocol == Protocol::Http2);
    let Some(hop) = hop else {
        let a = haproxy(
            setup,
            "haproxy-a",
            &config(protocol, &bind(entry, h2, None), &server(target, h2, None)),
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
        &config(protocol, &bind(hop.listen, h2, callee_tls), &server(target, h2, None)),
    )?;
    let a = haproxy(
        setup,
        "haproxy-a",
        &config(protocol, &bind(entry, h2, None), &server(hop.listen, h2, caller_tls)),
    )?;
    Ok(vec![a, b])
}

/// A `bind` line; HTTP/2 is h2c in plaintext and ALPN `h2` over TLS.
fn bind(addr: SocketAddr, h2: bool, tls: Option<String>) -> String {
    match (h2, tls) {
        (false, None) => format!("bind {addr}"),
        (true, None) => format!("bind {addr} proto h2"),
        (false, Some(tls)) => format!("bind {addr} {tls}"),
        (true, Some(tls)) => format!("bind {addr} {tls} alpn h2"),
    }
}

fn server(addr: SocketAddr, h2: bool, tls: Option<String>) -> String {
    match (h2, tls) {
        (false, None) => format!("server next {addr}"),
        (true, None) => format!("server next {addr} proto h2"),
        (false, Some(tls)) => format!("server next {addr} {tls}"),
        (true, Some(tls)) => format!("server next {addr} {tls} alpn h2"),
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
    Proc::spawn(setup.dir, name, Path::new("haproxy"), &["-f", path(&file), "-db"], &[])
}
