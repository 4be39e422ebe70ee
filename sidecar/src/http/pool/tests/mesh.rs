//! The pool towards a meshed endpoint, against a real mesh mTLS server: HTTP/2 requests share
//! one connection, the server must prove the registry's identity, a sidecar without an identity
//! fails locally, and a connection past its max age takes no new requests.

use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::IntCounter;

use super::*;
use crate::identity::Identity;
use crate::tls::accept_mesh;
use crate::tls::tests::pki::{id, Ca};
use crate::upstream::mesh::{DialError, MeshClient};

/// A sidecar's inbound port as `account` would serve it: mesh mTLS, then HTTP/2 answering
/// every request with the peer's identity. Counts the connections it accepts.
async fn mesh_server(ca: &Ca, account: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let configs = ca.configs(account);
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let configs = configs.clone();
            tokio::spawn(async move {
                let Ok(mesh) = accept_mesh(&configs, Bytes::new(), tcp).await else { return };
                let peer = mesh.peer.to_string();
                let service = service_fn(move |_req| {
                    let body = Full::new(Bytes::from(peer.clone()));
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
                });
                let serve = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(mesh.stream), service);
                let _ = serve.await;
            });
        }
    });
    (addr, accepted)
}

fn h2_get() -> Box<Request<RequestBody>> {
    let mut req = Request::new(RequestBody::Replay { data: None, trailers: None });
    *req.uri_mut() = "http://api/".parse().unwrap();
    *req.version_mut() = http::Version::HTTP_2;
    Box::new(req)
}

fn client(ca: Option<&Ca>, max_age: Duration) -> MeshClient {
    let identity = ca.map(|ca| {
        Arc::new(Identity { id: id("web"), configs: ca.configs("web"), not_after: SystemTime::now() })
    });
    MeshClient { identity, max_age, opened: IntCounter::new("opened", "opened").unwrap() }
}

/// `n` concurrent HTTP/2 requests to `conns`; their bodies.
async fn concurrent(conns: &Arc<EndpointConns>, mesh: &MeshClient, n: usize) -> Vec<Bytes> {
    let (open, pending) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (conns, open, pending, mesh) = (conns.clone(), open.clone(), pending.clone(), mesh.clone());
        requests.spawn(async move {
            let mut connect = connect(&open, &pending, Duration::from_secs(5));
            connect.mesh = Some(&mesh);
            let (res, conn) = conns.send(Version::Http2, h2_get(), &connect).await.ok().unwrap();
            assert!(conn.is_none(), "HTTP/2 has nothing to release");
            res.into_body().collect().await.unwrap().to_bytes()
        });
    }
    tokio::time::timeout(Duration::from_secs(10), requests.join_all()).await.unwrap()
}

#[tokio::test]
async fn fifty_concurrent_requests_share_one_mesh_connection() {
    let ca = Ca::new("mesh");
    let (addr, accepted) = mesh_server(&ca, "api").await;
    let conns = EndpointConns::new(addr, Some(Arc::new(id("api"))));
    let mesh = client(Some(&ca), Duration::from_secs(3600));
    let bodies = concurrent(&conns, &mesh, 50).await;
    // The server saw this sidecar's identity on every request.
    assert!(bodies.iter().all(|b| b == id("web").to_string().as_bytes()), "{bodies:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(mesh.opened.get(), 1);
}

#[tokio::test]
async fn a_connection_past_its_max_age_takes_no_new_requests() {
    let ca = Ca::new("mesh");
    let (addr, accepted) = mesh_server(&ca, "api").await;
    let conns = EndpointConns::new(addr, Some(Arc::new(id("api"))));
    let mesh = client(Some(&ca), Duration::from_millis(200));
    concurrent(&conns, &mesh, 5).await;
    concurrent(&conns, &mesh, 5).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "young: reused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    concurrent(&conns, &mesh, 5).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "old: replaced");
}

#[tokio::test]
async fn a_server_of_another_identity_is_refused_and_the_request_comes_back() {
    let ca = Ca::new("mesh");
    let (addr, _) = mesh_server(&ca, "billing").await;
    let conns = EndpointConns::new(addr, Some(Arc::new(id("api"))));
    let mesh = client(Some(&ca), Duration::from_secs(3600));
    let (open, pending) = (Arc::new(AtomicUsize::new(0)), AtomicUsize::new(0));
    let mut connect = connect(&open, &pending, Duration::from_secs(5));
    connect.mesh = Some(&mesh);
    for version in [Version::Http2, Version::Http1] {
        let err = conns.send(version, h2_get(), &connect).await.err().unwrap();
        assert!(err.error.is_identity_mismatch(), "{}", err.error);
        assert!(err.error.is_connect() && err.error.blames_endpoint());
        assert!(err.unsent.is_some());
    }
    assert_eq!(mesh.opened.get(), 0);
}

#[tokio::test]
async fn without_an_identity_a_meshed_endpoint_fails_locally_and_never_in_plaintext() {
    let ca = Ca::new("mesh");
    let (addr, accepted) = mesh_server(&ca, "api").await;
    let conns = EndpointConns::new(addr, Some(Arc::new(id("api"))));
    let (open, pending) = (Arc::new(AtomicUsize::new(0)), AtomicUsize::new(0));
    for mesh in [None, Some(client(None, Duration::from_secs(3600)))] {
        let mut connect = connect(&open, &pending, Duration::from_secs(5));
        connect.mesh = mesh.as_ref();
        let err = conns.send(Version::Http2, h2_get(), &connect).await.err().unwrap();
        assert!(
            matches!(&err.error, UpstreamError::Mesh(DialError::NoLocalIdentity { .. })),
            "{}",
            err.error
        );
        assert!(!err.error.blames_endpoint(), "not the endpoint's fault");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing was dialled");
}
