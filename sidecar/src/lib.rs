//! Pilotfish's data plane: the L4/L7 sidecar proxy.
//!
//! # Layout
//! - [`config`]: the configuration in force as one immutable [`config::Snapshot`].
//! - [`state`]: what all listeners share — the swappable snapshot, metrics, shutdown, tracker.
//! - [`listen`]: accept loops with connection limits.
//! - [`outbound`] / [`inbound`]: per-connection handling in each direction.
//! - [`local`]: per-service local listeners (`localPort`).
//! - [`detect`]: protocol detection (HTTP/1, HTTP/2, TLS, opaque) by reading the first bytes.
//! - [`http`]: the L7 path — server, request proxying, endpoint connection pools, errors.
//! - [`forward`] and [`tcp`]: the L4 path — opaque forwarding with idle timeout and half-close.
//! - [`transport`]: sockets (bind, connect, `SO_ORIGINAL_DST`).
//! - [`admin`]: `/live`, `/ready`, `/metrics`, `/config`, `/shutdown`.
//! - [`metrics`], [`access_log`]: what every decision leaves behind.
//! - [`reload`]: config reload on SIGHUP or file change.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod config;
pub mod detect;
pub mod forward;
pub mod health;
pub mod http;
pub mod inbound;
pub mod listen;
pub mod local;
pub mod metrics;
pub mod outbound;
pub mod reload;
pub mod resilience;
pub mod route;
pub mod state;
pub mod tcp;
pub mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

pub use config::Overrides;
use config::Snapshot;
use metrics::{Direction, Metrics};
use state::Shared;

/// How to run a sidecar in static mode.
#[derive(Debug, Clone)]
pub struct Options {
    /// The multi-document YAML file with the `Sidecar` and `Service` resources.
    pub config: PathBuf,
    pub overrides: Overrides,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config: {0}")]
    Config(config::BuildError),
    #[error("cannot listen on {addr} ({listener} listener): {source}; is another process using it?")]
    Bind { listener: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Local(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signal(std::io::Error),
}

/// Runs the sidecar until SIGTERM, SIGINT or `POST /shutdown`, then drains: listeners stop
/// accepting, HTTP/2 connections get GOAWAY, in-flight requests and connections get the drain
/// grace period to finish.
pub async fn run(opts: Options) -> Result<(), Error> {
    let metrics = Metrics::new();
    access_log::init(metrics.access_log_dropped.clone());
    let path = &opts.config;
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.clone(), source })?;
    let snap = Snapshot::build(&path.display().to_string(), &text, &opts.overrides, None, &metrics)
        .map_err(Error::Config)?;

    let bind =
        |listener, addr| transport::bind(addr).map_err(|source| Error::Bind { listener, addr, source });
    let admin = bind("admin", snap.sidecar.admin)?;
    let outbound = bind("outbound", snap.sidecar.outbound.listen)?;
    let inbound = snap.sidecar.inbound.as_ref().map(|i| bind("inbound", i.listen)).transpose()?;
    let local = Arc::new(local::LocalListeners::default());
    let bound = local.bind_new(&snap).map_err(Error::Local)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Signal)?;

    let addr = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        name = %snap.name,
        version = snap.version,
        admin = %addr(&admin),
        outbound = %addr(&outbound),
        inbound = %inbound.as_ref().map(addr).unwrap_or_else(|| "-".into()),
        services = snap.local_ports.len(),
        "sidecar listening"
    );
    let drain = snap.sidecar.timeouts.drain.get();
    let shared = Shared::new(snap, metrics);

    tokio::spawn(admin::serve(shared.clone(), admin));
    let s = shared.clone();
    tokio::spawn(listen::accept_loop(
        shared.clone(),
        outbound,
        Direction::Outbound,
        shared.shutdown.clone(),
        move |stream, client, slot| {
            outbound::handle(s.clone(), stream, client, outbound::Listener::Main, slot)
        },
    ));
    if let Some(inbound) = inbound {
        let s = shared.clone();
        tokio::spawn(listen::accept_loop(
            shared.clone(),
            inbound,
            Direction::Inbound,
            shared.shutdown.clone(),
            move |stream, client, slot| inbound::handle(s.clone(), stream, client, slot),
        ));
    }
    local.apply(&shared, bound, &shared.snapshot.load());
    health::spawn(&shared.snapshot.load());
    tokio::spawn(reload::watch(shared.clone(), local, opts.config.clone(), opts.overrides.clone()));
    shared.set_ready();

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: draining"),
        _ = sigint.recv() => tracing::info!("SIGINT: draining"),
        _ = shared.shutdown.cancelled() => {}
    }
    shared.shutdown.cancel();
    shared.tracker.close();
    let open = shared.tracker.len();
    if tokio::time::timeout(drain, shared.tracker.wait()).await.is_err() {
        tracing::warn!(
            connections = shared.tracker.len(),
            "drain grace period of {drain:?} ran out; closing the remaining connections"
        );
    } else {
        tracing::info!(connections = open, "drained");
    }
    access_log::flush();
    Ok(())
}
