//! The API's trust rules, through the real router: authentication before any parsing, no
//! existence oracle for other services' instances, proxies bound to their service, a bounded
//! cost for history reads, and 503 with `Retry-After` while the store is unreachable.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::Response;
use serde_json::json;
use tower::ServiceExt;

use super::extract::Shared;
use super::{openapi, router};
use crate::core::{ControlPlane, Settings, PAGE_BYTES, PAGE_EVENTS};
use crate::history::FIRST_SPACING;
use crate::model::kind;
use crate::store::testing::{log_of, Instrumented};
use crate::store::{AppendRequest, EventStore};

const ADMIN: &str = "admin-secret";

async fn control_plane(store: Arc<dyn EventStore>) -> Shared {
    ControlPlane::open(store, Settings::new(ADMIN.to_owned()), crate::ca::testing::ca()).await.unwrap()
}

async fn empty() -> (tempfile::TempDir, Arc<Instrumented>, Shared) {
    let (dir, store) = log_of(0).await;
    let cp = control_plane(store.clone()).await;
    (dir, store, cp)
}

/// One request: (status, headers, body as JSON or Null).
async fn call(
    cp: &Shared,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let res = send(cp, method, uri, token, body).await;
    let (parts, body) = res.into_parts();
    let bytes = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
    (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

async fn send(cp: &Shared, method: &str, uri: &str, token: Option<&str>, body: &str) -> Response {
    let mut req = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    router(cp).oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap()
}

async fn join_token(cp: &Shared, service: &str) -> String {
    let body = format!(r#"{{"service": "{service}"}}"#);
    let (status, _, out) = call(cp, "POST", "/v1/tokens", Some(ADMIN), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    out["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_error_is_json_even_from_routing_and_extractors() {
    let (_dir, _store, cp) = empty().await;
    let (status, headers, body) = call(&cp, "PATCH", "/v1/resources", None, "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].is_string(), "{body}");
    let allow = headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow:?}");
    for (method, uri, token, body) in [
        ("GET", "/v1/nothing-here", None, ""),
        ("GET", "/v1/events?since=abc", Some(ADMIN), ""),
        ("POST", "/v1/rollback", Some(ADMIN), "{bad"),
        ("POST", "/v1/rollback", Some(ADMIN), r#"{"toSeq": "x"}"#),
    ] {
        let (status, _, out) = call(&cp, method, uri, token, body).await;
        assert!(status.is_client_error(), "{method} {uri}: {status}");
        assert!(out["error"].is_string(), "{method} {uri} {body}: {status} {out}");
    }
}

#[tokio::test]
async fn every_operation_that_needs_a_token_answers_401_before_reading_the_request() {
    let (_dir, _store, cp) = empty().await;
    let doc = serde_json::to_value(openapi()).unwrap();
    let operations = doc["paths"].as_object().unwrap().iter().flat_map(|(path, ops)| {
        ops.as_object().unwrap().iter().map(move |(method, op)| (path.clone(), method.clone(), op.clone()))
    });
    let secured: Vec<_> = operations.filter(|(_, _, op)| op.get("security").is_some()).collect();
    assert!(secured.len() >= 9, "{secured:?}");
    for (op_path, op_method, _) in secured {
        let (method, path) = (op_method.to_uppercase(), op_path.replace(['{', '}'], ""));
        // A malformed query, path and body: without a valid token none of it may be looked at.
        let uri = format!("{path}?version=not-a-number&service=Not_A_Name&limit=x");
        for token in [None, Some("nope"), Some("made.up")] {
            let (status, _, body) = call(&cp, &method, &uri, token, "{not json").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{op_method} {op_path} with {token:?}: {body}");
        }
        let (status, _, body) = call(&cp, &method, &uri, Some(ADMIN), "{not json").await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{op_method} {op_path} refused the admin: {body}");
    }
}

#[tokio::test]
async fn a_join_token_cannot_tell_another_services_endpoint_from_a_missing_one() {
    let (_dir, _store, cp) = empty().await;
    let users = r#"{"service": "users", "address": "127.0.0.1:9001"}"#;
    let (status, _, out) = call(&cp, "POST", "/v1/endpoints", Some(ADMIN), users).await;
    assert_eq!(status, StatusCode::CREATED);
    let existing = out["id"].as_str().unwrap().to_owned();
    let missing = "users.default-127.0.0.1-9999";
    let web = join_token(&cp, "web").await;
    for (method, path) in [("PUT", "/v1/endpoints/{id}/heartbeat"), ("DELETE", "/v1/endpoints/{id}")] {
        let answer = async |token: &str, id: &str| {
            let (status, _, body) = call(&cp, method, &path.replace("{id}", id), Some(token), "").await;
            (status, body["error"].as_str().unwrap_or_default().replace(id, "ID"))
        };
        let foreign = answer(&web, &existing).await;
        assert_eq!(foreign.0, StatusCode::NOT_FOUND, "{method} {path}: {foreign:?}");
        assert_eq!(foreign, answer(&web, missing).await, "{method} {path}: the answers differ");
        for id in [existing.as_str(), missing] {
            assert_eq!(answer("made.up", id).await.0, StatusCode::UNAUTHORIZED, "{method} {id}");
        }
    }
    // The admin still reaches it.
    let (status, _, _) =
        call(&cp, "PUT", &format!("/v1/endpoints/{existing}/heartbeat"), Some(ADMIN), "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_proxy_id_claimed_under_another_service_does_not_displace_the_real_one() {
    let (_dir, _store, cp) = empty().await;
    let (users, evil) = (join_token(&cp, "users").await, join_token(&cp, "evil").await);
    let id = "users.default-1";
    let real = send(&cp, "GET", &format!("/v1/push?id={id}&service=users"), Some(&users), "").await;
    assert_eq!(real.status(), StatusCode::OK);
    // Another service's token claims the same id: for its own service, or for users.
    let claim = send(&cp, "GET", &format!("/v1/push?id={id}&service=users"), Some(&evil), "").await;
    assert_eq!(claim.status(), StatusCode::FORBIDDEN);
    let squat = send(&cp, "GET", &format!("/v1/push?id={id}&service=evil"), Some(&evil), "").await;
    assert_eq!(squat.status(), StatusCode::OK);

    let ack = r#"{"version": 0}"#;
    let (status, _, body) =
        call(&cp, "POST", &format!("/v1/proxies/{id}/ack?service=users"), Some(&users), ack).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the real sidecar's ACK lands: {body}");
    let (status, _, _) =
        call(&cp, "POST", &format!("/v1/proxies/{id}/ack?service=users"), Some(&evil), ack).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, _, list) = call(&cp, "GET", "/v1/proxies", Some(ADMIN), "").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let mine = items.iter().find(|p| p["service"] == "users").unwrap();
    assert_eq!(mine["connected"], true, "{list}");
    drop((real, squat));
}

#[tokio::test]
async fn a_diff_reads_a_bounded_number_of_events_however_long_the_log() {
    let (_dir, store) = log_of(10_000).await;
    let cp = control_plane(store.clone()).await;
    let (status, _, first) = call(&cp, "GET", "/v1/diff?from=9990&to=10000", Some(ADMIN), "").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    for (from, to) in [(9990, 10_000), (0, 10_000), (1, 2), (4321, 8765), (9999, 10_000)] {
        store.read.store(0, Ordering::Relaxed);
        let (status, _, body) =
            call(&cp, "GET", &format!("/v1/diff?from={from}&to={to}"), Some(ADMIN), "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let read = store.read.load(Ordering::Relaxed) as u64;
        assert!(read < 2 * FIRST_SPACING, "diff {from}..{to} read {read} of 10000 events");
    }
    let (_, _, again) = call(&cp, "GET", "/v1/diff?from=9990&to=10000", Some(ADMIN), "").await;
    assert_eq!(first, again);
    assert_eq!(first["changes"].as_array().unwrap().len(), 10, "{first}");
}

#[tokio::test]
async fn event_pages_are_bounded_in_events_and_in_bytes() {
    let (_dir, store) = log_of(1500).await;
    let cp = control_plane(store.clone()).await;
    let (_, _, page) = call(&cp, "GET", "/v1/events?limit=5000", Some(ADMIN), "").await;
    assert_eq!(page["events"].as_array().unwrap().len(), PAGE_EVENTS);

    let (_dir, store, cp) = empty().await;
    let big = "x".repeat(500 * 1024);
    for i in 0..20 {
        let doc = json!({ "kind": "Service", "spec": { "big": big } });
        let append = AppendRequest::new(format!("Service/default/s{i}"), kind::RESOURCE_APPLIED, doc, "test");
        store.append(append).await.unwrap();
    }
    let (_, _, page) = call(&cp, "GET", "/v1/events", Some(ADMIN), "").await;
    let n = page["events"].as_array().unwrap().len();
    assert!((1..20).contains(&n), "{n} events of 500 KiB in one page");
    assert!(n * 500 * 1024 <= PAGE_BYTES, "{n}");
}

#[tokio::test]
async fn an_unreachable_store_makes_the_replica_unready_and_calls_503_with_retry_after() {
    let (_dir, store, cp) = empty().await;
    let (status, _, _) = call(&cp, "GET", "/readyz", None, "").await;
    assert_eq!(status, StatusCode::OK);
    store.down.store(true, Ordering::Relaxed);
    let (status, headers, body) = call(&cp, "GET", "/readyz", None, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].as_str().unwrap().contains("unreachable"), "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "2");
    let doc = "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec: {}\n";
    for (method, uri, token, body) in [
        ("GET", "/v1/resources", Some(ADMIN), ""),
        ("GET", "/v1/events", Some(ADMIN), ""),
        ("GET", "/v1/proxies", Some(ADMIN), ""),
        ("POST", "/v1/resources", Some(ADMIN), doc),
        ("POST", "/v1/tokens", Some(ADMIN), r#"{"service": "web"}"#),
    ] {
        let (status, headers, out) = call(&cp, method, uri, token, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}: {out}");
        assert!(headers.contains_key(header::RETRY_AFTER), "{method} {uri}");
    }
    store.down.store(false, Ordering::Relaxed);
    assert_eq!(call(&cp, "GET", "/readyz", None, "").await.0, StatusCode::OK);
    assert_eq!(call(&cp, "POST", "/v1/resources", Some(ADMIN), doc).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_sidecar_one_version_back_acks_without_naming_its_service() {
    let (_dir, _store, cp) = empty().await;
    let web = join_token(&cp, "web").await;
    let doc = "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec: {}\n";
    assert_eq!(call(&cp, "POST", "/v1/resources", Some(ADMIN), doc).await.0, StatusCode::OK);
    let (_, _, list) = call(&cp, "GET", "/v1/proxies", Some(ADMIN), "").await;
    let head = list["version"].as_u64().unwrap();
    let stream = send(&cp, "GET", "/v1/push?id=web-1&service=web", Some(&web), "").await;
    assert_eq!(stream.status(), StatusCode::OK);

    let ack = format!(r#"{{"version": {head}}}"#);
    let (status, _, body) = call(&cp, "POST", "/v1/proxies/web-1/ack", Some(&web), &ack).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, _, list) = call(&cp, "GET", "/v1/proxies", Some(ADMIN), "").await;
    assert_eq!(list["items"][0]["current"], true, "{list}");
    // The admin may ACK for any service, so it must say which.
    let (status, _, body) = call(&cp, "POST", "/v1/proxies/web-1/ack", Some(ADMIN), &ack).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("service is required"), "{body}");
    drop(stream);
}

#[tokio::test]
async fn an_ack_with_malformed_trusted_roots_is_refused_and_a_good_one_is_listed() {
    let (_dir, _store, cp) = empty().await;
    let web = join_token(&cp, "web").await;
    let stream = send(&cp, "GET", "/v1/push?id=web-1&service=web", Some(&web), "").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let ack = |roots: serde_json::Value| json!({ "version": 0, "trustedRoots": roots }).to_string();
    let (root, other) = ("ab".repeat(32), "cd".repeat(32));
    for bad in [json!(["AB".repeat(32)]), json!(["ab"]), json!(vec![root.clone(); 17])] {
        let (status, _, body) =
            call(&cp, "POST", "/v1/proxies/web-1/ack?service=web", Some(&web), &ack(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains("trustedRoots"), "{bad}: {body}");
    }
    let (_, _, list) = call(&cp, "GET", "/v1/proxies", Some(ADMIN), "").await;
    assert!(list["items"][0].get("trustedRoots").is_none(), "nothing refused is stored: {list}");
    let good = ack(json!([root, other]));
    let (status, _, body) = call(&cp, "POST", "/v1/proxies/web-1/ack?service=web", Some(&web), &good).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, _, list) = call(&cp, "GET", "/v1/proxies", Some(ADMIN), "").await;
    assert_eq!(list["items"][0]["trustedRoots"], json!([root, other]), "{list}");
    drop(stream);
}

#[tokio::test]
async fn a_made_up_join_token_is_refused_without_a_store_read() {
    let (_dir, store, cp) = empty().await;
    store.down.store(true, Ordering::Relaxed);
    for (method, uri) in
        [("GET", "/v1/push?id=x&service=web"), ("POST", "/v1/endpoints"), ("POST", "/v1/proxies/x/ack")]
    {
        let (status, _, body) = call(&cp, method, uri, Some("random.x"), "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {body}");
    }
    // A token written to the log behind this replica's back (by another one) is still known.
    store.down.store(false, Ordering::Relaxed);
    let record = crate::model::TokenRecord {
        id: "elsewhere".into(),
        service: "web".into(),
        namespace: "default".into(),
        secret_sha256: crate::core::sha256_hex(b"s3cret"),
        kind: crate::model::TokenKind::Join,
        expires_at: None,
    };
    let created = AppendRequest::new("Token/elsewhere", kind::TOKEN_CREATED, json!(record), "admin");
    store.append(created).await.unwrap();
    let stream = send(&cp, "GET", "/v1/push?id=web-1&service=web", Some("elsewhere.s3cret"), "").await;
    assert_eq!(stream.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_event_page_reads_at_most_one_chunk_beyond_its_bytes() {
    let (_dir, store, cp) = empty().await;
    let big = "x".repeat(500 * 1024);
    for i in 0..40 {
        let doc = json!({ "kind": "Service", "spec": { "big": big } });
        let append = AppendRequest::new(format!("Service/default/s{i}"), kind::RESOURCE_APPLIED, doc, "test");
        store.append(append).await.unwrap();
    }
    store.read.store(0, Ordering::Relaxed);
    let (_, _, page) = call(&cp, "GET", "/v1/events", Some(ADMIN), "").await;
    let n = page["events"].as_array().unwrap().len();
    let read = store.read.load(Ordering::Relaxed);
    // The page's 4 MiB and one chunk of 8 events beyond it, not a whole store read of 100.
    assert!(read <= n + 8, "{read} events of 500 KiB read for a page of {n}");
}

#[tokio::test]
async fn one_service_cannot_hold_push_streams_without_end() {
    let (_dir, store) = log_of(0).await;
    let settings = Settings { max_proxies_per_service: 2, ..Settings::new(ADMIN.to_owned()) };
    let cp = ControlPlane::open(store, settings, crate::ca::testing::ca()).await.unwrap();
    let web = join_token(&cp, "web").await;
    let streams: Vec<_> = open_streams(&cp, &web, 2).await;
    let refused = send(&cp, "GET", "/v1/push?id=web-3&service=web", Some(&web), "").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = http_body_util::BodyExt::collect(refused.into_body()).await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("--max-proxies-per-service"), "{body}");
    drop(streams);
}

async fn open_streams(cp: &Shared, token: &str, n: usize) -> Vec<Response> {
    let mut streams = Vec::new();
    for i in 1..=n {
        let stream = send(cp, "GET", &format!("/v1/push?id=web-{i}&service=web"), Some(token), "").await;
        assert_eq!(stream.status(), StatusCode::OK);
        streams.push(stream);
    }
    streams
}

#[tokio::test]
async fn a_seq_past_the_head_is_404_and_a_diff_runs_either_way() {
    let (_dir, _store, cp) = empty().await;
    let (status, _, body) = call(&cp, "GET", "/v1/diff?from=5", Some(ADMIN), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, body) = call(&cp, "POST", "/v1/rollback", Some(ADMIN), r#"{"toSeq": 9}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let doc = |port: u16| {
        format!("apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: a}}\nspec: {{ports: [{{port: {port}}}]}}\n")
    };
    for port in [80, 81] {
        assert_eq!(call(&cp, "POST", "/v1/resources", Some(ADMIN), &doc(port)).await.0, StatusCode::OK);
    }
    let (_, _, forward) = call(&cp, "GET", "/v1/diff?from=1&to=2", Some(ADMIN), "").await;
    let (status, _, backward) = call(&cp, "GET", "/v1/diff?from=2&to=1", Some(ADMIN), "").await;
    assert_eq!(status, StatusCode::OK, "{backward}");
    let change =
        |diff: &serde_json::Value, side: &str| diff["changes"][0][side]["spec"]["ports"][0]["port"].clone();
    assert_eq!((change(&forward, "before"), change(&forward, "after")), (json!(80), json!(81)));
    assert_eq!((change(&backward, "before"), change(&backward, "after")), (json!(81), json!(80)));
}

#[tokio::test]
async fn integers_are_int64_and_may_come_with_a_zero_fraction() {
    let (_dir, _store, cp) = empty().await;
    // The document types them as int64: beyond it is refused, not silently accepted.
    let (status, _, body) = call(&cp, "GET", "/v1/events?since=9223372036854775808", Some(ADMIN), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        call(&cp, "GET", "/v1/events?since=9223372036854775807", Some(ADMIN), "").await.0,
        StatusCode::OK
    );
    // JSON Schema's integer includes 0.0.
    let (status, _, body) = call(&cp, "POST", "/v1/rollback", Some(ADMIN), r#"{"toSeq": 0.0}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = call(&cp, "POST", "/v1/rollback", Some(ADMIN), r#"{"toSeq": 0.5}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_peer_two_protocols_away_is_refused_with_the_reason() {
    let (_dir, _store, cp) = empty().await;
    let far = pilotfish_api::wire::SUPPORTED_PROTOCOLS.end() + 1;
    let registration = format!(r#"{{"protocol": {far}, "service": "web", "address": "127.0.0.1:9001"}}"#);
    let (status, _, body) = call(&cp, "POST", "/v1/endpoints", Some(ADMIN), &registration).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not supported"), "{body}");
    let ack = format!(r#"{{"protocol": {far}, "version": 0}}"#);
    let (status, _, body) = call(&cp, "POST", "/v1/proxies/web-1/ack?service=web", Some(ADMIN), &ack).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let uri = format!("/v1/push?id=web-1&service=web&protocol={far}");
    assert_eq!(send(&cp, "GET", &uri, Some(ADMIN), "").await.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn the_document_types_every_body_and_parameter_and_says_what_the_server_checks() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let param = |op: &serde_json::Value, name: &str| {
        op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["schema"].clone()
    };
    assert_eq!(param(&op("/v1/events", "get"), "since")["type"], "integer");
    assert_eq!(param(&op("/v1/diff", "get"), "from")["type"], "integer");
    let kinds = doc["components"]["schemas"]["KindName"]["enum"].as_array().unwrap().clone();
    assert!(kinds.contains(&json!("HTTPRoute")) && kinds.contains(&json!("httproutes")), "{kinds:?}");
    let token = &doc["components"]["schemas"]["TokenRequest"];
    assert_eq!(token["allOf"][0]["properties"]["service"]["pattern"], super::doc::NAME_PATTERN);
    let shapes = token["allOf"][1]["oneOf"].as_array().unwrap();
    assert_eq!(shapes[0]["required"], json!(["service"]), "a join token names its service");
    let identity = &doc["components"]["schemas"]["Registration"]["properties"]["identity"]["pattern"];
    assert_eq!(identity, super::doc::IDENTITY_PATTERN);
    // The push stream documents its lines; its protocol range is the one the server accepts.
    let push = op("/v1/push", "get");
    let line = &push["responses"]["200"]["content"]["application/x-ndjson"]["schema"]["$ref"];
    assert_eq!(line, "#/components/schemas/PushLine");
    let protocol = param(&push, "protocol");
    let supported = pilotfish_api::wire::SUPPORTED_PROTOCOLS;
    assert_eq!(
        (protocol["minimum"].clone(), protocol["maximum"].clone()),
        (json!(supported.start()), json!(supported.end()))
    );
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // Every operation that takes a body has its schema, and every error answer is an ErrorBody.
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            for media in op["requestBody"]["content"].as_object().into_iter().flat_map(|c| c.values()) {
                assert!(media["schema"].is_object(), "{method} {path}: a body without a schema");
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let name = response["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                    let content = &doc["components"]["responses"][name]["content"]["application/json"];
                    assert_eq!(
                        content["schema"]["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn an_idempotency_key_replays_its_registration_and_refuses_another() {
    let (_dir, _store, cp) = empty().await;
    let register = |address: &'static str| {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/endpoints")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header("idempotency-key", "k1")
            .body(Body::from(format!(r#"{{"service": "web", "address": "{address}"}}"#)))
            .unwrap();
        router(&cp).oneshot(req)
    };
    let first = register("127.0.0.1:9001").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = register("127.0.0.1:9001").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED, "a retry answers like the first");
    let other = register("127.0.0.1:9002").await.unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT, "the key was first used for another instance");
    let (_, _, list) = call(&cp, "GET", "/v1/endpoints", Some(ADMIN), "").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_a_json_error() {
    let (_dir, _store, cp) = empty().await;
    let huge = "#".repeat(3 << 20);
    for uri in ["/v1/resources", "/v1/endpoints"] {
        let (status, _, body) = call(&cp, "POST", uri, Some(ADMIN), &huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("limit")), "{uri}: {body}");
    }
}

#[tokio::test]
async fn parameters_and_answers_are_documented_as_the_server_treats_them() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let param = |path: &str, method: &str, name: &str| {
        let op = &doc["paths"][path][method];
        op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone()
    };
    let ack = "/v1/proxies/{id}/ack";
    assert_eq!(param(ack, "post", "service")["required"], false, "a join token's sidecar leaves it out");
    assert!(doc["paths"][ack]["post"]["responses"]["503"].is_object());
    let apply = &doc["paths"]["/v1/resources"]["post"]["requestBody"]["content"];
    assert_eq!(apply["application/yaml"]["schema"]["type"], "string", "a stream, not one document");
    assert_eq!(param("/v1/resources", "get", "kind")["schema"]["$ref"], "#/components/schemas/KindName");
    let (_dir, _store, cp) = empty().await;
    // A path that is not UTF-8 is refused before anything else is looked at.
    for (method, path, uri) in [
        ("put", "/v1/endpoints/{id}/heartbeat", "/v1/endpoints/%FF/heartbeat"),
        ("delete", "/v1/endpoints/{id}", "/v1/endpoints/%FF"),
    ] {
        let (status, _, body) = call(&cp, &method.to_uppercase(), uri, Some(ADMIN), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(doc["paths"][path][method]["responses"]["400"].is_object(), "{method} {path}");
    }
    // The push stream's version is an int64 like every other.
    assert_eq!(param("/v1/push", "get", "version")["schema"]["format"], "int64");
    let too_far = "/v1/push?id=web-1&service=web&version=9223372036854775808";
    let (status, _, body) = call(&cp, "GET", too_far, Some(ADMIN), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_read_only_token_reads_and_cannot_write_and_a_join_token_reads_only_its_stream() {
    let (_dir, _store, cp) = empty().await;
    let (status, _, created) =
        call(&cp, "POST", "/v1/tokens", Some(ADMIN), r#"{"kind": "readOnly", "ttl": "1h"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created.get("service").is_none() && created["expiresAt"].is_string(), "{created}");
    let reader = created["token"].as_str().unwrap().to_owned();
    let web = join_token(&cp, "web").await;
    for uri in ["/v1/resources", "/v1/events", "/v1/diff?from=0", "/v1/endpoints", "/v1/proxies"] {
        assert_eq!(call(&cp, "GET", uri, Some(&reader), "").await.0, StatusCode::OK, "{uri}");
        let (status, _, body) = call(&cp, "GET", uri, None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(body["error"].as_str().unwrap().contains("pilotfish token create"), "{body}");
        assert_eq!(call(&cp, "GET", uri, Some(&web), "").await.0, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let doc = "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec: {}\n";
    for (method, uri, body) in [
        ("POST", "/v1/resources", doc),
        ("POST", "/v1/tokens", r#"{"service": "web"}"#),
        ("POST", "/v1/rollback", r#"{"toSeq": 0}"#),
        ("DELETE", "/v1/resources/service/default/a", ""),
        ("POST", "/v1/endpoints", r#"{"service": "web", "address": "127.0.0.1:1"}"#),
    ] {
        let (status, _, out) = call(&cp, method, uri, Some(&reader), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {out}");
        assert!(out["error"].as_str().unwrap().contains("read-only"), "{out}");
    }
    for (body, why) in [
        (r#"{"kind": "readOnly", "service": "web"}"#, "a read-only token names no service"),
        (r#"{"kind": "join"}"#, "a join token names its service"),
    ] {
        assert_eq!(
            call(&cp, "POST", "/v1/tokens", Some(ADMIN), body).await.0,
            StatusCode::BAD_REQUEST,
            "{why}"
        );
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_like_a_wrong_one() {
    let (_dir, store, cp) = empty().await;
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let record = |id: &str, kind, expires_at: std::time::SystemTime| crate::model::TokenRecord {
        id: id.into(),
        kind,
        service: "web".into(),
        namespace: "default".into(),
        secret_sha256: crate::core::sha256_hex(b"s3cret"),
        expires_at: Some(expires_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()),
    };
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    for r in [
        record("oldjoin", crate::model::TokenKind::Join, past),
        record("oldreader", crate::model::TokenKind::ReadOnly, past),
        record("reader", crate::model::TokenKind::ReadOnly, later),
    ] {
        let id = r.id.clone();
        store
            .append(AppendRequest::new(format!("Token/{id}"), kind::TOKEN_CREATED, json!(r), "admin"))
            .await
            .unwrap();
    }
    cp.refresh().await.unwrap();
    let (status, _, body) =
        call(&cp, "GET", "/v1/push?id=web-1&service=web", Some("oldjoin.s3cret"), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].as_str().unwrap().contains("expired"), "{body}");
    assert_eq!(
        call(&cp, "GET", "/v1/resources", Some("oldreader.s3cret"), "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call(&cp, "GET", "/v1/resources", Some("reader.s3cret"), "").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_token_ttl_of_a_decade_is_taken() {
    let (_dir, _store, cp) = empty().await;
    for ttl in ["2966s89314h", "99999h"] {
        let body = format!(r#"{{"kind": "readOnly", "ttl": "{ttl}"}}"#);
        let (status, _, created) = call(&cp, "POST", "/v1/tokens", Some(ADMIN), &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let at = created["expiresAt"].as_str().unwrap();
        assert!(at > "2036" && at <= "9999-12-31T23:59:59Z", "{created}");
        let reader = created["token"].as_str().unwrap();
        assert_eq!(call(&cp, "GET", "/v1/events", Some(reader), "").await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_root_rotation_moves_through_its_phases_and_only_the_admin_starts_one() {
    let (dir, store) = log_of(0).await;
    let ca = crate::ca::Ca::open(&dir.path().join("ca")).unwrap();
    let cp = ControlPlane::open(store, Settings::new(ADMIN.to_owned()), ca).await.unwrap();
    let web = join_token(&cp, "web").await;
    let (status, _, _) = call(&cp, "POST", "/v1/ca/rotate", Some(&web), "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a join token cannot rotate");
    let (_, _, before) = call(&cp, "GET", "/v1/ca", Some(ADMIN), "").await;
    let old = before["roots"][0]["fingerprint"].as_str().unwrap().to_owned();

    let (status, _, started) = call(&cp, "POST", "/v1/ca/rotate", Some(ADMIN), r#"{"overlap": "0s"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["rotation"]["phase"], "distributing", "{started}");
    let new = started["rotation"]["newRoot"].as_str().unwrap().to_owned();
    let roots: Vec<_> = started["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["fingerprint"].clone(), r["active"].clone()))
        .collect();
    assert_eq!(
        roots,
        [(json!(old), json!(true)), (json!(new), json!(false))],
        "both trusted, the old one issuing"
    );
    let (_, line) = cp.snapshot_line(&*cp.state().read().await);
    let pushed: pilotfish_api::wire::PushLine = serde_json::from_slice(&line).unwrap();
    let mesh = pushed.mesh.unwrap();
    assert_eq!(mesh.trust_bundle_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert_eq!(mesh.renew_before, None, "nobody renews before the new issuer signs");

    let metrics = send(&cp, "GET", "/metrics", None, "").await.into_body();
    let metrics = http_body_util::BodyExt::collect(metrics).await.unwrap().to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("\npilotfish_ca_rotation_phase 1\n"), "{metrics}");
    assert_eq!(metrics.matches("pilotfish_ca_root_expiry_timestamp_seconds{root=").count(), 2);

    let (status, _, again) = call(&cp, "POST", "/v1/ca/rotate", Some(ADMIN), "{}").await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(again["error"].as_str().unwrap().contains("under way"), "{again}");

    // No sidecar is connected: each phase moves on at the next tick.
    cp.drive_rotation().await;
    let (_, _, renewing) = call(&cp, "GET", "/v1/ca", Some(ADMIN), "").await;
    assert_eq!(renewing["rotation"]["phase"], "renewing", "{renewing}");
    assert_eq!(renewing["roots"][1]["active"], true, "the new root issues: {renewing}");
    let (_, line) = cp.snapshot_line(&*cp.state().read().await);
    let pushed: pilotfish_api::wire::PushLine = serde_json::from_slice(&line).unwrap();
    assert!(pushed.mesh.unwrap().renew_before.is_some(), "sidecars are told to renew");

    cp.drive_rotation().await;
    let (_, _, done) = call(&cp, "GET", "/v1/ca", Some(ADMIN), "").await;
    assert_eq!(done["rotation"], serde_json::Value::Null, "{done}");
    assert_eq!(
        done["roots"],
        json!([{ "fingerprint": new, "notAfter": done["roots"][0]["notAfter"], "active": true }])
    );
    let (_, _, log) = call(&cp, "GET", "/v1/events", Some(ADMIN), "").await;
    let kinds: Vec<_> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("Ca"))
        .collect();
    assert_eq!(kinds, ["CaRootAdded", "CaIssuerActivated", "CaRootRetired"]);
}

#[tokio::test]
async fn a_supplied_ca_is_not_rotated_by_the_control_plane() {
    let (_dir, _store, cp) = empty().await;
    let (status, _, out) = call(&cp, "POST", "/v1/ca/rotate", Some(ADMIN), "{}").await;
    assert_eq!(status, StatusCode::CONFLICT, "{out}");
    assert!(out["error"].as_str().unwrap().contains("--ca-cert/--ca-key"), "{out}");
}

/// The next non-empty line of a streamed body (every line is a frame of its own), within 5 s.
async fn next_line(body: &mut Body) -> String {
    let read = async {
        loop {
            let frame = http_body_util::BodyExt::frame(body).await.expect("the stream goes on").unwrap();
            let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
            if !text.trim().is_empty() {
                return text;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read).await.expect("a line within 5 s")
}

/// A tap goes to the push streams of its service that read tap lines (protocol 2 and later;
/// an older sidecar would take one for a malformed snapshot) as soon as it opens; events a
/// sidecar of the service reports reach it; and when its client goes away, an empty tap line
/// stops the sidecars.
#[tokio::test]
async fn a_tap_reaches_the_push_streams_that_read_tap_lines_and_its_end_stops_them() {
    let (_dir, _store, cp) = empty().await;
    let push = |id: &str, protocol: u32| format!("/v1/push?id={id}&service=web&protocol={protocol}");
    let mut new = send(&cp, "GET", &push("web-1", 2), Some(ADMIN), "").await.into_body();
    let mut old = send(&cp, "GET", &push("web-2", 1), Some(ADMIN), "").await.into_body();
    let mut other =
        send(&cp, "GET", "/v1/push?id=db-1&service=db&protocol=2", Some(ADMIN), "").await.into_body();
    for stream in [&mut new, &mut old, &mut other] {
        assert!(next_line(stream).await.contains("\"config\""), "a snapshot first");
    }

    let tap = send(&cp, "GET", "/v1/tap?service=web&method=GET", Some(ADMIN), "").await;
    assert_eq!(tap.status(), StatusCode::OK);
    assert_eq!(tap.headers()[header::CONTENT_TYPE], "application/x-ndjson");
    let mut tap = tap.into_body();
    let line: serde_json::Value = serde_json::from_str(&next_line(&mut new).await).unwrap();
    assert_eq!(line, json!({ "protocol": 2, "tap": { "filters": [{ "method": "GET" }] } }));
    for stream in [&mut old, &mut other] {
        let silent = tokio::time::timeout(std::time::Duration::from_millis(300), next_line(stream)).await;
        assert!(silent.is_err(), "protocol 1, or another service: no tap line");
    }

    let event = json!({
        "at": "2026-12-03T08:00:00.000Z", "direction": "inbound", "method": "GET", "authority": "web",
        "path": "/x", "status": 200, "latencyMs": 1.0, "secured": false,
    });
    let report = json!({ "protocol": 2, "events": [event.clone(), with_method(&event, "POST")] });
    let (status, _, body) =
        call(&cp, "POST", "/v1/proxies/web-1/tap?service=web", Some(ADMIN), &report.to_string()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let mut long = event.clone();
    long["path"] = json!(format!("/{}", "a".repeat(64 * 1024)));
    let report = json!({ "protocol": 2, "events": [long] });
    let (status, _, body) =
        call(&cp, "POST", "/v1/proxies/web-1/tap?service=web", Some(ADMIN), &report.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an event past its bounds is refused: {body}");
    assert!(body.to_string().contains("events[0].path"), "{body}");
    let got: serde_json::Value = serde_json::from_str(&next_line(&mut tap).await).unwrap();
    assert_eq!(
        (got["event"]["method"].clone(), got["event"]["proxy"].clone()),
        (json!("GET"), json!("web-1"))
    );

    drop(tap);
    let line: serde_json::Value = serde_json::from_str(&next_line(&mut new).await).unwrap();
    assert_eq!(line["tap"], json!({ "filters": [] }), "the client went away: stop");
}

fn with_method(event: &serde_json::Value, method: &str) -> serde_json::Value {
    let mut e = event.clone();
    e["method"] = json!(method);
    e
}
