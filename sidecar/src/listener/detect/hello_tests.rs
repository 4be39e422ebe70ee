//! Reading a ClientHello on the inbound port with real hellos: one that arrives in pieces, one
//! that stops half-way, one too large for a sidecar's, and mesh vs other ALPNs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use super::{detect, read_hello, Detected};
use crate::tls::config::unused_server_name;
use crate::tls::sniff::{Sniff, MAX_HELLO};
use crate::tls::tests::pki::Ca;
use crate::tls::MeshAlpn;

/// Every byte a client offering `alpns` sends before it hears back (one or more records).
fn hello(alpns: Vec<Vec<u8>>) -> Vec<u8> {
    let mut config: ClientConfig = (**Ca::new("mesh").configs("web").client(MeshAlpn::Http2)).clone();
    config.alpn_protocols = alpns;
    let mut conn = ClientConnection::new(Arc::new(config), unused_server_name()).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Detection then the hello, as the inbound listener runs them, on what `send` writes.
async fn inbound<F>(send: impl FnOnce(DuplexStream) -> F) -> (Sniff, Vec<u8>)
where
    F: Future<Output = ()> + Send + 'static,
{
    let (mut client, peer) = tokio::io::duplex(64 * 1024);
    let writer = tokio::spawn(send(peer));
    let deadline = Instant::now() + Duration::from_secs(10);
    let (found, prefix) = detect(&mut client, Duration::from_secs(10)).await.unwrap();
    assert_eq!(found, Detected::Tls);
    let (sniffed, bytes) = read_hello(&mut client, prefix, deadline).await.unwrap();
    drop(writer);
    (sniffed, bytes.to_vec())
}

#[tokio::test(start_paused = true)]
async fn a_hello_in_pieces_is_read_to_its_end_and_kept_whole() {
    let sent = hello(vec![b"pilotfish.io/h2".to_vec()]);
    let pieces = sent.clone();
    let (sniffed, read) = inbound(|mut peer| async move {
        for piece in pieces.chunks(7) {
            peer.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(sniffed, Sniff::Mesh(MeshAlpn::Http2));
    assert_eq!(read, sent, "every byte is kept for the handshake to replay");
}

#[tokio::test(start_paused = true)]
async fn a_hello_that_stops_half_way_is_not_a_sidecars_once_the_deadline_passes() {
    let sent = hello(vec![b"pilotfish.io/h2".to_vec()]);
    let half = sent[..sent.len() / 2].to_vec();
    let started = Instant::now();
    let (sniffed, read) = inbound(|mut peer| async move {
        peer.write_all(&half).await.unwrap();
        // ...and nothing more, without closing.
        std::future::pending::<()>().await;
    })
    .await;
    assert_eq!(sniffed, Sniff::OtherTls);
    assert_eq!(read, sent[..sent.len() / 2]);
    assert_eq!(started.elapsed(), Duration::from_secs(10), "the detect timeout bounds the wait");
}

#[tokio::test(start_paused = true)]
async fn a_large_hello_is_read_but_one_larger_than_a_record_is_refused_unread() {
    // Kilobytes of ALPN names: larger than detection's first read, still one record.
    let mut alpns: Vec<Vec<u8>> = (0..50).map(|i| format!("app-protocol-{i:0>180}").into_bytes()).collect();
    alpns.push(b"pilotfish.io/tcp".to_vec());
    let sent = hello(alpns.clone());
    assert!(sent.len() > 8 * 1024 && sent.len() < MAX_HELLO, "{}", sent.len());
    let to_send = sent.clone();
    let (sniffed, read) = inbound(|mut peer| async move { peer.write_all(&to_send).await.unwrap() }).await;
    assert_eq!((sniffed, read.len()), (Sniff::Mesh(MeshAlpn::Tcp), sent.len()));

    // More than one record of names: no sidecar sends that, and nothing past the first
    // record's end (at most MAX_HELLO bytes) is read to find out.
    alpns.splice(0..0, (0..60).map(|i| format!("more-protocol-{i:0>200}").into_bytes()));
    let huge = hello(alpns);
    assert!(huge.len() > MAX_HELLO, "{}", huge.len());
    let (sniffed, read) = inbound(|mut peer| async move {
        peer.write_all(&huge).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    assert_eq!(sniffed, Sniff::OtherTls);
    assert!(read.len() <= MAX_HELLO, "read {} bytes", read.len());
}

#[tokio::test(start_paused = true)]
async fn only_a_mesh_alpn_marks_a_sidecar() {
    for (alpns, expected) in [
        (vec![b"h2".to_vec(), b"http/1.1".to_vec()], Sniff::OtherTls),
        (vec![], Sniff::OtherTls),
        (vec![b"h2".to_vec(), b"pilotfish.io/tcp".to_vec()], Sniff::Mesh(MeshAlpn::Tcp)),
        (vec![b"pilotfish.io/h2".to_vec()], Sniff::Mesh(MeshAlpn::Http2)),
    ] {
        let sent = hello(alpns.clone());
        let (sniffed, _) = inbound(|mut peer| async move { peer.write_all(&sent).await.unwrap() }).await;
        assert_eq!(sniffed, expected, "{alpns:?}");
    }
}
