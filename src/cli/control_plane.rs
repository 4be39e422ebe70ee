//! `pilotfish control-plane`: the mesh's source of truth — the event-sourced store, the
//! registry, the mesh CA and the HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pilotfish_api::authz::MeshDefault;
use pilotfish_control_plane::ca::{Ca, SealKey};
use pilotfish_control_plane::core::{ControlPlane, Settings};
use pilotfish_control_plane::inject::admission::Injector;
use pilotfish_control_plane::kubernetes;
use pilotfish_control_plane::listener::{serve as serve_plain, serve_tls};
use pilotfish_control_plane::store::{Embedded, Etcd, EventStore};
use pilotfish_control_plane::tls::{transport, Transport};
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
    /// Address of the HTTP API: plaintext on loopback, TLS (a certificate from the mesh CA)
    /// anywhere else.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15100")]
    listen: SocketAddr,
    /// Names (DNS or IP) the API's TLS certificate carries, repeatable; default: the listen
    /// address, this host's name, localhost and 127.0.0.1.
    #[arg(long, value_name = "NAME")]
    tls_san: Vec<String>,
    /// Serve plaintext on a non-loopback --listen (tokens and configuration cross the network
    /// readable by anyone on it).
    #[arg(long)]
    insecure: bool,
    /// Bearer token for admin writes.
    #[arg(long, env = "PILOTFISH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How long a disconnected sidecar stays in `pilotfish proxies` before it is forgotten.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    proxy_retention: pilotfish_api::Duration,
    /// Connected sidecars one service may have; beyond it a new push stream is refused (429).
    #[arg(long, value_name = "N", default_value_t = pilotfish_control_plane::push::DEFAULT_MAX_PER_SERVICE)]
    max_proxies_per_service: usize,
    /// The mesh CA's certificates, PEM: the issuer's, then each CA above it up to the root.
    /// Without it the CA is generated at first start, in `<data-dir>/ca` (or, with etcd, sealed
    /// in etcd: see --ca-seal-key).
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The issuer's private key for --ca-cert, PKCS#8 PEM.
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// With --store etcd://...: the secret (32+ characters, the same on every replica) that seals
    /// the CA's keys stored in etcd; the first replica generates the CA. Or give every replica
    /// the same --ca-cert/--ca-key.
    #[arg(
        long,
        env = "PILOTFISH_CA_SEAL_KEY",
        hide_env_values = true,
        value_name = "SECRET",
        requires = "store",
        conflicts_with = "ca_cert"
    )]
    ca_seal_key: Option<String>,
    /// The trust domain of every mesh identity (`spiffe://<trust domain>/ns/../sa/..`).
    #[arg(long, value_name = "NAME", default_value = pilotfish_control_plane::core::DEFAULT_TRUST_DOMAIN,
          value_parser = trust_domain)]
    trust_domain: String,
    /// How long a sidecar's certificate lives (5s at least, and less than the CA's issuer has
    /// left); sidecars renew at about 70% of it.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    cert_ttl: pilotfish_api::Duration,
    /// What a call to a service no ALLOW AuthorizationPolicy targets gets: every call (`allow`),
    /// none (`deny`), or calls from a verified mesh identity (`authenticated`).
    #[arg(long, value_name = "DEFAULT", default_value = "authenticated", value_parser = authz_default)]
    authz_default: MeshDefault,
    /// Use the Kubernetes cluster (in-cluster service account, or KUBECONFIG): its Services,
    /// EndpointSlices and Pods are the registry's endpoints, TokenReview checks sidecars'
    /// ServiceAccount tokens (audience `pilotfish`), ConfigMap `pilotfish-ca` is kept in every
    /// namespace labelled `pilotfish.io/inject=enabled`, and the injector webhook gets the CA.
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: the MutatingWebhookConfiguration whose caBundle is set to the mesh
    /// CA's roots.
    #[arg(long, value_name = "NAME", default_value = kubernetes::DEFAULT_WEBHOOK_CONFIG, requires = "kubernetes")]
    webhook_config: String,
    #[command(flatten, next_help_heading = "The injection webhook (POST /inject)")]
    injector: super::inject::InjectorFlags,
}

/// The shortest --cert-ttl: sidecars renew at ~70% of it, so shorter would mean a renewal
/// every couple of seconds.
const MIN_CERT_TTL: Duration = Duration::from_secs(5);

/// Where the CA comes from.
struct CaFlags {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    seal_key: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        data_dir,
        store,
        listen,
        tls_san,
        insecure,
        admin_token,
        proxy_retention,
        max_proxies_per_service,
        ca_cert,
        ca_key,
        ca_seal_key,
        trust_domain,
        cert_ttl,
        authz_default,
        kubernetes,
        webhook_config,
        injector,
    } = args;
    let cert_ttl = cert_ttl.get();
    if cert_ttl < MIN_CERT_TTL {
        anyhow::bail!("--cert-ttl {cert_ttl:?} is below the minimum of {MIN_CERT_TTL:?}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pilotfish-control-plane")
        .build()
        .context("starting the async runtime")?;
    let settings = |token| Settings {
        proxy_retention: proxy_retention.get(),
        max_proxies_per_service,
        trust_domain,
        cert_ttl,
        authz_default,
        ..Settings::new(token)
    };
    let ca = CaFlags { cert: ca_cert, key: ca_key, seal_key: ca_seal_key };
    let listen = Listen { addr: listen, tls_san, insecure };
    let cluster = kubernetes.then_some(kubernetes::Options { webhook_config });
    let cluster = Cluster { kubernetes: cluster, injector: Injector::new(injector.into_options()) };
    runtime.block_on(serve(data_dir, store, listen, admin_token, ca, settings, cluster))
}

/// What the control plane does for Kubernetes: the cluster it watches (`--kubernetes`), and how
/// its webhook injects.
struct Cluster {
    kubernetes: Option<kubernetes::Options>,
    injector: Injector,
}

/// Where and how the API is served.
struct Listen {
    addr: SocketAddr,
    tls_san: Vec<String>,
    insecure: bool,
}

async fn serve(
    data_dir: PathBuf,
    store: Option<String>,
    listen: Listen,
    admin_token: Option<String>,
    ca: CaFlags,
    settings: impl FnOnce(String) -> Settings,
    cluster: Cluster,
) -> anyhow::Result<()> {
    if admin_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        anyhow::bail!("--admin-token must not be empty");
    }
    let (store, token, ca): (Arc<dyn EventStore>, String, Ca) = match store {
        Some(url) => {
            let endpoints = Etcd::endpoints_from_url(&url)
                .with_context(|| format!("--store {url}: expected etcd://host:port[,host:port]"))?;
            let token = admin_token.context(
                "with --store etcd://..., give --admin-token (or PILOTFISH_ADMIN_TOKEN): replicas share it",
            )?;
            let store = Etcd::connect(&endpoints, "/pilotfish/")
                .await
                .with_context(|| format!("connecting to {url}"))?;
            let ca = shared_ca(&store, ca).await?;
            (Arc::new(store), token, ca)
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
            let ca = match ca.files() {
                Some((cert, key)) => Ca::from_files(cert, key)?,
                None => Ca::open(&data_dir.join("ca"))?,
            };
            (Arc::new(store), token, ca)
        }
    };
    let settings = settings(token);
    check_cert_ttl(&ca, settings.cert_ttl)?;
    let cp = ControlPlane::open(store, settings, ca).await.context("loading the read model")?;
    // Nothing has served yet, so the control plane's own injector is not in use.
    let _ = cp.set_injector(cluster.injector);
    // The issuer in force, after any root rotation in the log, signs the serving certificate.
    let served = transport(listen.addr, listen.insecure, &listen.tls_san, &cp.ca())?;
    let addr = listen.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}: is another control plane running?"))?;
    let encrypted = matches!(served, Transport::Tls(_));
    tracing::info!(listen = %listener.local_addr()?, tls = encrypted, "control plane listening");

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
    if let Some(options) = cluster.kubernetes {
        kubernetes::start(cp.clone(), options, stop.clone()).await?;
    }
    match served {
        Transport::Plain => serve_plain(cp, listener, stop).await?,
        Transport::Tls(config) => serve_tls(cp, listener, config, stop).await?,
    }
    tracing::info!("control plane stopped");
    Ok(())
}

impl CaFlags {
    fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }
}

/// The CA of a replica sharing etcd: the files given (the same on every replica), or the one
/// sealed in etcd under the seal key; without either, replicas would each sign under their own
/// root and not trust each other's sidecars.
async fn shared_ca(store: &Etcd, ca: CaFlags) -> anyhow::Result<Ca> {
    if let Some((cert, key)) = ca.files() {
        return Ok(Ca::from_files(cert, key)?);
    }
    let Some(seal_key) = ca.seal_key else {
        anyhow::bail!(
            "with --store etcd://..., the replicas must share the mesh CA: give every replica the same \
             --ca-cert/--ca-key files, or the same --ca-seal-key (env PILOTFISH_CA_SEAL_KEY; e.g. \
             `openssl rand -hex 32`) and the first replica generates the CA and keeps it sealed in etcd"
        );
    };
    Ok(Ca::shared(store, &SealKey::new(&seal_key)?).await?)
}

/// A leaf must fit in the issuer's remaining life (it would be cut short otherwise).
fn check_cert_ttl(ca: &Ca, ttl: Duration) -> anyhow::Result<()> {
    let left = ca.issuer_not_after().duration_since(std::time::SystemTime::now()).unwrap_or_default();
    if ttl >= left {
        anyhow::bail!(
            "--cert-ttl {}s is not below the {}s the CA's issuer has left: give a shorter --cert-ttl, \
             or a CA whose issuer lives longer",
            ttl.as_secs(),
            left.as_secs(),
        );
    }
    Ok(())
}

/// `--trust-domain`, checked as a SPIFFE ID's.
fn trust_domain(s: &str) -> Result<String, String> {
    pilotfish_api::identity::validate_trust_domain(s).map(|()| s.to_owned()).map_err(|e| e.to_string())
}

/// `--authz-default`.
fn authz_default(s: &str) -> Result<MeshDefault, String> {
    match s {
        "allow" => Ok(MeshDefault::Allow),
        "deny" => Ok(MeshDefault::Deny),
        "authenticated" => Ok(MeshDefault::Authenticated),
        _ => Err("expected allow, deny or authenticated".into()),
    }
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
