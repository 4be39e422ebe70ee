//! Running a sidecar: the first configuration, the listeners, the configuration source that
//! follows it, and the end: the drain delay after SIGTERM, then the drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pilotfish_api::app_probe::AppProbes;
use pilotfish_api::client::SharedClientCert;
use pilotfish_api::mtls::MtlsMode;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::identity::control_plane::ControlPlaneCa;
use crate::identity::files::{self, Files, FilesError};
use crate::identity::mesh_feed;
use crate::identity::renew::Renewer;
use crate::identity::status::Mode;
use crate::listener::status::{self, Status};
use crate::listener::{accept, admin, inbound, local, outbound};
use crate::snapshot::build::BuildError;
use crate::snapshot::{Overrides, Snapshot};
use crate::source::{managed, reload, report, tap};
use crate::state::Shared;
use crate::telemetry::access_log;
use crate::telemetry::metrics::{Direction, Metrics};
use crate::telemetry::trace::{TraceError, TraceOptions, Tracing};
use crate::transport;
use crate::upstream::app_probe::AppProber;
use crate::upstream::health;

/// How to run a sidecar.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: Source,
    pub overrides: Overrides,
    pub lifecycle: Lifecycle,
    /// Where spans go, and which are sampled (`--otlp-endpoint`); `None`: no spans.
    pub tracing: Option<TraceOptions>,
}

/// The sidecar's life in a pod: the kubelet's status listener, and the end.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// The status listener for the kubelet (`--status`; none by default).
    pub status: Option<SocketAddr>,
    /// The app's probes it forwards (`PILOTFISH_APP_PROBES`).
    pub app_probes: AppProbes,
    /// How long the sidecar serves on after SIGTERM, not ready, before it drains
    /// (`--drain-delay`): time for the endpoint's removal to reach every caller.
    pub drain_delay: Duration,
}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Static mode: a multi-document YAML file, reloaded on change or SIGHUP, and the mesh
    /// identity's files, if any (reloaded on change).
    File { path: PathBuf, identity: Option<Files> },
    /// Managed mode: the control plane's push stream.
    ControlPlane(managed::Managed),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config: {0}")]
    Config(BuildError),
    #[error("cannot listen on {addr} ({listener} listener): {source}; is another process using it?")]
    Bind { listener: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Local(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signal(std::io::Error),
    #[error("no usable mesh identity: {0}")]
    Identity(#[from] FilesError),
    #[error("{0}")]
    Tracing(#[from] TraceError),
}

/// Runs the sidecar until SIGTERM, SIGINT or `POST /shutdown`, then drains: listeners stop
/// accepting, HTTP/2 connections get GOAWAY, in-flight requests and connections get the drain
/// grace period to finish.
///
/// After SIGTERM or SIGINT, `/ready` answers 503 at once and the sidecar leaves the registry,
/// but serves on normally, new connections too, for the drain delay: callers that have not yet
/// heard of the departure still get answers. A second signal, or `POST /shutdown` (an explicit
/// "drain now": `pilotfish await` once a Job's command is done, or a preStop hook), cuts the
/// delay short.
pub async fn run(mut opts: Options) -> Result<(), Error> {
    if let Source::ControlPlane(_) = opts.source {
        // Managed sidecars get an identity from the mesh CA: their inbound port is mesh mTLS
        // only unless their Service says otherwise.
        opts.overrides.inbound_mtls.get_or_insert(MtlsMode::Strict);
    }
    let metrics = Metrics::new();
    access_log::init(metrics.access_log_dropped.clone());
    // The one crypto provider of every mesh TLS config, never the process default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let identity = match &opts.source {
        Source::File { identity: Some(files), .. } => Some((files.clone(), files.load(&provider)?)),
        _ => None,
    };
    // What the control-plane clients present over https: the mesh identity, once in force.
    let client_cert = SharedClientCert::default();
    // The push stream's mesh settings (trust bundle, renewBefore), for the renew loop.
    let (mesh_tx, mesh_rx) = mesh_feed::channel();
    let (snap, mut push) = match &opts.source {
        Source::File { path, .. } => {
            let text =
                std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.clone(), source })?;
            let source = path.display().to_string();
            (Snapshot::build(&source, &text, &opts.overrides, None, &metrics).map_err(Error::Config)?, None)
        }
        Source::ControlPlane(m) => {
            let mut push = managed::PushClient::new(m.clone(), &client_cert);
            tracing::info!(servers = ?m.servers, service = %m.service, "waiting for configuration from the control plane");
            let snap = loop {
                let mut pushed = push.next().await;
                // No renew loop yet, nor any certificate: the first one goes in force with
                // this bundle, so the ACK need not wait.
                pushed.publish_mesh(&mesh_tx);
                let (version, text) = (pushed.version, pushed.documents);
                let tolerate = pilotfish_api::UnknownFields::Tolerate;
                match Snapshot::build_with("control-plane", &text, &opts.overrides, None, &metrics, tolerate)
                {
                    Ok(snap) => {
                        push.ack(version, None).await;
                        break snap;
                    }
                    Err(e) => {
                        metrics.config_errors.inc();
                        tracing::error!(version, "configuration from the control plane rejected: {e}");
                        push.ack(version, Some(e.to_string())).await;
                    }
                }
            };
            (snap, Some(push))
        }
    };

    let bind =
        |listener, addr| transport::bind(addr).map_err(|source| Error::Bind { listener, addr, source });
    let admin = bind("admin", snap.sidecar.admin)?;
    let outbound = bind("outbound", snap.sidecar.outbound.listen)?;
    let inbound = snap.sidecar.inbound.as_ref().map(|i| bind("inbound", i.listen)).transpose()?;
    let status = opts.lifecycle.status.map(|addr| bind("status", addr)).transpose()?;
    // Where other sidecars reach this one: its inbound listener (loopback when it listens on
    // every address, as in a local mesh).
    let advertised =
        inbound.as_ref().and_then(|l| l.local_addr().ok()).map(|a| match a.ip().is_unspecified() {
            true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port()),
            false => a,
        });
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
        status = %status.as_ref().map(addr).unwrap_or_else(|| "-".into()),
        services = snap.local_ports.len(),
        "sidecar listening"
    );
    let drain = snap.sidecar.timeouts.drain.get();
    // Spans name the service this sidecar's app is (managed), or the `Sidecar` document.
    let service = match &opts.source {
        Source::ControlPlane(m) => m.service.clone(),
        Source::File { .. } => snap.name.clone(),
    };
    let shared = Shared::with_client_cert(snap, metrics, client_cert);
    if let Some(options) = &opts.tracing {
        let _ = shared.tracing.set(Tracing::start(options, &service, &provider)?);
    }
    if let Some((files, built)) = identity {
        shared.identity_status.set_mode(Mode::Files);
        shared.supervise("identity reload", files::watch(shared.clone(), files, built, provider.clone()));
    }

    shared.supervise("admin listener", admin::serve(shared.clone(), admin));
    if let Some(listener) = status {
        let probes = std::mem::take(&mut opts.lifecycle.app_probes);
        let status = Status { shared: shared.clone(), probes, prober: AppProber::new(&provider) };
        shared.supervise("status listener", status::serve(status, listener));
    }
    let s = shared.clone();
    shared.supervise(
        "outbound listener",
        accept::accept_loop(
            shared.clone(),
            outbound,
            Direction::Outbound,
            shared.shutdown.clone(),
            move |stream, client, slot| {
                outbound::handle(s.clone(), stream, client, outbound::Listener::Main, slot)
            },
        ),
    );
    if let Some(inbound) = inbound {
        let s = shared.clone();
        shared.supervise(
            "inbound listener",
            accept::accept_loop(
                shared.clone(),
                inbound,
                Direction::Inbound,
                shared.shutdown.clone(),
                move |stream, client, slot| inbound::handle(s.clone(), stream, client, slot),
            ),
        );
    }
    local.apply(&shared, bound, &shared.snapshot.load());
    health::spawn(&shared.snapshot.load());
    let registration = CancellationToken::new();
    let mut registered = None;
    match (&opts.source, push.take()) {
        (Source::ControlPlane(m), Some(push)) => {
            // Every control-plane client also trusts the roots the push stream brings.
            let roots = push.pushed_roots().clone();
            // Readiness waits for the identity from the start when the control plane is a CA.
            if mesh_rx.settings.borrow().is_some() {
                shared.identity_status.set_mode(Mode::ControlPlane);
            }
            let renewer = Renewer {
                ca: ControlPlaneCa::new(m, &roots, &shared.client_cert),
                shared: shared.clone(),
                provider: provider.clone(),
                clock: Arc::new(SystemTime::now),
            };
            shared.supervise("identity renewal", renewer.run(mesh_rx));
            let follow = managed::follow(shared.clone(), local, push, opts.overrides.clone(), mesh_tx);
            shared.supervise("configuration push", follow);
            shared.supervise("telemetry report", report::run(shared.clone(), m.clone(), roots.clone()));
            shared.supervise("tap report", tap::run(shared.clone(), m.clone(), roots.clone()));
            if let Some(address) = advertised.filter(|_| m.register) {
                let cert = shared.client_cert.clone();
                let register = managed::register(m.clone(), roots, cert, address, registration.clone());
                registered = Some(tokio::spawn(register));
            }
        }
        (Source::File { path, .. }, _) => {
            let watch = reload::watch(shared.clone(), local, path.clone(), opts.overrides.clone());
            shared.supervise("config reload", watch);
        }
        (Source::ControlPlane(_), None) => unreachable!("managed mode starts with a push client"),
    }
    shared.set_ready();

    let signalled = tokio::select! {
        _ = sigterm.recv() => Some("SIGTERM"),
        _ = sigint.recv() => Some("SIGINT"),
        _ = shared.shutdown.cancelled() => None,
    };
    shared.terminating.cancel();
    // Leave the registry first, while still serving, so callers learn of the departure
    // before the listeners close.
    registration.cancel();
    let delay = opts.lifecycle.drain_delay;
    if let Some(signal) = signalled.filter(|_| !delay.is_zero()) {
        tracing::info!("{signal}: not ready; serving on for the drain delay of {delay:?}, then draining");
        tokio::select! {
            _ = tokio::time::sleep(delay) => tracing::info!("drain delay over: draining"),
            _ = sigterm.recv() => tracing::info!("SIGTERM again: draining now"),
            _ = sigint.recv() => tracing::info!("SIGINT again: draining now"),
            _ = shared.shutdown.cancelled() => tracing::info!("shutdown requested: draining now"),
        }
    } else if let Some(signal) = signalled {
        tracing::info!("{signal}: draining");
    }
    if let Some(registered) = registered {
        let _ = registered.await;
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
    if let Some(tracing) = shared.tracing.get() {
        tracing.shutdown().await;
    }
    Ok(())
}
