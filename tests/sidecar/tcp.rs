//! Opaque TCP: byte-exact both ways with half-close, and server-speaks-first protocols.

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const SIZE: usize = 100 * 1024 * 1024;

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Reads everything until the client half-closes, then answers with 100 MiB of its own and the
/// sha256 of what it received, and closes.
async fn half_close_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        s.write_all(&pseudo_random(2, SIZE)).await.unwrap();
        s.write_all(&hasher.finalize()).await.unwrap();
        s.shutdown().await.unwrap();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_byte_exact_with_half_close() {
    let server = half_close_server().await;
    let port = free_port();
    let config = format!(
        "{}{}",
        sidecar_doc(None, ""),
        service_doc(
            "blob",
            &[server],
            &format!("  ports: [{{port: 9000, protocol: tcp}}]\n  localPort: {port}\n")
        )
    );
    let sc = Sidecar::start(&config);

    let sent = pseudo_random(1, SIZE);
    let expected_back = Sha256::digest(pseudo_random(2, SIZE));
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let upload = {
        let sent = sent.clone();
        tokio::spawn(async move {
            wr.write_all(&sent).await.unwrap();
            wr.shutdown().await.unwrap(); // half-close: we still read below
            wr
        })
    };
    let mut back = Vec::with_capacity(SIZE + 32);
    tokio::time::timeout(Duration::from_secs(120), rd.read_to_end(&mut back)).await.unwrap().unwrap();
    let _wr = upload.await.unwrap();
    assert_eq!(back.len(), SIZE + 32);
    assert_eq!(Sha256::digest(&back[..SIZE]), expected_back, "server→client bytes differ");
    assert_eq!(&back[SIZE..], Sha256::digest(&sent).as_slice(), "client→server bytes differ");

    let m = sc.metrics().await;
    let flow = |f| sample(&m, "pilotfish_tcp_bytes_total", &[("service", "blob.default"), ("flow", f)]);
    assert_eq!(flow("client_to_server"), SIZE as f64);
    assert_eq!(flow("server_to_client"), (SIZE + 32) as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_on_a_declared_tcp_port_is_not_held_by_detection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"220 smtp.example ESMTP ready\r\n").await.unwrap();
        let mut line = [0u8; 6];
        s.read_exact(&mut line).await.unwrap();
        s.write_all(b"221 bye\r\n").await.unwrap();
    });
    let port = free_port();
    // Detection would wait 5 minutes for a client that waits for the greeting.
    let config = format!(
        "{}{}",
        sidecar_doc(None, "  timeouts: {detect: 5m}\n"),
        service_doc(
            "smtp",
            &[server],
            &format!("  ports: [{{port: 25, protocol: tcp}}]\n  localPort: {port}\n")
        )
    );
    let _sc = Sidecar::start(&config);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut greeting = [0u8; 30];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut greeting))
        .await
        .expect("the greeting arrived without waiting for detection")
        .unwrap();
    assert_eq!(&greeting, b"220 smtp.example ESMTP ready\r\n");
    s.write_all(b"QUIT\r\n").await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"221 bye\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_detected_and_passed_through_opaque() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success());
    let tls_port = free_port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &tls_port.to_string()])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(tls_addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "openssl s_server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let port = free_port();
    let config = format!(
        "{}{}",
        sidecar_doc(None, ""),
        service_doc("secure", &[tls_addr], &format!("  localPort: {port}\n"))
    );
    let sc = Sidecar::start(&config);
    // The sidecar detects a ClientHello and forwards the bytes untouched: the handshake is
    // end to end with the server's own certificate.
    let r = curl(&["-k", &format!("https://127.0.0.1:{port}/")]).await;
    assert_eq!(r.status, 200);
    let m = sc.metrics().await;
    let to_client = sample(
        &m,
        "pilotfish_tcp_bytes_total",
        &[("service", "secure.default"), ("flow", "server_to_client")],
    );
    assert!(to_client > 1000.0, "TLS bytes did not flow through the sidecar: {to_client}");
    let _ = server.kill();
    let _ = server.wait();
}

/// Opaque TCP balancing skips what HTTP balancing skips: an endpoint failing its health check,
/// and one whose circuit breaker opened on failed connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_skips_unhealthy_and_ejected_endpoints() {
    let (good, sick) = (backend("good").await, backend("sick").await);
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    sick.fail_with(503);
    let (checked, guarded) = (free_port(), free_port());
    let policy = |name: &str, spec: &str| {
        format!("---\napiVersion: pilotfish.io/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: Service, name: {name}}}\n{spec}")
    };
    let tcp_port = |port| format!("  ports: [{{port: 9000, protocol: tcp}}]\n  localPort: {port}\n");
    let config = format!(
        "{}{}{}{}{}",
        sidecar_doc(None, ""),
        service_doc("checked", &[good.addr, sick.addr], &tcp_port(checked)),
        policy("checked", "  healthCheck: {path: /healthz, interval: 100ms, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 1}\n"),
        service_doc("guarded", &[good.addr, dead], &tcp_port(guarded)),
        policy("guarded", "  circuitBreaker: {consecutiveFailures: 1}\n"),
    );
    let sc = Sidecar::start(&config);
    // Let the health checks find the sick endpoint out.
    while sick.faults.probes.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for port in [checked, guarded] {
        for _ in 0..6 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: blob\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        }
    }
    assert_eq!((good.served(), sick.served()), (12, 0), "the unhealthy endpoint got no connections");
    let m = sc.metrics().await;
    let dead_label = dead.to_string();
    let at_dead = [("service", "guarded.default"), ("endpoint", dead_label.as_str())];
    assert_eq!(sample(&m, "pilotfish_circuit_state", &at_dead), 1.0, "a failed connect opened the breaker");
    let opened = [("service", "guarded.default"), ("endpoint", dead_label.as_str()), ("to", "open")];
    assert_eq!(sample(&m, "pilotfish_circuit_transitions_total", &opened), 1.0, "and then it took no more");
}
