//! `pilotfish control-plane --kubernetes` against a local server that speaks the Kubernetes API
//! as its reference describes it (no cluster runs here): lists with `metadata.resourceVersion`,
//! watches as chunked streams of `{"type", "object"}` events from a resourceVersion, BOOKMARK
//! events when `allowWatchBookmarks` asks for them, a 410 Gone ERROR event once the version a
//! watch is at has been compacted away, TokenReview, server-side apply of a ConfigMap and a
//! replace of the MutatingWebhookConfiguration. The real binary reaches it through KUBECONFIG;
//! what it makes of the cluster is checked where sidecars see it: a managed sidecar's `/config`
//! (the sidecar authenticating with a ServiceAccount token file), and the CA's answers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use pilotfish_api::client::Client;
use pilotfish_api::wire::CertifyRequest;
use serde_json::{json, Value};

use crate::ca::{greedy_csr, openssl};
use crate::managed::eventually;
use crate::support::{backend, Sidecar};
use crate::ControlPlane;

type Body = BoxBody<Bytes, Infallible>;

/// ServiceAccount tokens as the API server issues them (JWTs; the control plane sends nothing
/// else for review).
const CLIENT_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjbGllbnQifQ.c2lnMQ";
const WEB_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3ZWIifQ.c2lnMg";
const API_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhcGkifQ.c2lnMw";
const NODE_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJub2RlIn0.c2lnNA";

/// One kind the fake serves: its collection path, its objects and the events since `floor`.
struct Kind {
    path: &'static str,
    list_kind: &'static str,
    objects: BTreeMap<(String, String), Value>,
    /// Events by resourceVersion; a watch from before `floor` is answered 410 Gone.
    history: Vec<(u64, Value)>,
    floor: u64,
    watchers: Vec<Sender<Bytes, Infallible>>,
    lists: usize,
}

#[derive(Default)]
struct Fake {
    kinds: Vec<Kind>,
    version: u64,
    /// Tokens the TokenReview knows: token → (username, the audiences it was issued for; none:
    /// an authenticator that knows no audiences, and says none).
    tokens: BTreeMap<String, (String, Option<Vec<String>>)>,
    webhook: Value,
    /// Writes as (method, path, body).
    writes: Vec<(String, String, Value)>,
    bookmarks: usize,
    /// Lists answered this much later (a re-list slow enough to look at what is served meanwhile).
    list_delay: Duration,
}

#[derive(Clone)]
struct Cluster(Arc<Mutex<Fake>>);

impl Cluster {
    fn new() -> Self {
        let kind = |path, list_kind| Kind {
            path,
            list_kind,
            objects: BTreeMap::new(),
            history: Vec::new(),
            floor: 0,
            watchers: Vec::new(),
            lists: 0,
        };
        let webhook = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "pilotfish-injector", "resourceVersion": "1"},
            "webhooks": [{"name": "inject.pilotfish.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                          "clientConfig": {"service": {"namespace": "pilotfish", "name": "pilotfish-control-plane",
                                                       "path": "/inject", "port": 15100}}}]
        });
        Self(Arc::new(Mutex::new(Fake {
            kinds: vec![
                kind("/api/v1/services", "ServiceList"),
                kind("/apis/discovery.k8s.io/v1/endpointslices", "EndpointSliceList"),
                kind("/api/v1/pods", "PodList"),
                kind("/api/v1/namespaces", "NamespaceList"),
            ],
            version: 100,
            webhook,
            ..Fake::default()
        })))
    }

    /// Changes the objects of `object`'s kind at a new resourceVersion: `change` gets the kind,
    /// the object's key and that version.
    fn bump(&self, object: &Value, change: impl FnOnce(&mut Kind, (String, String), u64)) {
        let (kind, key) = (collection(object), object_key(object));
        let mut fake = self.0.lock().unwrap();
        fake.version += 1;
        let version = fake.version;
        change(fake.kinds.iter_mut().find(|k| k.path == kind).unwrap(), key, version);
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED` to the watches).
    async fn put(&self, object: Value) {
        self.bump(&object, |k, key, version| {
            let mut object = object.clone();
            object["metadata"]["resourceVersion"] = json!(version.to_string());
            let kind_of_event =
                if k.objects.insert(key, object.clone()).is_some() { "MODIFIED" } else { "ADDED" };
            k.record(version, json!({"type": kind_of_event, "object": object}));
        });
    }

    async fn delete(&self, object: Value) {
        self.bump(&object, |k, key, version| {
            let mut gone = k.objects.remove(&key).expect("deleting an object that exists");
            gone["metadata"]["resourceVersion"] = json!(version.to_string());
            k.record(version, json!({"type": "DELETED", "object": gone}));
        });
    }

    /// Compacts `path`'s history: its watches get a 410 Gone ERROR event and end, as an API
    /// server's do when etcd compacted the version they were at.
    fn compact(&self, path: &str) {
        let mut fake = self.0.lock().unwrap();
        let version = fake.version;
        let k = fake.kinds.iter_mut().find(|k| k.path == path).unwrap();
        k.floor = version + 1;
        k.history.clear();
        for mut w in k.watchers.drain(..) {
            send(&mut w, &gone(version));
        }
    }

    /// Replaces an object without an event, as one whose event was compacted away: only a
    /// list can tell.
    fn put_unwatched(&self, object: Value) {
        self.bump(&object, |k, key, version| {
            let mut object = object.clone();
            object["metadata"]["resourceVersion"] = json!(version.to_string());
            k.objects.insert(key, object);
        });
    }

    fn lists(&self, path: &str) -> usize {
        self.0.lock().unwrap().kinds.iter().find(|k| k.path == path).unwrap().lists
    }

    fn writes(&self) -> Vec<(String, String, Value)> {
        self.0.lock().unwrap().writes.clone()
    }

    async fn serve(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let cluster = server.clone();
                let service = hyper::service::service_fn(move |req| {
                    let cluster = cluster.clone();
                    async move { Ok::<_, Infallible>(cluster.answer(req).await) }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        // Bookmarks to every watch that asked for them, as the API server sends them (about once
        // a minute there; often here so the test sees them).
        let cluster = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut fake = cluster.0.lock().unwrap();
                let version = fake.version;
                let mut sent = 0;
                for k in &mut fake.kinds {
                    let (api_version, kind) = type_of(k.path);
                    let mark = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind,
                                      "metadata": {"resourceVersion": version.to_string()}}});
                    k.watchers.retain_mut(|w| send(w, &mark));
                    sent += k.watchers.len();
                }
                fake.bookmarks += sent;
            }
        });
        addr
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if method == hyper::Method::GET && self.0.lock().unwrap().kinds.iter().any(|k| k.path == path) {
            return match query.get("watch").map(String::as_str) {
                Some("true" | "1") => self.watch(&path, &query),
                _ => self.list(&path).await,
            };
        }
        let mut fake = self.0.lock().unwrap();
        match (method.as_str(), path.as_str()) {
            ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
                let token = body["spec"]["token"].as_str().unwrap_or_default();
                let asked: Vec<String> =
                    serde_json::from_value(body["spec"]["audiences"].clone()).unwrap_or_default();
                let user = |name: &str| {
                    json!({"username": name, "uid": "3f1c",
                                               "groups": ["system:serviceaccounts", "system:authenticated"]})
                };
                // The audiences the token was issued for among those asked (all of them when
                // none is asked); none in common is a refusal.
                let status = match fake.tokens.get(token) {
                    Some((name, Some(issued))) => {
                        let both: Vec<&String> =
                            issued.iter().filter(|a| asked.is_empty() || asked.contains(a)).collect();
                        match both.is_empty() {
                            false => json!({"authenticated": true, "audiences": both, "user": user(name)}),
                            true => {
                                json!({"user": {}, "error": "[invalid bearer token, token audiences is invalid]"})
                            }
                        }
                    }
                    Some((name, None)) => json!({"authenticated": true, "user": user(name)}),
                    None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
                };
                let mut review = body.clone();
                review["metadata"] = json!({"creationTimestamp": null});
                review["status"] = status;
                reply(StatusCode::CREATED, &review)
            }
            (
                "GET",
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/pilotfish-injector",
            ) => reply(StatusCode::OK, &fake.webhook),
            (
                "PUT",
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/pilotfish-injector",
            ) => {
                fake.writes.push((method.to_string(), path.clone(), body.clone()));
                fake.webhook = body.clone();
                reply(StatusCode::OK, &body)
            }
            ("PATCH", p) if p.ends_with("/configmaps/pilotfish-ca") => {
                assert_eq!(query.get("fieldManager").map(String::as_str), Some("pilotfish-control-plane"));
                fake.writes.push((method.to_string(), path.clone(), body.clone()));
                reply(StatusCode::CREATED, &body)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                        "message": format!("the server could not find the requested resource ({method} {path})")}),
            ),
        }
    }

    async fn list(&self, path: &str) -> Response<Body> {
        let delay = self.0.lock().unwrap().list_delay;
        tokio::time::sleep(delay).await;
        let mut fake = self.0.lock().unwrap();
        let version = fake.version;
        let k = fake.kinds.iter_mut().find(|k| k.path == path).unwrap();
        k.lists += 1;
        // List items carry no kind or apiVersion: the list does.
        let items: Vec<Value> = k
            .objects
            .values()
            .map(|o| {
                let mut o = o.clone();
                o.as_object_mut().unwrap().retain(|key, _| key != "kind" && key != "apiVersion");
                o
            })
            .collect();
        let (api_version, _) = type_of(path);
        let list = json!({"kind": k.list_kind, "apiVersion": api_version,
                          "metadata": {"resourceVersion": version.to_string()}, "items": items});
        reply(StatusCode::OK, &list)
    }

    fn watch(&self, path: &str, query: &BTreeMap<String, String>) -> Response<Body> {
        let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(64);
        let mut fake = self.0.lock().unwrap();
        let version = fake.version;
        let k = fake.kinds.iter_mut().find(|k| k.path == path).unwrap();
        if from < k.floor {
            send(&mut tx, &gone(version));
        } else {
            for (_, event) in k.history.iter().filter(|(v, _)| *v > from) {
                assert!(send(&mut tx, event), "the watch's buffer holds the history");
            }
            if query.get("allowWatchBookmarks").is_some_and(|v| v == "true") {
                k.watchers.push(tx);
            } else {
                panic!("the control plane's watches ask for bookmarks");
            }
        }
        let mut res = Response::new(body.boxed());
        res.headers_mut().insert("content-type", "application/json".parse().unwrap());
        res
    }
}

impl Kind {
    fn record(&mut self, version: u64, event: Value) {
        self.history.push((version, event.clone()));
        self.watchers.retain_mut(|w| send(w, &event));
    }
}

/// One event on a watch's stream; false once the watch is gone (or hopelessly behind).
fn send(watch: &mut Sender<Bytes, Infallible>, event: &Value) -> bool {
    watch.try_send(Frame::data(line(event))).is_ok()
}

/// The 410 Gone ERROR event of a watch whose version is too old.
fn gone(version: u64) -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("too old resource version: 100 ({version})"), "reason": "Expired", "code": 410}})
}

/// A watch event or a document, one per line, as the API server streams them.
fn line(v: &Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert("content-type", "application/json".parse().unwrap());
    res
}

fn collection(object: &Value) -> &'static str {
    match object["kind"].as_str().unwrap() {
        "Service" => "/api/v1/services",
        "EndpointSlice" => "/apis/discovery.k8s.io/v1/endpointslices",
        "Pod" => "/api/v1/pods",
        "Namespace" => "/api/v1/namespaces",
        other => panic!("the fake serves no {other}"),
    }
}

fn type_of(path: &str) -> (&'static str, &'static str) {
    match path {
        "/api/v1/services" => ("v1", "Service"),
        "/apis/discovery.k8s.io/v1/endpointslices" => ("discovery.k8s.io/v1", "EndpointSlice"),
        "/api/v1/pods" => ("v1", "Pod"),
        _ => ("v1", "Namespace"),
    }
}

fn object_key(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (meta["namespace"].as_str().unwrap_or("").to_owned(), meta["name"].as_str().unwrap().to_owned())
}

fn namespace(name: &str, injected: bool) -> Value {
    let labels = if injected { json!({"pilotfish.io/inject": "enabled"}) } else { json!({}) };
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels, "annotations": {"pilotfish.io/log-level": "debug"}}})
}

fn pod(ns: &str, name: &str, account: &str, meshed: bool) -> Value {
    let annotations = if meshed { json!({"pilotfish.io/injected": "0.1.0"}) } else { json!({}) };
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations},
           "spec": {"serviceAccountName": account, "containers": [{"name": "app", "image": "app"}]}})
}

fn slice(ns: &str, name: &str, service: &str, port: (&str, u16), endpoints: &[(&str, &str, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod, ready)| {
            json!({"addresses": [ip],
            "conditions": {"ready": ready, "serving": ready, "terminating": !ready},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
           "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
           "ports": [{"name": port.0, "port": port.1, "protocol": "TCP"}], "endpoints": endpoints})
}

fn kubeconfig(dir: &std::path::Path, api: SocketAddr) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: 'http://{api}'}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// The control plane on `api`, and the data directory it keeps.
fn control_plane(api: SocketAddr) -> (tempfile::TempDir, ControlPlane) {
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), api);
    let data = dir.path().join("data");
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--kubernetes"];
    let cp = tokio::task::block_in_place(|| ControlPlane::launch_with_env(&args, &[("KUBECONFIG", &config)]));
    (dir, cp)
}

/// The Service document `service` in the sidecar's configuration in force.
async fn service_in_force(sc: &Sidecar, service: &str) -> Option<Value> {
    let config = sc.admin_get("/config").await.json();
    let resources = config["resources"].as_array()?;
    resources.iter().find(|r| r["kind"] == "Service" && r["metadata"]["name"] == service).cloned()
}

/// The endpoints of `service` in the sidecar's configuration in force: (address, identity).
async fn endpoints_in_force(sc: &Sidecar, service: &str) -> Option<Vec<(String, Option<String>)>> {
    let doc = service_in_force(sc, service).await?;
    let eps = doc["spec"]["endpoints"].as_array()?;
    Some(
        eps.iter()
            .map(|e| (e["address"].as_str().unwrap().to_owned(), e["identity"].as_str().map(Into::into)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_feed_the_sidecars_through_watches_relists_and_deletions() {
    let cluster = Cluster::new();
    let web = backend("web").await;
    let port = web.addr.port();
    cluster.put(namespace("shop", true)).await;
    cluster
        .put(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
                    "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                             "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}]}}))
        .await;
    cluster
        .put(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
                    "spec": {"clusterIP": "None", "ports": [{"port": 5432, "protocol": "TCP"}]}}))
        .await;
    cluster.put(pod("shop", "web-1", "web-sa", true)).await;
    cluster.put(pod("shop", "web-2", "web-sa", true)).await;
    cluster.put(pod("shop", "db-0", "db", false)).await;
    cluster.put(slice("shop", "web-a", "web", ("http", port), &[("127.0.0.1", "web-1", true)])).await;
    cluster.put(slice("shop", "db-a", "db", ("", 5432), &[("127.0.0.2", "db-0", true)])).await;
    cluster.0.lock().unwrap().tokens.insert(
        CLIENT_TOKEN.into(),
        ("system:serviceaccount:shop:client".into(), Some(vec!["pilotfish".into()])),
    );
    let api = cluster.clone().serve().await;
    let (dir, cp) = control_plane(api);

    // A sidecar of namespace `shop` proves itself with its ServiceAccount token file.
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{CLIENT_TOKEN}\n")).unwrap();
    let args = [
        "--control-plane",
        &cp.url(""),
        "--service",
        "client",
        "--namespace",
        "shop",
        "--token-file",
        token.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
        "--outbound",
        "127.0.0.1:0",
    ];
    let sc = tokio::task::block_in_place(|| Sidecar::start_managed(&args));

    let local = format!("127.0.0.1:{port}");
    let identity = Some("spiffe://pilotfish.local/ns/shop/sa/web-sa".to_owned());
    eventually("the sidecar has web's endpoint with its pod's identity", async || {
        (endpoints_in_force(&sc, "web").await? == [(local.clone(), identity.clone())]).then_some(())
    })
    .await;
    let web_doc = service_in_force(&sc, "web").await.unwrap();
    assert_eq!(web_doc["spec"]["addresses"], json!(["10.96.0.10"]), "{web_doc}");
    assert_eq!(
        web_doc["spec"]["ports"],
        json!([{"port": 80, "protocol": "http", "name": "http"}]),
        "{web_doc}"
    );
    // Headless: no virtual address; the pod has no sidecar, so no identity.
    assert_eq!(endpoints_in_force(&sc, "db").await.unwrap(), [("127.0.0.2:5432".to_owned(), None)]);
    let db = service_in_force(&sc, "db").await.unwrap();
    assert!(db["spec"].get("addresses").is_none(), "{db}");

    // A watch event adds an endpoint.
    let both = [("127.0.0.1", "web-1", true), ("127.0.0.3", "web-2", true)];
    cluster.put(slice("shop", "web-a", "web", ("http", port), &both)).await;
    eventually("the sidecar has both endpoints", async || {
        (endpoints_in_force(&sc, "web").await?.len() == 2).then_some(())
    })
    .await;
    // The watches asked for bookmarks; they get them and go on.
    eventually("bookmarks sent", async || (cluster.0.lock().unwrap().bookmarks > 0).then_some(())).await;

    // 410 Gone: the watch ends, the watcher lists again. The list is slow, and the endpoint the
    // cluster dropped meanwhile is only known from it: until it completes both stay in force.
    let slices = "/apis/discovery.k8s.io/v1/endpointslices";
    let lists = cluster.lists(slices);
    cluster.0.lock().unwrap().list_delay = Duration::from_secs(2);
    cluster.put_unwatched(slice("shop", "web-a", "web", ("http", port), &both[..1]));
    cluster.compact(slices);
    // Until then the sidecar keeps both (a watcher that dropped what it knew at the 410 would
    // leave none for the 2 s the list takes).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let eps = endpoints_in_force(&sc, "web").await.unwrap();
        if eps == [(local.clone(), identity.clone())] {
            break;
        }
        assert_eq!(eps.len(), 2, "endpoints lost before the re-list completed: {eps:?}");
        assert!(std::time::Instant::now() < deadline, "the re-list never replaced the slice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cluster.lists(slices) > lists, "a 410 Gone makes the watcher list again");
    cluster.0.lock().unwrap().list_delay = Duration::ZERO;

    // Traffic to the discovered service through the sidecar (the endpoint without identity: plain).
    cluster.put(pod("shop", "web-1", "web-sa", false)).await;
    eventually("the unmeshed pod's endpoint has no identity", async || {
        (endpoints_in_force(&sc, "web").await? == [(local.clone(), None)]).then_some(())
    })
    .await;
    let reply = crate::support::curl(&["-H", "Host: web.shop", &format!("http://{}/x", sc.outbound)]).await;
    assert_eq!(reply.status, 200, "{}", sc.stderr());

    // The slice goes: so do its endpoints. The Service goes: so does the service.
    cluster.delete(slice("shop", "web-a", "web", ("http", port), &[])).await;
    eventually("the deleted slice's endpoints are gone", async || {
        endpoints_in_force(&sc, "web").await?.is_empty().then_some(())
    })
    .await;
    cluster.delete(json!({"kind": "Service", "metadata": {"name": "web", "namespace": "shop"}})).await;
    eventually("the deleted service is gone", async || {
        endpoints_in_force(&sc, "web").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_reviewed_and_the_trust_bundle_reaches_labelled_namespaces() {
    let cluster = Cluster::new();
    cluster.put(namespace("shop", true)).await;
    cluster.put(namespace("other", false)).await;
    {
        let mut fake = cluster.0.lock().unwrap();
        let aud = |a: &str| Some(vec![a.to_owned()]);
        fake.tokens.insert(WEB_TOKEN.into(), ("system:serviceaccount:shop:web-sa".into(), aud("pilotfish")));
        // Valid, but answered by an authenticator that says nothing of audiences: the control
        // plane cannot know it is a mesh credential.
        fake.tokens.insert(API_TOKEN.into(), ("system:serviceaccount:shop:web-sa".into(), None));
        // For the API server only: the review itself refuses it for audience `pilotfish`.
        let other = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrdWJlIn0.c2lnNQ";
        fake.tokens.insert(
            other.into(),
            ("system:serviceaccount:shop:web-sa".into(), aud("https://kubernetes.default.svc")),
        );
        fake.tokens.insert(NODE_TOKEN.into(), ("system:node:n1".into(), aud("pilotfish")));
    }
    let api = cluster.clone().serve().await;
    let (dir, cp) = control_plane(api);

    // The certificate's identity is the reviewed account, not what the CSR asks for.
    let csr = greedy_csr(dir.path());
    let caller = |token: &str| {
        Client::builder(&cp.url("")).token(Some(token.into())).timeout(Duration::from_secs(20)).build()
    };
    let issued = caller(WEB_TOKEN).certify(&CertifyRequest::new(csr.clone())).await.unwrap();
    std::fs::write(dir.path().join("leaf.pem"), &issued.chain_pem).unwrap();
    let (ok, san) = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-ext", "subjectAltName"]);
    assert!(ok && san.contains("URI:spiffe://pilotfish.local/ns/shop/sa/web-sa"), "{san}");
    assert!(!san.contains("sa/admin"), "the CSR's name was ignored: {san}");
    for refused in [
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.bWFkZS11cA",
        API_TOKEN,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrdWJlIn0.c2lnNQ",
        NODE_TOKEN,
        "not-a-jwt",
    ] {
        let err = caller(refused).certify(&CertifyRequest::new(csr.clone())).await.unwrap_err();
        assert!(matches!(err, pilotfish_api::client::ClientError::Unauthorized(_)), "{refused}: {err}");
    }
    // An account acts for its own namespace's services only.
    let q = pilotfish_api::wire::PushQuery {
        id: "p1".into(),
        service: "web".into(),
        namespace: "other".into(),
        version: 0,
        protocol: None,
    };
    let err = caller(WEB_TOKEN).push(&q).await.err().expect("another namespace's push stream is refused");
    assert!(matches!(err, pilotfish_api::client::ClientError::Forbidden(_)), "{err}");

    // The trust bundle: in the labelled namespace, then in one labelled later; the webhook's
    // caBundle is the same roots.
    let bundle = cp.client().ca_bundle().await.unwrap();
    let written = |ns: &str| {
        let path = format!("/api/v1/namespaces/{ns}/configmaps/pilotfish-ca");
        cluster.writes().into_iter().find(|(m, p, _)| m == "PATCH" && *p == path).map(|(_, _, body)| body)
    };
    let shop = eventually("ConfigMap pilotfish-ca written in shop", async || written("shop")).await;
    assert_eq!(shop["data"]["ca.pem"].as_str(), Some(bundle.as_str()), "{shop}");
    assert_eq!(
        (shop["kind"].as_str(), shop["metadata"]["namespace"].as_str()),
        (Some("ConfigMap"), Some("shop"))
    );
    assert!(written("other").is_none(), "an unlabelled namespace gets no ConfigMap");
    cluster.put(namespace("other", true)).await;
    eventually("ConfigMap pilotfish-ca written in the newly labelled namespace", async || written("other"))
        .await;
    let webhook = cluster
        .writes()
        .into_iter()
        .find(|(m, _, _)| m == "PUT")
        .expect("the webhook configuration replaced")
        .2;
    let ca_bundle = webhook["webhooks"][0]["clientConfig"]["caBundle"].as_str().unwrap().to_owned();
    std::fs::write(dir.path().join("ca.b64"), ca_bundle).unwrap();
    let (ok, decoded) = openssl(dir.path(), &["base64", "-d", "-A", "-in", "ca.b64"]);
    assert!(ok && decoded == bundle, "caBundle is the base64 of the mesh's roots: {decoded}");

    // A root rotation adds a root to the bundle: the ConfigMaps and the webhook follow.
    cp.client().ca_rotate(&pilotfish_api::wire::RotateRequest { overlap: None }).await.unwrap();
    let rotated = cp.client().ca_bundle().await.unwrap();
    assert_ne!(rotated, bundle, "the new root joined the bundle");
    let holds_new = |body: &Value| body["data"]["ca.pem"].as_str() == Some(rotated.as_str());
    eventually("the ConfigMaps hold the rotated bundle", async || {
        let writes = cluster.writes();
        let both = ["shop", "other"].iter().all(|ns| {
            let path = format!("/api/v1/namespaces/{ns}/configmaps/pilotfish-ca");
            writes.iter().any(|(m, p, body)| m == "PATCH" && *p == path && holds_new(body))
        });
        both.then_some(())
    })
    .await;
    eventually("the webhook's caBundle holds the rotated bundle", async || {
        (cluster.writes().iter().filter(|(m, _, _)| m == "PUT").count() == 2).then_some(())
    })
    .await;
}

/// The proxy exactly as `pilotfish inject` writes it into a pod — its arguments and environment
/// — started against a `--kubernetes` control plane, with the trust bundle from the ConfigMap
/// the control plane wrote: it proves itself with the projected ServiceAccount token, gets a
/// certificate for the pod's account, becomes ready, and its status port answers the kubelet for
/// itself and for the app's rewritten probe. What stands in for the pod: loopback addresses, the
/// listeners on ports the test picks, files in a temporary directory for the mounted volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_proxy_runs_as_the_injector_wrote_it() {
    let cluster = Cluster::new();
    cluster.put(namespace("shop", true)).await;
    cluster.0.lock().unwrap().tokens.insert(
        WEB_TOKEN.into(),
        ("system:serviceaccount:shop:web-sa".into(), Some(vec!["pilotfish".into()])),
    );
    let api = cluster.clone().serve().await;
    let (dir, cp) = control_plane(api);
    let app = backend("web").await;
    let port = app.addr.port();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-1, namespace: shop, labels: {{app: web}}}}\nspec:\n  \
         serviceAccountName: web-sa\n  containers:\n  - name: web\n    image: web\n    ports: [{{containerPort: {port}}}]\n    \
         readinessProbe: {{httpGet: {{path: /healthz, port: {port}}}}}\n"
    );
    let out = crate::inject::pilotfish(&["inject", "-f", "-", "--control-plane", &cp.url("")], &manifest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pod: Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    let proxy = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "pilotfish-proxy")
        .expect("the proxy is a native sidecar")
        .clone();
    let probe = &pod["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    assert_eq!(
        (probe["path"].as_str(), probe["port"].as_u64()),
        (Some("/app-health/web/readiness"), Some(15021))
    );

    // The mounted volumes: the projected token, and the ConfigMap the control plane keeps.
    let token = dir.path().join("token");
    std::fs::write(&token, WEB_TOKEN).unwrap();
    let path = "/api/v1/namespaces/shop/configmaps/pilotfish-ca";
    let configmap = eventually("ConfigMap pilotfish-ca written in shop", async || {
        cluster.writes().into_iter().find(|(m, p, _)| m == "PATCH" && p == path).map(|(_, _, body)| body)
    })
    .await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, configmap["data"]["ca.pem"].as_str().unwrap()).unwrap();

    // The injector's arguments, with the pod's namespace and the listeners on free ports.
    let written: Vec<String> =
        proxy["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    assert_eq!(written[0], "sidecar");
    let mut args = Vec::new();
    let mut listener = false;
    for arg in &written[1..] {
        let arg = match arg.as_str() {
            "$(POD_NAMESPACE)" => "shop".to_owned(),
            _ if listener => "127.0.0.1:0".to_owned(),
            _ => arg.clone(),
        };
        listener = matches!(arg.as_str(), "--inbound" | "--outbound" | "--admin" | "--status");
        args.push(arg);
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for var in proxy["env"].as_array().unwrap() {
        let (name, value) = (var["name"].as_str().unwrap(), var["value"].as_str());
        let value = match name {
            "PILOTFISH_TOKEN_FILE" => token.to_str().unwrap(),
            "PILOTFISH_CA_FILE" => ca.to_str().unwrap(),
            _ => match value {
                Some(value) => value,
                None => continue, // from the downward API: the namespace, given above
            },
        };
        env.push((name.to_owned(), value.to_owned()));
    }
    assert!(env.iter().any(|(n, _)| n == "PILOTFISH_APP_PROBES"), "{env:?}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let sc = tokio::task::block_in_place(|| Sidecar::start_managed_with_env(&args, &env));
    let status = sc.status.expect("the status listener");

    eventually("the injected proxy is ready on its status port", async || {
        (crate::support::curl(&[&format!("http://{status}/ready")]).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(
        crate::support::curl(&[&format!("http://{status}/app-health/web/readiness")]).await.status,
        200
    );
    assert!(
        app.faults.probes.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the app's own probe was asked"
    );
    let identity = sc.admin_get("/identity").await.json();
    assert!(identity.to_string().contains("spiffe://pilotfish.local/ns/shop/sa/web-sa"), "{identity}");
    let proxies = cp.client().proxies().await.unwrap();
    let listed = serde_json::to_string(&proxies).unwrap();
    assert!(listed.contains("web.shop-"), "the proxy is listed under its service: {listed}");
}
