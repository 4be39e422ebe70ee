//! The typed client against a stand-in server on a real socket: what it sends, and how it reads
//! answers, error answers and a push stream.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{Client, ClientError, PushMessage, StreamError};
use crate::wire::{Ack, AckQuery, Heartbeat, ListQuery, PushQuery, PROTOCOL_VERSION};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the stand-in server saw of a request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    authorization: Option<String>,
    body: String,
}

/// Serves every connection with `answer`; returns its URL and the requests it saw.
async fn serve(answer: fn(&Seen) -> Response<Body>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let log = log.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let seen = Seen {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        authorization: parts
                            .headers
                            .get(http::header::AUTHORIZATION)
                            .map(|v| v.to_str().unwrap().to_owned()),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let res = answer(&seen);
                    log.lock().unwrap().push(seen);
                    Ok::<_, Infallible>(res)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (url, seen)
}

fn full(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *res.status_mut() = status;
    res
}

#[tokio::test]
async fn calls_carry_the_token_and_their_query_and_errors_are_typed() {
    let (url, seen) = serve(|seen| match seen.uri.as_str() {
        "/v1/endpoints/web.default-127.0.0.1-80/heartbeat" => {
            full(StatusCode::OK, r#"{"id":"web.default-127.0.0.1-80","ttlSeconds":30,"newField":1}"#)
        }
        "/v1/endpoints/gone/heartbeat" => {
            full(StatusCode::NOT_FOUND, r#"{"error":"endpoint gone (its lease lapsed: register again)"}"#)
        }
        _ => full(StatusCode::BAD_REQUEST, r#"{"error":"unknown kind \"widget\""}"#),
    })
    .await;
    let client = Client::builder(&format!("{url}/")).token(Some("secret".into())).build();
    let beat = client.heartbeat("web.default-127.0.0.1-80").await.unwrap();
    assert_eq!(beat, Heartbeat { id: "web.default-127.0.0.1-80".into(), ttl_seconds: 30 });
    let gone = client.heartbeat("gone").await.unwrap_err();
    assert!(matches!(&gone, ClientError::NotFound(b) if b.error.contains("register again")), "{gone:?}");
    let q = ListQuery { kind: Some("widget".into()), namespace: None };
    let refused = client.list(&q).await.unwrap_err();
    assert_eq!(refused.to_string(), "400 Bad Request: unknown kind \"widget\"");

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer secret"));
    assert_eq!(seen[2].uri, "/v1/resources?kind=widget");
}

#[tokio::test]
async fn an_ack_is_the_typed_message_with_its_protocol() {
    let (url, seen) = serve(|_| full(StatusCode::NO_CONTENT, "")).await;
    let client = Client::builder(&url).build();
    let q = AckQuery { service: Some("web".into()), namespace: Some("default".into()) };
    client.ack("web.default-1", &q, &Ack::refused(3, "bad".into())).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].uri, "/v1/proxies/web.default-1/ack?service=web&namespace=default");
    assert_eq!(seen[0].authorization, None);
    let sent: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(sent, serde_json::json!({ "protocol": PROTOCOL_VERSION, "version": 3, "error": "bad" }));
}

#[tokio::test]
async fn a_push_stream_yields_typed_lines_across_frames_and_skips_keepalives() {
    let (url, _) = serve(|seen| {
        if !seen.uri.starts_with("/v1/push?id=web-1&service=web&namespace=default&version=0&protocol=") {
            return full(StatusCode::BAD_REQUEST, "{\"error\":\"unexpected query\"}");
        }
        // A keepalive, a line split over two frames (with a field from the future), a line of
        // a control plane before the protocol field, a tap line, then garbage.
        let frames = [
            "\n",
            "{\"protocol\":2,\"version\":1,\"con",
            "fig\":\"a\",\"delta\":[]}\n{\"version\":2,\"config\":\"b\"}\n",
            "{\"protocol\":2,\"tap\":{\"filters\":[{\"method\":\"GET\"}]}}\n",
            "not json\n",
        ];
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(frames.len());
        tokio::spawn(async move {
            for frame in frames {
                tx.send_data(Bytes::from_static(frame.as_bytes())).await.unwrap();
                // Apart, so each is a frame of its own.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        Response::new(body.boxed())
    })
    .await;
    let client = Client::builder(&url).build();
    let query = PushQuery {
        id: "web-1".into(),
        service: "web".into(),
        namespace: "default".into(),
        version: 0,
        protocol: Some(PROTOCOL_VERSION),
    };
    let mut stream = client.push(&query).await.unwrap();
    let config = |message| match message {
        PushMessage::Config(line) => line,
        other => panic!("a snapshot: {other:?}"),
    };
    let first = config(stream.next().await.unwrap());
    assert_eq!((first.protocol, first.version, first.config.as_str()), (2, 1, "a"));
    let second = config(stream.next().await.unwrap());
    assert_eq!((second.protocol, second.version, second.config.as_str()), (1, 2, "b"));
    let PushMessage::Tap(tap) = stream.next().await.unwrap() else { panic!("a tap line") };
    assert_eq!(tap.filters[0].method.as_deref(), Some("GET"));
    assert!(matches!(stream.next().await, Err(StreamError::Unreadable(_))));
}
