//! Mesh handshakes over loopback TCP: who is let in, who is refused, and with which reason.

use std::sync::Arc;

use bytes::Bytes;
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::pki::{handshake, id, provider, reason, skewed, tcp_pair, Ca, Validity};
use crate::tls::config::unused_server_name;
use crate::tls::verify::MeshServerVerifier;
use crate::tls::{accept_mesh, FailureReason, MeshAlpn, MeshConfigs, MeshError, TrustBundle};

/// Both ends of an established connection carry bytes both ways.
async fn exchange(
    inbound: &mut (impl AsyncRead + AsyncWrite + Unpin),
    outbound: &mut (impl AsyncRead + AsyncWrite + Unpin),
) {
    let mut buf = [0u8; 4];
    outbound.write_all(b"ping").await.unwrap();
    inbound.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    inbound.write_all(b"pong").await.unwrap();
    outbound.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn mutual_handshake_names_both_peers_and_the_protocol() {
    let ca = Ca::new("mesh");
    let (server, client) = (ca.configs("api"), ca.configs("web"));
    for alpn in MeshAlpn::ALL {
        let (inbound, outbound) = handshake(&server, &client, &id("api"), alpn).await;
        let (mut inbound, mut outbound) = (inbound.unwrap(), outbound.unwrap());
        assert_eq!(inbound.peer, id("web"));
        assert_eq!(outbound.peer, id("api"));
        assert_eq!((inbound.alpn, outbound.alpn), (alpn, alpn));
        exchange(&mut inbound.stream, &mut outbound.stream).await;
    }
}

/// No session is resumed: a second connection verifies the peer again (against the bundle in
/// force then), over TLS 1.3.
#[tokio::test]
async fn every_connection_is_a_full_tls13_handshake() {
    let ca = Ca::new("mesh");
    let (server, client) = (ca.configs("api"), ca.configs("web"));
    for _ in 0..2 {
        let (inbound, outbound) = handshake(&server, &client, &id("api"), MeshAlpn::Http2).await;
        let (mut inbound, mut outbound) = (inbound.unwrap(), outbound.unwrap());
        // Reading gives the client any ticket the server might have sent.
        exchange(&mut inbound.stream, &mut outbound.stream).await;
        let state = outbound.stream.get_ref().1;
        assert_eq!(state.handshake_kind(), Some(HandshakeKind::Full));
        assert_eq!(state.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    }
}

#[tokio::test]
async fn a_peer_of_another_ca_is_refused_at_either_end() {
    let (mesh, other) = (Ca::new("mesh"), Ca::new("other"));
    // The stranger trusts both roots, so only the mesh side's refusal is tested.
    let both = TrustBundle::from_der(vec![mesh.root(), other.root()]).unwrap();
    let stranger = MeshConfigs::new(&other.leaf("api", Validity::FRESH), &both, &provider()).unwrap();
    let (inbound, outbound) = handshake(&stranger, &mesh.configs("web"), &id("api"), MeshAlpn::Http2).await;
    assert_eq!(reason(outbound), FailureReason::UnknownCa);
    // The refused server hears why, by alert.
    assert_eq!(reason(inbound), FailureReason::UnknownCa);

    let (inbound, _outbound) = handshake(&mesh.configs("api"), &stranger, &id("api"), MeshAlpn::Http2).await;
    assert_eq!(reason(inbound), FailureReason::UnknownCa);
}

#[tokio::test]
async fn expired_and_not_yet_valid_leaves_are_refused_with_their_reason() {
    let ca = Ca::new("mesh");
    let hour = Validity { not_before: -60, not_after: 3600 };
    // Seen from two hours on, an hour's leaf has expired: outbound, the server's...
    let server = MeshConfigs::new(&ca.leaf("api", hour), &ca.bundle(), &provider()).unwrap();
    let late_client = skewed(&ca.leaf("web", hour), &ca.bundle(), 2 * 3600);
    let (_, outbound) = handshake(&server, &late_client, &id("api"), MeshAlpn::Tcp).await;
    assert_eq!(reason(outbound), FailureReason::Expired);
    // ...and inbound, the client's.
    let late_server = skewed(&ca.leaf("api", hour), &ca.bundle(), 2 * 3600);
    let client = MeshConfigs::new(&ca.leaf("web", hour), &ca.bundle(), &provider()).unwrap();
    let (inbound, _) = handshake(&late_server, &client, &id("api"), MeshAlpn::Tcp).await;
    assert_eq!(reason(inbound), FailureReason::Expired);

    // A leaf that starts in an hour is not valid yet, at either end.
    let future = Validity { not_before: 3600, not_after: 7200 };
    let server = MeshConfigs::new(&ca.leaf("api", future), &ca.bundle(), &provider()).unwrap();
    let (_, outbound) = handshake(&server, &ca.configs("web"), &id("api"), MeshAlpn::Tcp).await;
    assert_eq!(reason(outbound), FailureReason::NotYetValid);
    let client = MeshConfigs::new(&ca.leaf("web", future), &ca.bundle(), &provider()).unwrap();
    let (inbound, _) = handshake(&ca.configs("api"), &client, &id("api"), MeshAlpn::Tcp).await;
    assert_eq!(reason(inbound), FailureReason::NotYetValid);
}

/// The CA backdates NotBefore by a minute, so a peer whose clock is 30 s behind accepts a
/// fresh leaf; 90 s behind it does not, which shows the backdate is what saves the 30 s case.
#[tokio::test]
async fn a_leaf_backdated_a_minute_survives_30s_of_clock_skew_but_not_90s() {
    let ca = Ca::new("mesh");
    let fresh = Validity { not_before: -60, not_after: 3600 };
    for (skew, accepted) in [(-30, true), (-90, false)] {
        // Outbound: the dialling sidecar's clock is behind the CA's.
        let server = MeshConfigs::new(&ca.leaf("api", fresh), &ca.bundle(), &provider()).unwrap();
        let client = skewed(&ca.leaf("web", fresh), &ca.bundle(), skew);
        let (_, outbound) = handshake(&server, &client, &id("api"), MeshAlpn::Http2).await;
        // Inbound: the accepting sidecar's clock is behind.
        let server = skewed(&ca.leaf("api", fresh), &ca.bundle(), skew);
        let client = MeshConfigs::new(&ca.leaf("web", fresh), &ca.bundle(), &provider()).unwrap();
        let (inbound, _) = handshake(&server, &client, &id("api"), MeshAlpn::Http2).await;
        if accepted {
            assert_eq!(outbound.unwrap().peer, id("api"), "{skew}s");
            assert_eq!(inbound.unwrap().peer, id("web"), "{skew}s");
        } else {
            assert_eq!(reason(outbound), FailureReason::NotYetValid, "{skew}s");
            assert_eq!(reason(inbound), FailureReason::NotYetValid, "{skew}s");
        }
    }
}

#[tokio::test]
async fn a_trusted_server_with_another_identity_is_a_mismatch() {
    let ca = Ca::new("mesh");
    let (_, outbound) =
        handshake(&ca.configs("billing"), &ca.configs("web"), &id("api"), MeshAlpn::Http2).await;
    let err = outbound.unwrap_err();
    assert_eq!(err.reason(), FailureReason::BadIdentity);
    assert!(
        matches!(&err, MeshError::IdentityMismatch { expected, found } if **expected == id("api") && **found == id("billing")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ca = Ca::new("mesh");
    let verifier =
        MeshServerVerifier::new(ca.bundle().roots().clone(), provider().signature_verification_algorithms);
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![MeshAlpn::Tcp.as_bytes().to_vec()];
    let (dialled, accepted) = tcp_pair().await;
    let server = ca.configs("api");
    let (inbound, outbound) = tokio::join!(
        accept_mesh(&server, Bytes::new(), accepted),
        TlsConnector::from(Arc::new(config)).connect(unused_server_name(), dialled)
    );
    assert_eq!(reason(inbound), FailureReason::NoClientCert);
    // TLS 1.3: the client has finished before the server judged it; it learns on its first read.
    let err = outbound.unwrap().read(&mut [0u8; 1]).await.unwrap_err();
    assert_eq!(FailureReason::of_io(&err), FailureReason::NoClientCert);
}

#[tokio::test]
async fn a_bundle_of_two_roots_accepts_leaves_of_either() {
    let (old, new) = (Ca::new("old"), Ca::new("new"));
    let both = TrustBundle::from_der(vec![old.root(), new.root()]).unwrap();
    let server = MeshConfigs::new(&old.leaf("api", Validity::FRESH), &both, &provider()).unwrap();
    let client = MeshConfigs::new(&new.leaf("web", Validity::FRESH), &both, &provider()).unwrap();
    let (inbound, outbound) = handshake(&server, &client, &id("api"), MeshAlpn::Http2).await;
    let (mut inbound, mut outbound) = (inbound.unwrap(), outbound.unwrap());
    assert_eq!((&inbound.peer, &outbound.peer), (&id("web"), &id("api")));
    exchange(&mut inbound.stream, &mut outbound.stream).await;

    // Without the overlap the old root alone refuses the new leaf: the bundle let it in.
    let old_only = MeshConfigs::new(&old.leaf("api", Validity::FRESH), &old.bundle(), &provider()).unwrap();
    let (inbound, _) = handshake(&old_only, &client, &id("api"), MeshAlpn::Http2).await;
    assert_eq!(reason(inbound), FailureReason::UnknownCa);
}
