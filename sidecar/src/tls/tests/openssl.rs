//! A real TLS client, `openssl s_client`, against the inbound server config: without a client
//! certificate it is refused, and without a mesh ALPN; with both it gets through (so the
//! refusals bite).

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

use super::pki::{id, Ca, Validity};
use crate::tls::{accept_mesh, FailureReason, MeshConfigs, MeshError};

/// Serves one connection with `server` (reads `ping`, answers `pong`) while `s_client` runs
/// with `args`; returns the server's verdict and what `s_client` printed.
async fn s_client(server: &MeshConfigs, args: &[&str]) -> (Result<(), MeshError>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let connect = listener.local_addr().unwrap().to_string();
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-tls1_3", "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl is installed");
    child.stdin.take().unwrap().write_all(b"ping").await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let verdict = match accept_mesh(server, Bytes::new(), tcp).await {
        Ok(mut inbound) => {
            assert_eq!(inbound.peer, id("web"));
            let mut buf = [0u8; 4];
            inbound.stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            inbound.stream.write_all(b"pong\n").await.unwrap();
            inbound.stream.shutdown().await.unwrap();
            Ok(())
        }
        Err(e) => Err(e),
    };
    let output =
        tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
    let printed =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (verdict, printed)
}

#[tokio::test]
async fn openssl_s_client_needs_a_client_certificate_and_a_mesh_alpn() {
    let ca = Ca::new("mesh");
    let server = ca.configs("api");
    let dir = tempfile::tempdir().unwrap();
    let [bundle, leaf, key, intermediate] = ["bundle.pem", "leaf.pem", "key.pem", "intermediate.pem"]
        .map(|name| dir.path().join(name).to_str().unwrap().to_owned());
    let [leaf_pem, key_pem, intermediate_pem] = ca.leaf_pem("web", Validity::FRESH);
    for (path, pem) in
        [(&bundle, ca.root_pem()), (&leaf, leaf_pem), (&key, key_pem), (&intermediate, intermediate_pem)]
    {
        std::fs::write(path, pem).unwrap();
    }
    let verify = ["-CAfile", bundle.as_str(), "-verify_return_error"];
    let alpn = ["-alpn", "pilotfish.io/tcp"];
    let cert = ["-cert", leaf.as_str(), "-cert_chain", intermediate.as_str(), "-key", key.as_str()];

    let (verdict, printed) = s_client(&server, &[&verify[..], &alpn].concat()).await;
    assert_eq!(verdict.unwrap_err().reason(), FailureReason::NoClientCert, "{printed}");
    assert!(printed.contains("certificate required"), "{printed}");
    assert!(!printed.contains("pong"), "{printed}");

    let (verdict, printed) = s_client(&server, &[&verify[..], &cert].concat()).await;
    assert_eq!(verdict.unwrap_err().reason(), FailureReason::NonMeshTls, "{printed}");
    assert!(!printed.contains("pong"), "{printed}");

    let (verdict, printed) = s_client(&server, &[&verify[..], &alpn, &cert].concat()).await;
    verdict.unwrap();
    assert!(printed.contains("pong"), "{printed}");
}
