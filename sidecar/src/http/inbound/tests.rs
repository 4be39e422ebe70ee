//! Authorization on the inbound HTTP path, driven over real sockets: a client speaks HTTP/1.1 to
//! an inbound connection served as the listener serves it (with the peer identity mTLS would
//! have verified), and a real app server on 127.0.0.1:0 answers with the peer header it got.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pilotfish_api::SpiffeId;
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{peer_header, PEER_IDENTITY};
use crate::http::context::{Connection, HttpTarget};
use crate::http::pool::Version;
use crate::http::proxy::Proxy;
use crate::http::server;
use crate::listener::accept::ConnSlot;
use crate::snapshot::{Overrides, Snapshot};
use crate::state::Shared;
use crate::telemetry::metrics::{Direction, Metrics};

const WEB: &str = "spiffe://pilotfish.local/ns/default/sa/web";
const OTHER: &str = "spiffe://pilotfish.local/ns/default/sa/other";
const SPOOFED: &str = "spiffe://pilotfish.local/ns/ops/sa/admin";

/// An app that answers 200 with the peer header it received (`-` when none).
async fn app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let echo = service_fn(|req: Request<Incoming>| async move {
                let peer = req.headers().get(PEER_IDENTITY).map_or(&b"-"[..], |v| v.as_bytes());
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::copy_from_slice(peer))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), echo),
            );
        }
    });
    addr
}

/// The configuration of sidecar `users` in front of `app`, with `authz` (YAML lines under its
/// spec) and `policies` (documents).
fn config(app: SocketAddr, authz: &str, policies: &str) -> String {
    format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: users}}\nspec:\n  inbound: {{listen: 127.0.0.1:0, app: {app}}}\n{authz}{policies}"
    )
}

/// An ALLOW policy for `users` that lets in `identity`.
fn allow(identity: &str) -> String {
    format!(
        "---\napiVersion: pilotfish.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-web}}\nspec:\n  targetRef: {{kind: Service, name: users}}\n  action: ALLOW\n  rules: [{{from: [{{identity: '{identity}'}}]}}]\n"
    )
}

/// The inbound side of sidecar `users`: each connection accepted on `addrs[i]` is served as
/// the inbound listener serves it, as if mTLS had verified the `i`th peer.
struct Inbound {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
}

impl Inbound {
    async fn start(yaml: &str, peer: Option<&str>) -> Self {
        Self::start_peers(yaml, &[peer]).await
    }

    async fn start_peers(yaml: &str, peers: &[Option<&str>]) -> Self {
        let metrics = Metrics::new();
        let snap = Snapshot::build("test.yaml", yaml, &Overrides::default(), None, &metrics).unwrap();
        let shared = Shared::new(snap, metrics);
        let mut addrs = Vec::new();
        for peer in peers {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let peer: Option<Arc<SpiffeId>> = peer.map(|p| Arc::new(p.parse().unwrap()));
            let serving = shared.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, client) = listener.accept().await.unwrap();
                    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
                    let conn = Connection {
                        shared: serving.clone(),
                        direction: Direction::Inbound,
                        client,
                        target: HttpTarget::App(None),
                        downstream: Version::Http1,
                        slot: Arc::new(ConnSlot::new(permit, IntGauge::new("open", "open").unwrap())),
                        peer_header: peer.as_deref().map(peer_header),
                        edge: Some(serving.metrics.edges.inbound(peer.as_deref())),
                        peer: peer.clone(),
                    };
                    let spec = serving.snapshot.load().sidecar.clone();
                    let shutdown = serving.shutdown.clone();
                    tokio::spawn(async move {
                        server::serve(stream, Version::Http1, Proxy::new(conn), &spec, shutdown).await
                    });
                }
            });
        }
        Self { addrs, shared }
    }

    /// Swaps in the configuration `yaml`, as a reload or a push does.
    fn apply(&self, yaml: &str) {
        let previous = self.shared.snapshot.load_full();
        let snap =
            Snapshot::build("test.yaml", yaml, &Overrides::default(), Some(&previous), &self.shared.metrics)
                .unwrap();
        self.shared.snapshot.store(Arc::new(snap));
    }

    /// A client connection to it (as the first peer).
    async fn connect(&self) -> Client {
        self.connect_as(0).await
    }

    /// A client connection as the `i`th peer.
    async fn connect_as(&self, i: usize) -> Client {
        let stream = TcpStream::connect(self.addrs[i]).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        Client(sender)
    }

    /// The exported `pilotfish_authz_denied_total` sample for `policy`, if any.
    fn denied(&self, policy: &str) -> Option<u64> {
        let text = String::from_utf8(self.shared.metrics.encode()).unwrap();
        let series = format!("pilotfish_authz_denied_total{{policy=\"{policy}\",service=\"users\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)).map(|v| v.parse().unwrap())
    }
}

struct Client(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

/// A response, read whole.
struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Client {
    /// `GET /api/users`, with a spoofed peer header (and a `Connection` header that names it,
    /// as a client would to have a proxy strip what it adds).
    async fn get(&mut self) -> Reply {
        let req = Request::get("/api/users")
            .header("host", "users")
            .header(PEER_IDENTITY, SPOOFED)
            .header("connection", "x-pilotfish-peer-identity");
        self.send(req).await
    }

    async fn send(&mut self, req: http::request::Builder) -> Reply {
        let res = self.0.send_request(req.body(Empty::new()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        Reply { status: parts.status, headers: parts.headers, body }
    }
}

impl Reply {
    fn error(&self) -> Option<&str> {
        self.headers.get("pilotfish-error").map(|v| v.to_str().unwrap())
    }
}

#[tokio::test]
async fn an_allowed_identity_reaches_the_app_with_its_identity_and_never_a_spoofed_one() {
    let app = app().await;
    let inbound = Inbound::start(&config(app, "", &allow(WEB)), Some(WEB)).await;
    let reply = inbound.connect().await.get().await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, WEB));
    assert_eq!(inbound.denied("default"), Some(0));
}

#[tokio::test]
async fn another_identity_is_forbidden_by_the_callee_and_counted() {
    let app = app().await;
    let inbound = Inbound::start(&config(app, "", &allow(WEB)), Some(OTHER)).await;
    let mut client = inbound.connect().await;
    for _ in 0..2 {
        let reply = client.get().await;
        assert_eq!((reply.status, reply.error()), (StatusCode::FORBIDDEN, Some("forbidden")));
        assert!(reply.body.contains(OTHER), "{}", reply.body);
        assert!(reply.body.contains("no ALLOW AuthorizationPolicy"), "{}", reply.body);
    }
    assert_eq!(inbound.denied("default"), Some(2));
}

#[tokio::test]
async fn a_deny_policy_is_named_in_the_answer_and_the_metric() {
    let app = app().await;
    let deny = allow(WEB).replace("allow-web", "deny-web").replace("ALLOW", "DENY");
    let inbound = Inbound::start(&config(app, "  authorization: {default: allow}\n", &deny), Some(WEB)).await;
    let reply = inbound.connect().await.get().await;
    assert_eq!((reply.status, reply.error()), (StatusCode::FORBIDDEN, Some("forbidden")));
    assert!(reply.body.contains("AuthorizationPolicy deny-web denies it"), "{}", reply.body);
    assert_eq!((inbound.denied("deny-web"), inbound.denied("default")), (Some(1), Some(0)));
}

#[tokio::test]
async fn the_mesh_default_decides_without_policies() {
    let app = app().await;
    let deny = "  authorization: {default: deny}\n";
    let cases = [
        ("deny, meshed caller", deny, Some(WEB), StatusCode::FORBIDDEN, "the mesh default is deny"),
        (
            "authenticated (unset), plaintext caller",
            "",
            None,
            StatusCode::FORBIDDEN,
            "without a mesh identity",
        ),
        ("authenticated (unset), meshed caller", "", Some(WEB), StatusCode::OK, WEB),
        ("allow, plaintext caller", "  authorization: {default: allow}\n", None, StatusCode::OK, "-"),
    ];
    for (case, authz, peer, status, body) in cases {
        let inbound = Inbound::start(&config(app, authz, ""), peer).await;
        let reply = inbound.connect().await.get().await;
        assert_eq!(reply.status, status, "{case}: {}", reply.body);
        assert!(reply.body.contains(body), "{case}: {}", reply.body);
        let denied = u64::from(status == StatusCode::FORBIDDEN);
        assert_eq!(inbound.denied("default"), Some(denied), "{case}");
    }
}

#[tokio::test]
async fn a_denied_grpc_call_gets_permission_denied() {
    let app = app().await;
    let inbound = Inbound::start(&config(app, "", &allow(WEB)), Some(OTHER)).await;
    let req =
        Request::post("/echo.Echo/Say").header("host", "users").header("content-type", "application/grpc");
    let reply = inbound.connect().await.send(req).await;
    assert_eq!(reply.status, StatusCode::OK, "gRPC answers errors in a trailers-only response");
    let header = |name: &str| reply.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("grpc-status").as_deref(), Some("7"));
    assert!(header("grpc-message").is_some_and(|m| m.contains(OTHER)), "{:?}", reply.headers);
    assert_eq!(reply.error(), Some("forbidden"));
    assert_eq!(inbound.denied("default"), Some(1));
}

#[tokio::test]
async fn a_policy_change_applies_to_the_next_request_on_the_same_connection() {
    let app = app().await;
    let inbound = Inbound::start(&config(app, "", &allow(WEB)), Some(OTHER)).await;
    let mut client = inbound.connect().await;
    assert_eq!(client.get().await.status, StatusCode::FORBIDDEN);
    inbound.apply(&config(app, "", &allow(OTHER)));
    let reply = client.get().await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, OTHER));
    inbound.apply(&config(app, "", &allow(WEB)));
    assert_eq!(client.get().await.status, StatusCode::FORBIDDEN);
    assert_eq!(inbound.denied("default"), Some(2));
}

#[tokio::test]
async fn a_peer_keyed_limit_on_the_own_service_budgets_each_calling_identity_on_the_way_in() {
    let app = app().await;
    let limit = "---\napiVersion: pilotfish.io/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: per-caller}\nspec: {targetRef: {kind: Service, name: users}, perMinute: 2, key: {peer: true}}\n";
    let yaml = config(app, "  authorization: {default: allow}\n", limit);
    // Two connections as `web`, one as another identity, one plaintext.
    let inbound = Inbound::start_peers(&yaml, &[Some(WEB), Some(WEB), Some(OTHER), None]).await;
    let (mut web, mut web_again) = (inbound.connect_as(0).await, inbound.connect_as(1).await);
    assert_eq!(web.get().await.status, StatusCode::OK);
    assert_eq!(web_again.get().await.status, StatusCode::OK);
    let refused = web.get().await;
    assert_eq!((refused.status, refused.error()), (StatusCode::TOO_MANY_REQUESTS, Some("rate-limited")));
    assert!(refused.headers.contains_key("retry-after"), "{:?}", refused.headers);
    assert_eq!(web_again.get().await.status, StatusCode::TOO_MANY_REQUESTS, "one budget per identity");
    for i in [2, 3] {
        let mut other = inbound.connect_as(i).await;
        assert_eq!(other.get().await.status, StatusCode::OK, "caller {i} has a budget of its own");
    }
    let text = String::from_utf8(inbound.shared.metrics.encode()).unwrap();
    assert!(
        text.contains("pilotfish_ratelimited_total{route=\"inbound\",service=\"users.default\"} 2"),
        "{text}"
    );

    // A limit keyed otherwise stays with the callers' sidecars.
    inbound.apply(&yaml.replace("key: {peer: true}", "key: {header: x-api-key}"));
    for _ in 0..3 {
        assert_eq!(web.get().await.status, StatusCode::OK);
    }
}
