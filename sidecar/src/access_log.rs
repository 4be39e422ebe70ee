//! The access log: one JSON line per HTTP request or TCP connection on stdout, when enabled.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

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
    pub error: Option<&'static str>,
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
    pub error: Option<String>,
}

#[derive(Serialize)]
struct Line<'a, T> {
    timestamp: String,
    kind: &'static str,
    #[serde(flatten)]
    record: &'a T,
}

pub fn http(record: &HttpRecord) {
    write("http", record);
}

pub fn tcp(record: &TcpRecord) {
    write("tcp", record);
}

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn write<T: Serialize>(kind: &'static str, record: &T) {
    let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let Ok(mut line) = serde_json::to_vec(&Line {
        timestamp,
        kind,
        record,
    }) else {
        return;
    };
    line.push(b'\n');
    // One write per line so lines from concurrent connections never interleave.
    let _ = std::io::stdout().lock().write_all(&line);
}
