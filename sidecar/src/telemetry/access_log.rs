//! The access log: one JSON line per HTTP request or TCP connection on stdout, when enabled.
//!
//! Lines go through a bounded queue to a writer thread, so a slow reader of stdout never blocks
//! the proxy: when the queue is full, lines are dropped and counted in
//! `pilotfish_access_log_dropped_total`. The thread starts with the first line, and the queue
//! holds memory only for the lines in it: a sidecar whose access log is off pays nothing (a
//! preallocated array of 16k slots was half a MiB resident in every sidecar).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use pilotfish_api::SpiffeId;
use prometheus::IntCounter;
use serde::Serialize;

use super::tap::Tap;

/// Lines queued and not yet written, at most.
const QUEUE_LINES: usize = 16 * 1024;

enum Message {
    Line(Vec<u8>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

struct Writer {
    queue: Sender<Message>,
    /// Lines in `queue`: the bound the unbounded channel does not keep itself.
    queued: Arc<AtomicUsize>,
}

static DROPPED: OnceLock<IntCounter> = OnceLock::new();
static WRITER: OnceLock<Writer> = OnceLock::new();

/// Names the counter of dropped lines (once per process); before this, records are discarded.
pub fn init(dropped: IntCounter) {
    let _ = DROPPED.set(dropped);
}

/// The writer, its thread started on first use.
fn writer() -> &'static Writer {
    WRITER.get_or_init(|| {
        let (queue, lines) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let count = queued.clone();
        std::thread::Builder::new()
            .name("pilotfish-access-log".into())
            .spawn(move || write_lines(lines, &count))
            .expect("spawn the access log writer");
        Writer { queue, queued }
    })
}

/// Waits (briefly) until every line queued so far is written: called before the process exits.
pub fn flush() {
    let Some(writer) = WRITER.get() else { return };
    let (done, written) = sync_channel(1);
    if writer.queue.send(Message::Flush(done)).is_ok() {
        let _ = written.recv_timeout(Duration::from_secs(2));
    }
}

fn write_lines(messages: Receiver<Message>, queued: &AtomicUsize) {
    let handle = |message, out: &mut std::io::StdoutLock<'_>| match message {
        Message::Line(line) => {
            queued.fetch_sub(1, Ordering::Relaxed);
            let _ = out.write_all(&line);
        }
        Message::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
    };
    while let Ok(message) = messages.recv() {
        // Stdout is locked per batch, not for good: others in the process print too.
        let mut out = std::io::stdout().lock();
        handle(message, &mut out);
        // Batch what is already queued, then flush so lines appear promptly.
        while let Ok(message) = messages.try_recv() {
            handle(message, &mut out);
        }
        let _ = out.flush();
    }
}

#[derive(Debug, Serialize)]
pub struct HttpRecord {
    pub direction: &'static str,
    pub client: SocketAddr,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    pub duration_ms: f64,
    pub response_bytes: u64,
    pub upstream: Option<SocketAddr>,
    pub service: Option<String>,
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    /// Whether the hop to the next sidecar (outbound) or from the calling one (inbound) was
    /// mesh mTLS.
    pub tls: Tls,
    /// The caller's verified identity (inbound over mesh mTLS).
    #[serde(serialize_with = "peer")]
    pub peer: Option<Arc<SpiffeId>>,
    /// The endpoint's verified identity (outbound over mesh mTLS).
    #[serde(serialize_with = "peer", skip_serializing_if = "Option::is_none")]
    pub server: Option<Arc<SpiffeId>>,
    pub error: Option<&'static str>,
    /// Whether the line is written: a record may exist for a tap alone.
    #[serde(skip)]
    pub logged: bool,
    /// The tap that sampled the request, which gets its event when it ends.
    #[serde(skip)]
    pub tap: Option<Arc<Tap>>,
}

#[derive(Debug, Serialize)]
pub struct TcpRecord {
    pub direction: &'static str,
    pub client: SocketAddr,
    pub upstream: Option<SocketAddr>,
    pub service: Option<String>,
    pub duration_ms: f64,
    pub bytes_client_to_server: u64,
    pub bytes_server_to_client: u64,
    pub tls: Tls,
    #[serde(serialize_with = "peer")]
    pub peer: Option<Arc<SpiffeId>>,
    pub error: Option<String>,
}

/// A peer's identity as its SPIFFE ID (the identity is shared, not copied, until written).
fn peer<S: serde::Serializer>(peer: &Option<Arc<SpiffeId>>, s: S) -> Result<S::Ok, S::Error> {
    match peer {
        Some(id) => s.serialize_some(&**id),
        None => s.serialize_none(),
    }
}

/// How a hop between sidecars was secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    Mtls,
    Plaintext,
}

impl Tls {
    pub fn of(mtls: bool) -> Tls {
        if mtls {
            Tls::Mtls
        } else {
            Tls::Plaintext
        }
    }
}

#[derive(Serialize)]
struct Line<'a, T> {
    timestamp: String,
    kind: &'static str,
    #[serde(flatten)]
    record: &'a T,
}

/// A request's record once it ended: its line when the access log is on, and its event when
/// a tap sampled it.
pub fn http(record: &HttpRecord) {
    if let Some(tap) = &record.tap {
        tap.record(record);
    }
    if record.logged {
        write("http", record);
    }
}

pub fn tcp(record: &TcpRecord) {
    write("tcp", record);
}

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn write<T: Serialize>(kind: &'static str, record: &T) {
    let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let Ok(mut line) = serde_json::to_vec(&Line { timestamp, kind, record }) else {
        return;
    };
    line.push(b'\n');
    let Some(dropped) = DROPPED.get() else { return };
    let writer = writer();
    // Reserve a place first, so concurrent writers never take the queue past its bound.
    if writer.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE_LINES {
        writer.queued.fetch_sub(1, Ordering::Relaxed);
        dropped.inc();
        return;
    }
    if writer.queue.send(Message::Line(line)).is_err() {
        writer.queued.fetch_sub(1, Ordering::Relaxed);
    }
}
