//! The HTTP load generator: workers on one current-thread runtime (the load generator's CPU),
//! each with its own HTTP/1.1 connection or its own stream slot on a shared HTTP/2 connection.
//!
//! Closed loop: each worker sends its next request when the previous answer is in, so the
//! offered load is as much as the path takes. Open loop (`rate`): every worker has a schedule of
//! intended send times (the rate split evenly, their phases staggered), and a request's latency
//! is measured from its intended send time, not from when it was sent (wrk2's correction for
//! coordinated omission): a stall delays the requests behind it and they count it. A worker that
//! is still behind schedule when the window closes records its unsent requests as late as they
//! already are, so a saturated path shows up instead of being sampled less.
//!
//! tokio's timer ticks in milliseconds, too coarse for sub-millisecond latencies: a worker
//! sleeps until just before its intended time and yields its way over the last stretch.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::procs::{cpu_ticks, cpu_ticks_between};
use crate::scenario::Protocol;
use crate::upstream::{BODY_BYTES, GRPC_FRAME, GRPC_METHOD};

/// How one scenario's load is offered and measured.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Before the window: connections open, pools and TLS sessions warm up, nothing recorded.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// `None`: closed loop; `Some(r)`: open loop at `r` requests/s in total.
    pub rate: Option<f64>,
    pub connections: usize,
    /// Concurrent requests per connection (HTTP/2 streams; 1 for HTTP/1.1).
    pub streams: usize,
    /// HTTP/1.1, HTTP/2 or gRPC (not TCP: that is [`crate::bulk`]'s).
    pub protocol: Protocol,
}

/// What the window saw.
pub struct Outcome {
    /// Latencies in microseconds of the requests meant to be sent in the window.
    pub latency: Histogram<u64>,
    /// Successful answers completed in the window.
    pub completed: u64,
    /// Failed requests (a status other than 200, a short body, a broken connection).
    pub errors: u64,
    /// CPU clock ticks each proxy spent in the window.
    pub cpu_ticks: Vec<u64>,
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// Sends `plan`'s load to `entry` and measures it, sampling the CPU time of `pids` at the
/// window's edges.
pub async fn run(entry: SocketAddr, plan: Plan, pids: &[u32]) -> Result<Outcome> {
    let now = Instant::now();
    let window = Window { start: now + plan.warmup, end: now + plan.warmup + plan.window };
    let workers = plan.connections * plan.streams;
    let mut tasks = Vec::with_capacity(workers);
    for c in 0..plan.connections {
        let conn = Conn::open(entry, plan.protocol).await?;
        for (s, conn) in conn.streams(plan.streams).into_iter().enumerate() {
            let i = c * plan.streams + s;
            let schedule = plan.rate.map(|rate| {
                let interval = Duration::from_secs_f64(workers as f64 / rate);
                Schedule { next: now + interval.mul_f64(i as f64 / workers as f64), interval }
            });
            tasks.push(tokio::spawn(worker(conn, entry, schedule, window)));
        }
    }
    tokio::time::sleep_until(window.start).await;
    let before = cpu_ticks(pids);
    tokio::time::sleep_until(window.end).await;
    let cpu = cpu_ticks_between(&before, &cpu_ticks(pids));

    let mut outcome = Outcome { latency: histogram(), completed: 0, errors: 0, cpu_ticks: cpu };
    for mut task in tasks {
        // Requests still in flight get a grace period; a worker stuck past it is stopped (so it
        // sends nothing into the next scenario) and counted as an error.
        match tokio::time::timeout_at(window.end + Duration::from_secs(10), &mut task).await {
            Ok(done) => {
                let w = done?;
                outcome.latency.add(&w.latency)?;
                outcome.completed += w.completed;
                outcome.errors += w.errors;
            }
            Err(_) => {
                task.abort();
                outcome.errors += 1;
            }
        }
    }
    Ok(outcome)
}

/// One request through `entry` that must succeed: the path is up end to end.
pub async fn probe(entry: SocketAddr, protocol: Protocol) -> Result<()> {
    let mut conn = Conn::open(entry, protocol).await?;
    match conn.send().await? {
        true => Ok(()),
        false => bail!("{entry} did not answer 200 with a {BODY_BYTES}-byte body (gRPC: status 0)"),
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

struct Schedule {
    next: Instant,
    interval: Duration,
}

struct Worker {
    latency: Histogram<u64>,
    completed: u64,
    errors: u64,
}

async fn worker(mut conn: Conn, entry: SocketAddr, mut schedule: Option<Schedule>, window: Window) -> Worker {
    let mut w = Worker { latency: histogram(), completed: 0, errors: 0 };
    loop {
        let now = Instant::now();
        if now >= window.end {
            break;
        }
        let intended = match &mut schedule {
            None => now,
            Some(s) => {
                let at = s.next;
                s.next += s.interval;
                at
            }
        };
        if intended >= window.end {
            break;
        }
        wait_until(intended).await;
        let ok = match conn.send().await {
            Ok(ok) => ok,
            Err(_) => {
                // A broken connection: a new one for the next request, after a pause so a path
                // that refuses connections is not hammered.
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Ok(fresh) = Conn::open(entry, conn.protocol()).await {
                    conn = fresh;
                }
                false
            }
        };
        let done = Instant::now();
        if intended < window.start {
            continue;
        }
        if !ok {
            w.errors += 1;
            continue;
        }
        let _ = w.latency.record(micros(done - intended).max(1));
        if done <= window.end {
            w.completed += 1;
        }
    }
    // Requests this worker should have sent in the window but had not yet: as late as they are.
    if let Some(s) = schedule {
        let mut at = s.next.max(window.start);
        while at < window.end {
            let _ = w.latency.record(micros(window.end - at).max(1));
            at += s.interval;
        }
    }
    w
}

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

async fn wait_until(at: Instant) {
    const SPIN: Duration = Duration::from_micros(1500);
    if at > Instant::now() + SPIN {
        tokio::time::sleep_until(at - SPIN).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// A worker's way to send: its own HTTP/1.1 connection or a handle on a shared HTTP/2 one.
enum Conn {
    Http1(http1::SendRequest<Empty<Bytes>>),
    /// The sender and the request's URI (HTTP/2 carries scheme and authority).
    Http2(http2::SendRequest<Empty<Bytes>>, Uri),
    /// The sender and the method's URI.
    Grpc(http2::SendRequest<Full<Bytes>>, Uri),
}

impl Conn {
    async fn open(entry: SocketAddr, protocol: Protocol) -> Result<Conn> {
        let stream = TcpStream::connect(entry).await.with_context(|| format!("connecting to {entry}"))?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        let http2 = http2::Builder::new(TokioExecutor::new());
        match protocol {
            Protocol::Http1 | Protocol::Tcp => {
                let (send, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Ok(Conn::Http1(send))
            }
            Protocol::Http2 => {
                let (send, conn) = http2.handshake(io).await?;
                tokio::spawn(conn);
                Ok(Conn::Http2(send, format!("http://{entry}/").parse()?))
            }
            Protocol::Grpc => {
                let (send, conn) = http2.handshake(io).await?;
                tokio::spawn(conn);
                Ok(Conn::Grpc(send, format!("http://{entry}{GRPC_METHOD}").parse()?))
            }
        }
    }

    /// `n` workers' handles on this connection: HTTP/2 multiplexes them; HTTP/1.1 has one.
    fn streams(self, n: usize) -> Vec<Conn> {
        match self {
            Conn::Http1(_) => vec![self],
            Conn::Http2(send, uri) => (0..n).map(|_| Conn::Http2(send.clone(), uri.clone())).collect(),
            Conn::Grpc(send, uri) => (0..n).map(|_| Conn::Grpc(send.clone(), uri.clone())).collect(),
        }
    }

    fn protocol(&self) -> Protocol {
        match self {
            Conn::Http1(_) => Protocol::Http1,
            Conn::Http2(..) => Protocol::Http2,
            Conn::Grpc(..) => Protocol::Grpc,
        }
    }

    /// One GET, or one unary call; `Ok(false)` for an answer that is not 200 with the whole
    /// body (gRPC: and `grpc-status: 0` in the trailers).
    async fn send(&mut self) -> Result<bool> {
        let response = match self {
            Conn::Http1(send) => {
                send.ready().await?;
                let req = Request::get("/").header("host", "backend").body(Empty::new())?;
                send.send_request(req).await?
            }
            Conn::Http2(send, uri) => {
                send.ready().await?;
                let req = Request::get(uri.clone()).body(Empty::new())?;
                send.send_request(req).await?
            }
            Conn::Grpc(send, uri) => {
                send.ready().await?;
                let req = Request::post(uri.clone())
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(Full::new(grpc_request()))?;
                let response = send.send_request(req).await?;
                let status = response.status();
                let body = response.into_body().collect().await?;
                let ok = body.trailers().and_then(|t| t.get("grpc-status")).is_some_and(|s| s == "0");
                return Ok(status == StatusCode::OK
                    && ok
                    && body.to_bytes().len() == GRPC_FRAME + BODY_BYTES);
            }
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(status == StatusCode::OK && body.len() == BODY_BYTES)
    }
}

/// A unary call's request: one length-prefixed message of 16 bytes.
fn grpc_request() -> Bytes {
    Bytes::from_static(b"\0\0\0\0\x10pilotfish-bench!")
}
