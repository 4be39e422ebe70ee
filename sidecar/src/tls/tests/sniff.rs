//! The ClientHello sniff on real hellos: mesh TLS, other TLS, plaintext, a partial hello, and a
//! sniffed prefix that still completes the handshake.

use std::sync::Arc;

use bytes::BytesMut;
use rustls::{ClientConfig, ClientConnection};
use tokio::io::AsyncReadExt;

use super::pki::{id, tcp_pair, Ca};
use crate::tls::config::unused_server_name;
use crate::tls::{accept_mesh, connect_mesh, sniff, FailureReason, MeshAlpn, Sniff};

/// The first bytes a client with `config` sends.
fn hello(config: &Arc<ClientConfig>) -> Vec<u8> {
    let mut conn = ClientConnection::new(config.clone(), unused_server_name()).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

fn offering(base: &Arc<ClientConfig>, alpns: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = (**base).clone();
    config.alpn_protocols = alpns.iter().map(|alpn| alpn.to_vec()).collect();
    Arc::new(config)
}

#[test]
fn sniff_tells_mesh_tls_from_other_tls_and_plaintext() {
    let configs = Ca::new("mesh").configs("web");
    for alpn in MeshAlpn::ALL {
        assert_eq!(sniff(&hello(configs.client(alpn))), Sniff::Mesh(alpn));
    }
    let base = configs.client(MeshAlpn::Http2);
    // A mesh protocol among others still marks a sidecar.
    assert_eq!(sniff(&hello(&offering(base, &[b"h2", b"pilotfish.io/tcp"]))), Sniff::Mesh(MeshAlpn::Tcp));
    // The app's own TLS: a browser or gRPC client offering h2, or no ALPN at all.
    for alpns in [&[b"h2".as_slice(), b"http/1.1"][..], &[]] {
        let sniffed = sniff(&hello(&offering(base, alpns)));
        assert_eq!(sniffed, Sniff::OtherTls);
        assert_eq!(sniffed.refusal(), Some(FailureReason::NonMeshTls));
    }
    for plaintext in
        [&b"GET / HTTP/1.1\r\nhost: api\r\n\r\n"[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x16\x01\x00"]
    {
        let sniffed = sniff(plaintext);
        assert_eq!(sniffed, Sniff::Plaintext);
        assert_eq!(sniffed.refusal(), Some(FailureReason::Plaintext));
    }
}

#[test]
fn a_partial_hello_asks_for_the_rest_of_its_record() {
    let full = hello(Ca::new("mesh").configs("web").client(MeshAlpn::Tcp));
    assert_eq!(full.len(), 5 + usize::from(u16::from_be_bytes([full[3], full[4]])), "one record");
    for cut in [0, 1, 4] {
        assert_eq!(sniff(&full[..cut]), Sniff::Incomplete { need: 5 });
    }
    for cut in [5, 6, full.len() / 2, full.len() - 1] {
        let sniffed = sniff(&full[..cut]);
        assert_eq!(sniffed, Sniff::Incomplete { need: full.len() }, "cut at {cut}");
        assert_eq!(sniffed.refusal(), None);
    }
}

/// The inbound side reads the hello as protocol detection would, sniffs it, and hands exactly
/// those bytes to the handshake: the sniff left nothing missing.
#[tokio::test]
async fn a_sniffed_prefix_still_completes_the_handshake() {
    let ca = Ca::new("mesh");
    let (server, client) = (ca.configs("api"), ca.configs("web"));
    let (dialled, mut accepted) = tcp_pair().await;
    let dial = tokio::spawn(async move {
        connect_mesh(&client, dialled, &id("api"), MeshAlpn::Tcp).await.map(|c| c.peer)
    });
    let mut prefix = BytesMut::new();
    let alpn = loop {
        assert!(accepted.read_buf(&mut prefix).await.unwrap() > 0);
        match sniff(&prefix) {
            Sniff::Mesh(alpn) => break alpn,
            Sniff::Incomplete { need } => assert!(need > prefix.len()),
            other => panic!("sniffed {other:?}"),
        }
    };
    assert_eq!(alpn, MeshAlpn::Tcp);
    let inbound = accept_mesh(&server, prefix.freeze(), accepted).await.unwrap();
    assert_eq!((inbound.peer, inbound.alpn), (id("web"), MeshAlpn::Tcp));
    assert_eq!(dial.await.unwrap().unwrap(), id("api"));
}
