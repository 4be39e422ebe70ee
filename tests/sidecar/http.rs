//! HTTP proxying: routing by host and local port, inbound forwarding, HTTP/1.1 and HTTP/2,
//! streaming bodies, keep-alive pooling, hop-by-hop headers, and bad input.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_outbound_routes_by_host_over_http1_and_http2() {
    let users = backend("users").await;
    let billing = backend("billing").await;
    let config = format!(
        "{}{}{}",
        sidecar_doc(None, ""),
        service_doc("users", &[users.addr], ""),
        service_doc("billing", &[billing.addr], "  ports: [{port: 80, protocol: http}]\n"),
    );
    let sc = Sidecar::start(&config);
    let url = format!("http://{}/api/users?x=1", sc.outbound);

    for host in ["users", "users:80", "users.default", "users.default.svc.cluster.local:80"] {
        let r = curl(&["-H", &format!("Host: {host}"), &url]).await;
        assert_eq!(r.status, 200, "{host}");
        let j = r.json();
        assert_eq!(j["backend"], "users", "{host}");
        assert_eq!(j["uri"], "/api/users?x=1");
        assert_eq!(j["headers"]["host"], host);
        assert_eq!(j["version"], "HTTP/1.1");
    }

    // HTTP/2 with prior knowledge; an undeclared protocol stays HTTP/2 to the endpoint.
    let r = curl(&["--http2-prior-knowledge", "-H", "Host: users", &url]).await;
    assert_eq!((r.status, r.version.as_str()), (200, "HTTP/2"));
    let j = r.json();
    assert_eq!((j["backend"].as_str(), j["version"].as_str()), (Some("users"), Some("HTTP/2.0")));
    assert_eq!(j["uri"], "http://users/api/users?x=1", "the caller's authority is kept");

    // A port declared `http` is spoken to in HTTP/1.1 whatever the caller used.
    let r = curl(&["--http2-prior-knowledge", "-H", "Host: billing", &url]).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!((j["backend"].as_str(), j["version"].as_str()), (Some("billing"), Some("HTTP/1.1")));
    assert_eq!(j["headers"]["host"], "billing");

    let r = curl(&["-H", "Host: nobody.default", &url]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("pilotfish-error"), Some("no-route"));
    let r = curl(&["--http2-prior-knowledge", "-H", "Host: nobody", &url]).await;
    assert_eq!((r.status, r.header("pilotfish-error")), (404, Some("no-route")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_port_sends_everything_to_its_service() {
    let users = backend("users").await;
    let port = free_port();
    let config = format!(
        "{}{}",
        sidecar_doc(None, ""),
        service_doc("users", &[users.addr], &format!("  localPort: {port}\n"))
    );
    let sc = Sidecar::start(&config);
    for args in [vec![], vec!["--http2-prior-knowledge"]] {
        let mut args: Vec<&str> = args;
        let url = format!("http://127.0.0.1:{port}/anything");
        args.extend(["-H", "Host: whatever.example", &url]);
        let r = curl(&args).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["backend"], "users");
    }
    drop(sc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_forwards_to_the_app_and_records_the_peer() {
    let app = backend("app").await;
    let sc = Sidecar::start(&sidecar_doc(Some(app.addr), PLAINTEXT_INBOUND));
    let inbound = sc.inbound.expect("inbound listener");
    let url = format!("http://{inbound}/hello");

    let r = curl(&["-H", "X-Forwarded-For: 203.0.113.9", &url]).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["backend"], "app");
    assert_eq!(j["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(j["headers"]["forwarded"], "for=127.0.0.1;proto=http");

    let r = curl(&["--http2-prior-knowledge", &url]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_and_connections_are_reused() {
    let (users, sc) = users_behind_a_sidecar("").await;
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload.bin");
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&upload, &data).unwrap();
    let file = format!("@{}", upload.display());
    let echo = format!("http://{}/echo", sc.outbound);

    // Chunked request body, streamed back.
    let r =
        curl(&["-H", "Host: users", "-H", "Transfer-Encoding: chunked", "--data-binary", &file, &echo]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == data, "chunked echo differs ({} bytes back)", r.body.len());

    // Expect: 100-continue is honoured (curl waits for the 100 before sending the body).
    let r = curl(&["-H", "Host: users", "-H", "Expect: 100-continue", "--data-binary", &file, &echo]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == data);

    // HTTP/2 upload and download with flow control.
    let r = curl(&["--http2-prior-knowledge", "-H", "Host: users", "--data-binary", &file, &echo]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == data);

    // Five requests on one client connection → one pooled connection to the endpoint.
    let before = users.connections.load(std::sync::atomic::Ordering::SeqCst);
    let url = format!("http://{}/pooled", sc.outbound);
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-w", "%{http_code}\n", "-H", "Host: users"])
        .args((0..5).flat_map(|_| ["-o", "/dev/null", url.as_str()]))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200\n".repeat(5));
    let after = users.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after - before <= 1, "{} new endpoint connections for 5 keep-alive requests", after - before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_at_the_proxy() {
    let (_users, sc) = users_behind_a_sidecar("").await;
    let r = curl(&[
        "-H",
        "Host: users",
        "-H",
        "Connection: keep-alive, X-Secret",
        "-H",
        "X-Secret: 1",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "Proxy-Connection: keep-alive",
        "-H",
        "X-End-To-End: kept",
        &format!("http://{}/", sc.outbound),
    ])
    .await;
    let headers = &r.json()["headers"];
    for gone in ["x-secret", "keep-alive", "proxy-connection"] {
        assert!(headers.get(gone).is_none(), "{gone} was forwarded: {headers}");
    }
    assert_eq!(headers["x-end-to-end"], "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_through_http2() {
    let (_users, sc) = users_behind_a_sidecar("").await;
    let out = tokio::process::Command::new("nghttp")
        .args(["-v", "-H", ":authority: users", &format!("http://{}/trailers", sc.outbound)])
        .output()
        .await
        .expect("nghttp is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("body then trailers"), "{text}");
    assert!(text.contains("x-trailer: present"), "trailer lost: {text}");
}

async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    // The proxy answers and closes cleanly (FIN, not a reset): reading to EOF ends without error.
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("connection closed by the proxy")
        .expect("a clean close, not a reset");
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.truncate(300);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_4xx_and_a_clean_close() {
    let (users, sc) = users_behind_a_sidecar("").await;

    let malformed = raw_exchange(sc.outbound, b"GET / HTTP/1.1\r\nHost users\r\n\r\n").await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    for bad_line in
        [&b"GET / HTTP/9.9\r\nHost: users\r\n\r\n"[..], b"GARBAGE\r\n\r\n", b"GET /\x01 HTTP/1.1\r\n\r\n"]
    {
        let r = raw_exchange(sc.outbound, bad_line).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{:?} → {r}", String::from_utf8_lossy(bad_line));
    }

    let huge = format!("GET / HTTP/1.1\r\nHost: users\r\nX-Big: {}\r\n\r\n", "a".repeat(100 * 1024));
    let r = raw_exchange(sc.outbound, huge.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r =
        raw_exchange(sc.outbound, format!("GET / HTTP/1.1\r\nHost: users\r\n{many}\r\n").as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    assert_eq!(users.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing bad reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_missing_endpoints_fail_fast() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "{}{}{}",
        sidecar_doc(None, ""),
        service_doc("dead", &[dead], ""),
        service_doc("empty", &[], ""),
    );
    let sc = Sidecar::start(&config);
    let url = format!("http://{}/", sc.outbound);
    let r = curl(&["-H", "Host: dead", &url]).await;
    assert_eq!((r.status, r.header("pilotfish-error")), (502, Some("upstream-connect")));
    let r = curl(&["-H", "Host: empty", &url]).await;
    assert_eq!((r.status, r.header("pilotfish-error")), (503, Some("no-endpoints")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_and_floods_are_bounded() {
    let users = backend("users").await;
    let config = format!(
        "{}{}",
        sidecar_doc(None, "  timeouts: {headerRead: 1s}\n  limits: {maxConnections: 2}\n"),
        service_doc("users", &[users.addr], "")
    );
    let sc = Sidecar::start(&config);

    // A client that never finishes its headers is cut off by the header read timeout.
    let mut slow = TcpStream::connect(sc.outbound).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: users\r\n").await.unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut sink))
        .await
        .expect("the slow client was disconnected")
        .ok();

    // At the connection limit, a further connection is not served until one closes.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(sc.outbound).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: users\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut third = TcpStream::connect(sc.outbound).await.unwrap();
    third.write_all(b"GET / HTTP/1.1\r\nHost: users\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut buf)).await;
    assert!(early.is_err(), "a third connection was served past maxConnections: 2");
    held.clear();
    tokio::time::timeout(Duration::from_secs(20), third.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_before_they_end() {
    let (_users, sc) = users_behind_a_sidecar("").await;
    for h2 in [false, true] {
        let mut args = vec!["-s", "-N", "--max-time", "25", "-H", "Host: users"];
        if h2 {
            args.push("--http2-prior-knowledge");
        }
        let url = format!("http://{}/drip", sc.outbound);
        args.push(&url);
        let mut child = tokio::process::Command::new("curl")
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 12];
        // The whole body takes 30 s; the first chunk must arrive long before that.
        tokio::time::timeout(Duration::from_secs(15), out.read_exact(&mut first))
            .await
            .expect("the first chunk was held back: the body is being buffered")
            .unwrap();
        assert_eq!(&first, b"first chunk\n");
    }
}

/// A port declared HTTP is routed and policed as HTTP or refused — a long request line or a
/// silent client never turns it into an opaque tunnel (undeclared ports still fall back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_http_port_never_becomes_a_tunnel() {
    let users = backend("users").await;
    let (declared, undeclared) = (free_port(), free_port());
    let config = format!(
        "{}{}{}",
        sidecar_doc(None, "  timeouts: {headerRead: 1s, detect: 1s}\n"),
        service_doc(
            "users",
            &[users.addr],
            &format!("  ports: [{{port: 80, protocol: http}}]\n  localPort: {declared}\n")
        ),
        service_doc("raw", &[users.addr], &format!("  localPort: {undeclared}\n")),
    );
    let _sc = Sidecar::start(&config);
    let at = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));

    // A 9 KiB request line is HTTP (within maxHeaderBytes): proxied, so it carries the sidecar's
    // request id; on the undeclared port it is tunnelled untouched.
    let long =
        format!("GET /?q={} HTTP/1.1\r\nHost: users\r\nConnection: close\r\n\r\n", "a".repeat(9 * 1024));
    let r = raw_exchange(at(declared), long.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.to_ascii_lowercase().contains("x-request-id"), "proxied as HTTP: {r}");
    let r = raw_exchange(at(undeclared), long.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 200") && !r.to_ascii_lowercase().contains("x-request-id"), "{r}");

    // Over maxHeaderBytes: 431, not a tunnel.
    let huge = format!("GET /?q={} HTTP/1.1\r\nHost: users\r\n\r\n", "a".repeat(80 * 1024));
    let r = raw_exchange(at(declared), huge.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    // Silent until headerRead: 408, then closed.
    let started = std::time::Instant::now();
    let r = raw_exchange(at(declared), b"").await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.contains("pilotfish-error: timeout"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered at headerRead, not later");
    let r = raw_exchange(at(declared), b"GET /half-a-request-line").await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");

    assert_eq!(
        users.requests.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "only the two long lines arrived"
    );
}
