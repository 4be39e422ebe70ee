//! The pool against real sockets: bursts, the slow-start window, failed attempts, refused connects.

mod mesh;

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn get() -> Box<Request<RequestBody>> {
    let mut req = Request::new(RequestBody::Replay { data: None, trailers: None });
    req.headers_mut().insert(http::header::HOST, "t".parse().unwrap());
    Box::new(req)
}

/// A keep-alive HTTP/1.1 server with a listen backlog of 1 that starts accepting only
/// after `asleep`: meanwhile the kernel queues two connections and drops further SYNs, as an
/// overflowing upstream does. Counts the connections it accepts.
async fn sleepy_server(asleep: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(1).unwrap();
    socket.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(socket.into()).unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        tokio::time::sleep(asleep).await;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn connect<'a>(open: &'a Arc<AtomicUsize>, pending: &'a AtomicUsize, timeout: Duration) -> Connect<'a> {
    Connect { timeout, open, max_open: usize::MAX, pending, max_pending: usize::MAX, mesh: None }
}

/// `n` concurrent GETs, each releasing its connection once its body is read; their bodies,
/// and the count of requests still waiting for a connection at the end (0).
async fn burst(conns: &Arc<EndpointConns>, n: usize) -> (Vec<bytes::Bytes>, usize) {
    let (open, pending) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (conns, open, pending) = (conns.clone(), open.clone(), pending.clone());
        requests.spawn(async move {
            let connect = connect(&open, &pending, Duration::from_secs(5));
            let (res, conn) = conns.send(Version::Http1, get(), &connect).await.ok().unwrap();
            use http_body_util::BodyExt;
            let body = res.into_body().collect().await.unwrap().to_bytes();
            conn.unwrap().release();
            body
        });
    }
    let bodies = tokio::time::timeout(Duration::from_secs(10), requests.join_all()).await.unwrap();
    (bodies, pending.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_burst_waits_for_released_connections_instead_of_opening_one_each() {
    let (addr, accepted) = sleepy_server(Duration::from_millis(100)).await;
    // Two connections get through the backlog and the rest of the burst waits, within the
    // slow-start window, for them to answer: released and reused, they carry the burst, and
    // no request waits out a SYN retransmit (a second) as one connection per request would.
    let (bodies, pending) = burst(&EndpointConns::new(addr, None), 20).await;
    assert!(bodies.iter().all(|body| body == "ok"));
    let made = accepted.load(Ordering::SeqCst);
    assert!(made < 20, "{made} connections for 20 requests");
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn the_window_follows_the_connections_that_answer() {
    let (addr, accepted) = sleepy_server(Duration::ZERO).await;
    let conns = EndpointConns::new(addr, None);
    let (bodies, _) = burst(&conns, 40).await;
    assert_eq!(bodies.len(), 40);
    // Every connection is accounted for once the burst is over — answered, or made for the
    // queue but never used — and the window grew past its start as connections answered.
    let settled = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let answered = {
                let pool = conns.lock_h1();
                let released = pool.connecting == 0 && pool.idle.len() == pool.unanswered + pool.answered;
                released.then_some(pool.answered)
            };
            if let Some(answered) = answered {
                return answered;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let answered = settled.await.unwrap();
    assert!(answered > INITIAL_WINDOW, "{answered} connections answered");
    assert!(accepted.load(Ordering::SeqCst) < 40);
}

#[tokio::test]
async fn a_failed_attempt_fails_the_queue_when_nothing_else_can_serve_it() {
    // A listener whose accept queue is full and never drained: further SYNs are dropped.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    for _ in 0..3 {
        let attempt = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr));
        queued.extend(attempt.await.ok().and_then(Result::ok));
    }
    let conns = EndpointConns::new(addr, None);
    let (open, pending) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (conns, open, pending) = (conns.clone(), open.clone(), pending.clone());
        requests.spawn(async move {
            let connect = connect(&open, &pending, Duration::from_millis(300));
            conns.send(Version::Http1, get(), &connect).await.err().map(|e| (e.error, e.unsent.is_some()))
        });
    }
    let failed = tokio::time::timeout(Duration::from_secs(10), requests.join_all()).await.unwrap();
    assert!(failed.iter().all(|f| matches!(f, Some((e, true)) if e.is_connect())), "all fail, unsent");
    let own = failed.iter().filter(|f| matches!(f, Some((e, _)) if e.blames_endpoint())).count();
    // The first attempt to time out fails the queue beyond the three still in flight; those
    // three fail on their own. Twenty requests, four failures counted against the endpoint.
    assert_eq!(own, INITIAL_WINDOW, "the queue failed with the attempt instead of each waiting out its own");
    assert_eq!((open.load(Ordering::SeqCst), pending.load(Ordering::SeqCst)), (0, 0));
}

#[tokio::test]
async fn a_refused_connect_hands_the_request_back() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let conns = EndpointConns::new(unused, None);
    let (open, pending) = (Arc::new(AtomicUsize::new(0)), AtomicUsize::new(0));
    let connect = Connect {
        timeout: Duration::from_secs(1),
        open: &open,
        max_open: 10,
        pending: &pending,
        max_pending: 10,
        mesh: None,
    };
    for version in [Version::Http1, Version::Http2] {
        let err = conns.send(version, get(), &connect).await.err().unwrap();
        assert!(err.error.is_connect(), "{}", err.error);
        assert!(err.unsent.is_some(), "the request never went out and comes back");
    }
    assert_eq!((open.load(Ordering::SeqCst), pending.load(Ordering::SeqCst)), (0, 0));
}
