//! Managed mode against a stand-in control plane on a real socket: the authorization default
//! of the synthesized `Sidecar` document, and what the ACKs say and when — the certificate and
//! roots in force on every ACK and NACK, a renewal or new bundle reported at once, a version
//! ACKed only once its trust bundle is in force, and tap lines.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pilotfish_api::wire::PushLine;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::identity::material;
use crate::identity::mesh_feed::tests::settings;
use crate::identity::mesh_feed::{self, MeshReceiver};
use crate::identity::publish::{self, Reported};
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::Metrics;
use crate::tls::tests::pki::{provider, Ca, Validity};
use crate::tls::Credentials;

fn managed() -> Managed {
    Managed {
        servers: vec!["http://127.0.0.1:1".into()],
        service: "web".into(),
        namespace: "default".into(),
        token: "t".into(),
        ca_file: None,
        id: "web-1".into(),
        lease_ttl: Duration::from_secs(30),
        register: true,
    }
}

fn default_in_force(documents: &str) -> MeshDefault {
    let metrics = Metrics::new();
    let tolerate = UnknownFields::Tolerate;
    let snap =
        Snapshot::build_with("cp", documents, &Overrides::default(), None, &metrics, tolerate).unwrap();
    snap.sidecar.authorization.default
}

#[test]
fn the_mesh_authorization_default_lands_where_static_mode_puts_it() {
    let m = managed();
    assert_eq!(default_in_force(&m.document_stream("", Some(MeshDefault::Deny))), MeshDefault::Deny);
    assert_eq!(default_in_force(&m.document_stream("", Some(MeshDefault::Allow))), MeshDefault::Allow);
    // A control plane without a CA sends none: the built-in default.
    assert_eq!(default_in_force(&m.document_stream("", None)), MeshDefault::Authenticated);
}

#[test]
fn a_line_with_mesh_settings_hands_them_on_and_names_the_bundle_its_ack_waits_for() {
    let (tx, mut rx) = mesh_feed::channel();
    let pushed = |mesh| Pushed { version: 1, documents: String::new(), mesh };
    assert_eq!(pushed(None).publish_mesh(&tx), None);
    assert!(!rx.settings.has_changed().unwrap());
    assert_eq!(pushed(Some(settings("ROOT"))).publish_mesh(&tx).as_deref(), Some("ROOT"));
    assert!(rx.settings.has_changed().unwrap());
    assert_eq!(rx.settings.borrow_and_update().as_ref().unwrap().trust_bundle_pem, "ROOT");
}

/// A push stream's body: the lines the test sends.
struct Lines(mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}

/// A control plane that streams what the test pushes and hands the test every ACK it gets.
struct StandIn {
    url: String,
    /// The open push stream's sender (the latest connection's).
    stream: Arc<Mutex<Option<mpsc::UnboundedSender<Bytes>>>>,
    acks: mpsc::UnboundedReceiver<Ack>,
}

impl StandIn {
    async fn start() -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stream = Arc::new(Mutex::new(None));
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let streams = stream.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let (streams, acks) = (streams.clone(), acks_tx.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (streams, acks) = (streams.clone(), acks.clone());
                    async move { Ok::<_, Infallible>(answer(req, &streams, &acks).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service),
                );
            }
        });
        StandIn { url, stream, acks }
    }

    fn push(&self, line: PushLine) {
        self.push_text(&format!("{}\n", serde_json::to_string(&line).unwrap()));
    }

    /// Sends `text` as it is (one or more lines).
    fn push_text(&self, text: &str) {
        let stream = self.stream.lock().unwrap();
        stream.as_ref().expect("a push stream is open").send(Bytes::from(text.to_owned())).unwrap();
    }

    /// Ends the open push stream, as a control plane going away does.
    fn hang_up(&self) {
        self.stream.lock().unwrap().take();
    }

    /// The next ACK within `within`.
    async fn ack(&mut self, within: Duration) -> Option<Ack> {
        tokio::time::timeout(within, self.acks.recv()).await.ok().flatten()
    }

    async fn connected(&self) {
        while self.stream.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    streams: &Mutex<Option<mpsc::UnboundedSender<Bytes>>>,
    acks: &mpsc::UnboundedSender<Ack>,
) -> Response<BoxBody<Bytes, Infallible>> {
    if req.uri().path() == "/v1/push" {
        let (tx, rx) = mpsc::unbounded_channel();
        *streams.lock().unwrap() = Some(tx);
        return Response::new(BodyExt::boxed(Lines(rx)));
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    acks.send(serde_json::from_slice(&body).unwrap()).unwrap();
    let mut res = Response::new(Empty::new().boxed());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

/// A managed sidecar's state following `cp`, and the renew loop's end of the mesh settings
/// (the test settles bundles itself).
async fn follow_stand_in(cp: &StandIn) -> (Arc<Shared>, MeshReceiver) {
    let metrics = Metrics::new();
    let snap = Snapshot::build("t", "", &Overrides::default(), None, &metrics).unwrap();
    let shared = Shared::new(snap, metrics);
    let (mesh_tx, mesh_rx) = mesh_feed::channel();
    let push = PushClient::new(Managed { servers: vec![cp.url.clone()], ..managed() }, &Default::default());
    let local = Arc::new(LocalListeners::default());
    tokio::spawn(follow(shared.clone(), local, push, Overrides::default(), mesh_tx));
    cp.connected().await;
    (shared, mesh_rx)
}

/// Installs `credentials`, trusting `bundle`; what the control plane is to be told of them.
fn install(shared: &Shared, credentials: &Credentials, bundle: &str) -> Reported {
    let built = material::build(credentials, bundle.as_bytes(), SystemTime::now(), &provider()).unwrap();
    let reported = Reported { certificate: built.report.clone(), trusted_roots: built.roots.clone() };
    publish::install(shared, built);
    reported
}

/// What `ack` tells of the identity in force.
fn reported(ack: &Ack) -> Option<Reported> {
    Some(Reported { certificate: ack.certificate.clone()?, trusted_roots: ack.trusted_roots.clone()? })
}

const QUIET: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn every_ack_carries_the_certificate_and_roots_and_a_change_is_reported_at_once() {
    let mut cp = StandIn::start().await;
    let (shared, _mesh) = follow_stand_in(&cp).await;
    let (ca, next) = (Ca::new("mesh"), Ca::new("next"));

    // A version ACKed before the sidecar has an identity: nothing to report.
    cp.push(PushLine::new(1, String::new()));
    let ack = cp.ack(QUIET).await.unwrap();
    assert_eq!((ack.version, ack.certificate, ack.trusted_roots), (1, None, None));

    // A certificate: version 1 again, with it and the one root it is trusted under.
    let leaf = ca.leaf("web", Validity::FRESH);
    let first = install(&shared, &leaf, &ca.root_pem());
    assert_eq!(first.trusted_roots, [first.certificate.root.clone().unwrap()]);
    let ack = cp.ack(QUIET).await.unwrap();
    assert_eq!((ack.version, ack.error.as_deref()), (1, None));
    assert_eq!(reported(&ack), Some(first.clone()));

    // The same certificate with a second root in the bundle: version 1 again, at once,
    // trusting both.
    let overlap = format!("{}{}", ca.root_pem(), next.root_pem());
    let both = install(&shared, &leaf, &overlap);
    assert_eq!((&both.certificate, both.trusted_roots.len()), (&first.certificate, 2));
    let start = Instant::now();
    let ack = cp.ack(QUIET).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert_eq!((ack.version, reported(&ack)), (1, Some(both.clone())));
    // Installed again as it is: nothing changed, nothing sent.
    assert_eq!(install(&shared, &leaf, &overlap), both);
    assert_eq!(cp.ack(QUIET).await, None);

    // A renewal: version 1 again, with the new certificate, at once.
    let renewed = install(&shared, &next.leaf("web", Validity::FRESH), &overlap);
    assert_ne!(renewed.certificate.root, first.certificate.root);
    let start = Instant::now();
    let ack = cp.ack(QUIET).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert_eq!((ack.version, reported(&ack)), (1, Some(renewed.clone())));
    assert_eq!(cp.ack(QUIET).await, None);

    // The stream was not disturbed: the next version comes through, with the new certificate.
    cp.push(PushLine::new(2, "# v2".into()));
    let ack = cp.ack(QUIET).await.unwrap();
    assert_eq!((ack.version, reported(&ack)), (2, Some(renewed)));
}

#[tokio::test]
async fn a_nack_reports_the_roots_its_versions_bundle_put_in_force() {
    let mut cp = StandIn::start().await;
    let (shared, mut mesh) = follow_stand_in(&cp).await;
    let (ca, next) = (Ca::new("mesh"), Ca::new("next"));
    let leaf = ca.leaf("web", Validity::FRESH);
    let first = install(&shared, &leaf, &ca.root_pem());
    cp.push(PushLine::new(1, String::new()));
    assert_eq!(reported(&cp.ack(QUIET).await.unwrap()), Some(first));

    // A rotation's bundle, in a version whose configuration this sidecar refuses: the NACK
    // names the new root once the renew loop put the bundle in force.
    let overlap = format!("{}{}", ca.root_pem(), next.root_pem());
    let mut line = PushLine::new(2, "kind: [unclosed".into());
    line.mesh = Some(settings(&overlap));
    cp.push(line);
    mesh.settings.changed().await.unwrap();
    let both = install(&shared, &leaf, &overlap);
    mesh.settled(&overlap);
    let nack = cp.ack(QUIET).await.unwrap();
    assert_eq!(nack.version, 2);
    assert!(nack.error.is_some(), "{nack:?}");
    assert_eq!(reported(&nack), Some(both));
    // The NACK told it already: no second report.
    assert_eq!(cp.ack(QUIET).await, None);
}

#[tokio::test]
async fn a_reconnection_reports_the_certificate_again() {
    let mut cp = StandIn::start().await;
    let (shared, _mesh) = follow_stand_in(&cp).await;
    let ca = Ca::new("mesh");
    let report = install(&shared, &ca.leaf("web", Validity::FRESH), &ca.root_pem());
    cp.push(PushLine::new(3, String::new()));
    assert_eq!(cp.ack(QUIET).await.unwrap().version, 3);

    // The control plane reconnected to may not know the report: told again, unasked.
    cp.hang_up();
    let ack = cp.ack(Duration::from_secs(5)).await.unwrap();
    assert_eq!((ack.version, reported(&ack)), (3, Some(report)));
    assert_eq!(cp.ack(QUIET).await, None);
}

#[tokio::test]
async fn a_version_is_acked_only_once_its_trust_bundle_is_in_force() {
    let mut cp = StandIn::start().await;
    let (_shared, mut mesh) = follow_stand_in(&cp).await;

    let mut line = PushLine::new(1, String::new());
    line.mesh = Some(settings("OLD AND NEW ROOTS"));
    cp.push(line);
    // The renew loop has the bundle, but has not said it is in force: no ACK.
    mesh.settings.changed().await.unwrap();
    assert_eq!(mesh.settings.borrow().as_ref().unwrap().trust_bundle_pem, "OLD AND NEW ROOTS");
    assert_eq!(cp.ack(QUIET).await, None);
    mesh.settled("OLD AND NEW ROOTS");
    let ack = cp.ack(QUIET).await.unwrap();
    assert_eq!((ack.version, ack.error), (1, None));

    // The same bundle again, and a line without mesh settings: nothing to wait for.
    let mut line = PushLine::new(2, "# v2".into());
    line.mesh = Some(settings("OLD AND NEW ROOTS"));
    cp.push(line);
    assert_eq!(cp.ack(QUIET).await.unwrap().version, 2);
    cp.push(PushLine::new(3, "# v3".into()));
    assert_eq!(cp.ack(QUIET).await.unwrap().version, 3);
}

#[tokio::test]
async fn a_pushed_bundle_is_what_every_control_plane_client_trusts_besides_the_pin() {
    let cp = StandIn::start().await;
    let mut push =
        PushClient::new(Managed { servers: vec![cp.url.clone()], ..managed() }, &Default::default());
    let roots = push.pushed_roots().clone();
    assert!(roots.is_empty());
    let next = tokio::spawn(async move { push.next().await.version });
    cp.connected().await;
    let (ca, rotated) = (Ca::new("mesh"), Ca::new("next"));
    let mut line = PushLine::new(4, String::new());
    line.mesh = Some(settings(&format!("{}{}", ca.root_pem(), rotated.root_pem())));
    cp.push(line);
    assert_eq!(next.await.unwrap(), 4);
    assert_eq!(roots.len(), 2);
}

#[tokio::test]
async fn a_tap_line_sets_what_is_recorded_and_a_broken_stream_stops_it() {
    let mut cp = StandIn::start().await;
    let (shared, _mesh) = follow_stand_in(&cp).await;
    cp.push(PushLine::new(1, String::new()));
    assert_eq!(cp.ack(QUIET).await.unwrap().version, 1);
    assert!(!shared.tap.is_active(), "no one taps");
    let tapping = |active: bool| {
        let shared = shared.clone();
        async move {
            let turned = async {
                while shared.tap.is_active() != active {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(5), turned).await.expect("the tap line takes effect");
        }
    };
    let tap = |filters: &str| format!("{{\"protocol\":2,\"tap\":{{\"filters\":{filters}}}}}\n");

    cp.push_text(&tap(r#"[{"path":"/api"}]"#));
    tapping(true).await;
    assert!(shared.tap.sample(&http::Method::GET, "/api/x"));
    assert!(!shared.tap.sample(&http::Method::GET, "/other"), "filtered");
    assert_eq!(cp.ack(QUIET).await, None, "a tap line is not a version to ACK");

    cp.push_text(&tap("[]"));
    tapping(false).await;

    // Started again, then the control plane that asked goes away: tapping stops.
    cp.push_text(&tap("[{}]"));
    tapping(true).await;
    cp.hang_up();
    tapping(false).await;
}

#[tokio::test]
async fn a_tap_line_read_before_the_sidecar_started_applies_once_it_has() {
    let cp = StandIn::start().await;
    let mut push =
        PushClient::new(Managed { servers: vec![cp.url.clone()], ..managed() }, &Default::default());
    let read = tokio::spawn(async move {
        let first = push.next().await.version;
        // As start-up does after NACKing the first version: the next one, past a tap line.
        let second = push.next().await.version;
        (push, first, second)
    });
    cp.connected().await;
    cp.push(PushLine::new(1, "kind: [unclosed".into()));
    cp.push_text("{\"protocol\":2,\"tap\":{\"filters\":[{\"method\":\"GET\"}]}}\n");
    cp.push(PushLine::new(2, String::new()));
    let (mut push, first, second) = read.await.unwrap();
    assert_eq!((first, second), (1, 2));
    let tap = Arc::new(Tap::default());
    push.tap_into(tap.clone());
    assert!(tap.is_active(), "the tap line read while starting applies");
}
