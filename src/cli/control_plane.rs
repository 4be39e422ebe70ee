//! `pilotfish control-plane`: the mesh's source of truth — the event-sourced store, the
//! registry and the HTTP API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use pilotfish_control_plane::core::{ControlPlane, Settings};
use pilotfish_control_plane::store::{Embedded, Etcd, EventStore};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Serves the API on `--listen`, keeping state in `--data-dir` (crash-safe: every acknowledged
/// write is on disk). Admin writes need `--admin-token` (env `PILOTFISH_ADMIN_TOKEN`); without
/// one, a token is generated at first start, stored in the data directory and printed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the embedded store keeps its data.
    #[arg(long, value_name = "DIR", default_value = "pilotfish-data", conflicts_with = "store")]
    data_dir: PathBuf,
    /// Share the log with other replicas through etcd instead: `etcd://host:port[,host:port]`.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15100")]
    listen: SocketAddr,
    /// Bearer token for admin writes.
    #[arg(long, env = "PILOTFISH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How long a disconnected sidecar stays in `pilotfish proxies` before it is forgotten.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    proxy_retention: pilotfish_api::Duration,
    /// Connected sidecars one service may have; beyond it a new push stream is refused (429).
    #[arg(long, value_name = "N", default_value_t = pilotfish_control_plane::push::DEFAULT_MAX_PER_SERVICE)]
    max_proxies_per_service: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { data_dir, store, listen, admin_token, proxy_retention, max_proxies_per_service } = args;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pilotfish-control-plane")
        .build()
        .context("starting the async runtime")?;
    let settings = |token| Settings {
        proxy_retention: proxy_retention.get(),
        max_proxies_per_service,
        ..Settings::new(token)
    };
    runtime.block_on(serve(data_dir, store, listen, admin_token, settings))
}

async fn serve(
    data_dir: PathBuf,
    store: Option<String>,
    listen: SocketAddr,
    admin_token: Option<String>,
    settings: impl FnOnce(String) -> Settings,
) -> anyhow::Result<()> {
    if admin_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        anyhow::bail!("--admin-token must not be empty");
    }
    let (store, token): (Arc<dyn EventStore>, String) = match store {
        Some(url) => {
            let endpoints = Etcd::endpoints_from_url(&url)
                .with_context(|| format!("--store {url}: expected etcd://host:port[,host:port]"))?;
            let token = admin_token.context(
                "with --store etcd://..., give --admin-token (or PILOTFISH_ADMIN_TOKEN): replicas share it",
            )?;
            let store = Etcd::connect(&endpoints, "/pilotfish/")
                .await
                .with_context(|| format!("connecting to {url}"))?;
            (Arc::new(store), token)
        }
        None => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
            let token = match admin_token {
                Some(token) => token,
                None => stored_or_new_token(&data_dir)?,
            };
            let store = Embedded::open(&data_dir)
                .await
                .with_context(|| format!("opening the store in {}", data_dir.display()))?;
            (Arc::new(store), token)
        }
    };
    let cp = ControlPlane::open(store, settings(token)).await.context("loading the read model")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}: is another control plane running?"))?;
    tracing::info!(listen = %listener.local_addr()?, "control plane listening");

    let stop = CancellationToken::new();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let shutdown = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        shutdown.cancel();
    });
    pilotfish_control_plane::listener::serve(cp, listener, stop).await?;
    tracing::info!("control plane stopped");
    Ok(())
}

/// The token kept in `DIR/admin-token`, created (owner-only) on first start.
pub(super) fn stored_or_new_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        if !token.trim().is_empty() {
            return Ok(token.trim().to_owned());
        }
    }
    // A secret: from the operating system's generator, not a fast PRNG.
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the admin token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Written under a temporary name and renamed, so a crash never leaves an empty token file.
    let tmp = data_dir.join("admin-token.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    writeln!(file, "{token}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("admin token (stored in {}): {token}", path.display());
    Ok(token)
}
