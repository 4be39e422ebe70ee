//! The opaque TCP load: one connection writes as fast as the path takes it for the window, then
//! half-closes; the sink answers with the bytes it received, which must be every byte sent
//! (the proxies are byte-exact). Throughput counts the bytes written in the window.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::load::Plan;
use crate::procs::{cpu_ticks, cpu_ticks_between};

const CHUNK: usize = 128 * 1024;
const STALL: Duration = Duration::from_secs(10);

pub struct Outcome {
    /// Bytes written in the window.
    pub bytes: u64,
    /// CPU clock ticks each proxy spent in the window.
    pub cpu_ticks: Vec<u64>,
}

pub async fn run(entry: SocketAddr, plan: Plan, pids: &[u32]) -> Result<Outcome> {
    let mut stream = TcpStream::connect(entry).await?;
    let chunk = vec![0u8; CHUNK];
    let start = Instant::now() + plan.warmup;
    let end = start + plan.window;
    let (mut total, mut at_start, mut before) = (0u64, None, Vec::new());
    while Instant::now() < end {
        if at_start.is_none() && Instant::now() >= start {
            at_start = Some(total);
            before = cpu_ticks(pids);
        }
        // A path that stops taking bytes fails the scenario instead of hanging the run.
        tokio::time::timeout_at(end + STALL, stream.write_all(&chunk))
            .await
            .context("the path stopped taking bytes")??;
        total += CHUNK as u64;
    }
    let cpu = cpu_ticks_between(&before, &cpu_ticks(pids));
    let bytes = total - at_start.unwrap_or(total);
    check_sink(&mut stream, total).await?;
    Ok(Outcome { bytes, cpu_ticks: cpu })
}

/// A few bytes through `entry` and the sink's count back: the path is up end to end.
pub async fn probe(entry: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect(entry).await?;
    stream.write_all(b"probe").await?;
    check_sink(&mut stream, 5).await
}

/// Half-closes and checks that the sink received `sent` bytes.
async fn check_sink(stream: &mut TcpStream, sent: u64) -> Result<()> {
    stream.shutdown().await?;
    let mut count = [0u8; 8];
    tokio::time::timeout(2 * STALL, stream.read_exact(&mut count))
        .await
        .context("the sink never answered")??;
    let received = u64::from_be_bytes(count);
    if received != sent {
        bail!("the sink received {received} bytes of {sent}");
    }
    Ok(())
}
