//! `pilotfish sidecar`: run the data plane, from a static config file or managed by the
//! control plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use pilotfish_api::app_probe::AppProbes;
use pilotfish_api::client::Bearer;
use pilotfish_sidecar::identity::files::Files;
use pilotfish_sidecar::managed::Managed;
use pilotfish_sidecar::telemetry::trace::{Endpoint, Sampling, TraceOptions};
use pilotfish_sidecar::{Lifecycle, Options, Overrides, Source};

/// Defaults: admin 127.0.0.1:15000, outbound 127.0.0.1:15001, inbound 0.0.0.0:15006 (only with
/// an app), no status listener. Flags override the file's `Sidecar` document. SIGHUP or a change
/// to the file reloads it; SIGTERM drains and exits after the drain delay (a second SIGTERM cuts
/// the delay short); `POST /shutdown` on the admin listener drains and exits at once.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Static mode: multi-document YAML with a `Sidecar` and the `Service`s this app calls.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        required_unless_present = "control_plane",
        conflicts_with = "control_plane"
    )]
    config: Option<PathBuf>,
    /// Managed mode: control-plane URL(s), comma-separated; tried in turn.
    #[arg(long, value_name = "URL[,URL]", value_delimiter = ',', requires = "service")]
    control_plane: Vec<String>,
    /// Managed mode: the service this sidecar's app is an instance of.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    #[arg(long, value_name = "NS", default_value = "default")]
    namespace: String,
    /// Managed mode: the token for the control plane.
    #[arg(long, env = "PILOTFISH_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    token: Option<String>,
    /// Managed mode, in Kubernetes: a file holding the pod's projected ServiceAccount token
    /// (audience `pilotfish`), read again at every call (the kubelet rotates it). The control
    /// plane (`--kubernetes`) checks it with a TokenReview.
    #[arg(long, env = "PILOTFISH_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Managed mode: the roots an https control plane is verified against, PEM (in Kubernetes
    /// ConfigMap `pilotfish-ca`); without it, the root a join token pins.
    #[arg(long, env = "PILOTFISH_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Managed mode: the registration lease; renewed every third of it.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    lease_ttl: pilotfish_api::Duration,
    /// Managed mode: do not register this instance in the registry (Kubernetes, where the
    /// cluster's EndpointSlices list the pod).
    #[arg(long)]
    no_register: bool,
    /// Admin listener (/live, /ready, /metrics, /config, /shutdown).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Inbound listener: traffic from other services to the app.
    #[arg(long, value_name = "ADDR")]
    inbound: Option<SocketAddr>,
    /// Outbound listener: traffic from the app to other services.
    #[arg(long, value_name = "ADDR")]
    outbound: Option<SocketAddr>,
    /// Address of the local app that inbound traffic is forwarded to.
    #[arg(long, value_name = "ADDR")]
    app: Option<SocketAddr>,
    /// App ports whose inbound connections are opaque TCP (no protocol detection: e.g.
    /// server-speaks-first protocols), comma-separated; with an inbound listener.
    #[arg(long, env = "PILOTFISH_OPAQUE_PORTS", value_name = "PORT[,PORT]", value_delimiter = ',')]
    opaque_ports: Vec<u16>,
    /// Grace period for in-flight requests on shutdown (e.g. 30s, 500ms).
    #[arg(long, value_name = "DURATION")]
    drain_timeout: Option<pilotfish_api::Duration>,
    /// Status listener for the kubelet, on the pod IP (in a pod 0.0.0.0:15021): GET /ready,
    /// /live and /app-health/<container>/<liveness|readiness|startup> only.
    #[arg(long, value_name = "ADDR")]
    status: Option<SocketAddr>,
    /// The app's probes the status listener forwards, as the injector writes them (JSON).
    #[arg(long, env = "PILOTFISH_APP_PROBES", value_name = "JSON", value_parser = app_probes, requires = "status")]
    app_probes: Option<AppProbes>,
    /// After SIGTERM: not ready at once, but serve on normally this long before draining, so
    /// the endpoint's removal reaches every caller first (Kubernetes: a few seconds).
    #[arg(long, env = "PILOTFISH_DRAIN_DELAY", value_name = "DURATION", default_value = "0s")]
    drain_delay: pilotfish_api::Duration,
    /// How long a mesh mTLS connection to another sidecar takes new requests (default 1h):
    /// renewed certificates and trust bundles apply to connections opened after them.
    #[arg(long, value_name = "DURATION")]
    mesh_max_age: Option<pilotfish_api::Duration>,
    /// Static mode: this sidecar's mesh certificate, PEM (the leaf, then intermediates); with
    /// --tls-key and --trust-bundle. Reloaded on change. Managed mode gets one from the CA.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "trust_bundle"], conflicts_with = "control_plane")]
    tls_cert: Option<PathBuf>,
    /// Static mode: the private key of --tls-cert, PEM.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "trust_bundle"])]
    tls_key: Option<PathBuf>,
    /// Static mode: the roots the mesh trusts, PEM.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    trust_bundle: Option<PathBuf>,
    #[command(flatten)]
    traces: TraceArgs,
}

/// Traces: a span per hop, exported over OTLP/HTTP.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Export a span per request and hop to this OpenTelemetry collector (OTLP/HTTP, protobuf;
    /// e.g. http://127.0.0.1:4318, which posts to /v1/traces; https:// is verified against the
    /// system's roots). The span ids are those of the `traceparent` header the sidecar forwards.
    #[arg(long, env = "PILOTFISH_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<Endpoint>,
    /// The share of new traces sampled, 0.0 to 1.0; a `traceparent` that arrives keeps its
    /// own decision (its sampled flag).
    #[arg(
        long,
        env = "PILOTFISH_TRACE_SAMPLING",
        value_name = "RATIO",
        default_value = "1.0",
        requires = "otlp_endpoint"
    )]
    pub trace_sampling: Sampling,
}

impl TraceArgs {
    pub fn options(self) -> Option<TraceOptions> {
        let sampling = self.trace_sampling;
        self.otlp_endpoint.map(|endpoint| TraceOptions { endpoint, sampling })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        config,
        control_plane,
        service,
        namespace,
        token,
        token_file,
        ca_file,
        lease_ttl,
        no_register,
        admin,
        inbound,
        outbound,
        app,
        opaque_ports,
        drain_timeout,
        status,
        app_probes,
        drain_delay,
        mesh_max_age,
        tls_cert,
        tls_key,
        trust_bundle,
        traces,
    } = args;
    // clap has checked that the three come together.
    let identity = match (tls_cert, tls_key, trust_bundle) {
        (Some(cert), Some(key), Some(bundle)) => Some(Files { cert, key, bundle }),
        _ => None,
    };
    let source = match (config, service) {
        (Some(path), _) => Source::File { path, identity },
        (None, Some(service)) => Source::ControlPlane(Managed {
            servers: control_plane.into_iter().map(|u| u.trim_end_matches('/').to_owned()).collect(),
            id: proxy_id(&service, &namespace),
            service,
            namespace,
            token: match (token, token_file) {
                (Some(token), _) => token.into(),
                (None, Some(path)) => Bearer::File(path),
                (None, None) => anyhow::bail!(
                    "managed mode needs --token (or PILOTFISH_TOKEN), or in Kubernetes --token-file \
                     (or PILOTFISH_TOKEN_FILE)"
                ),
            },
            ca_file,
            lease_ttl: lease_ttl.get(),
            register: !no_register,
        }),
        (None, None) => anyhow::bail!("give --config FILE, or --control-plane URL with --service NAME"),
    };
    let options = Options {
        source,
        overrides: Overrides {
            admin,
            inbound,
            outbound,
            app,
            opaque_ports: (!opaque_ports.is_empty()).then_some(opaque_ports),
            drain: drain_timeout.map(Into::into),
            mesh_max_age,
            inbound_mtls: None,
        },
        lifecycle: Lifecycle {
            status,
            app_probes: app_probes.unwrap_or_default(),
            drain_delay: drain_delay.get(),
        },
        tracing: traces.options(),
    };
    // On one CPU (a sidecar pinned beside its app, or a pod with a one-core limit) a
    // current-thread runtime, as linkerd2-proxy runs on one core: the work is not handed between
    // threads. Measured against a one-worker multi-thread runtime (three alternating runs each of
    // `cargo bench --bench mesh -- --scenario 'http1-*-single-closed'` and `'http1-*-pair-closed'`,
    // CPU per request over HAProxy's, medians): one sidecar 1.20x against 1.53x, a pair 1.55x
    // against 1.44x (within this machine's noise). With more CPUs, a worker per CPU.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder
        .enable_all()
        .thread_name("pilotfish-sidecar")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(pilotfish_sidecar::run(options))?;
    Ok(())
}

fn app_probes(json: &str) -> Result<AppProbes, String> {
    AppProbes::parse(json).map_err(|e| format!("{}: {}", e.field, e.reason))
}

/// This sidecar's name in `pilotfish proxies`: its service and namespace, the host's name (a
/// pod's name in Kubernetes, where every sidecar has the same small PID) and the PID (several
/// sidecars on one laptop).
fn proxy_id(service: &str, namespace: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(char::is_ascii_graphic).take(63).collect();
    match host.is_empty() {
        true => format!("{service}.{namespace}-{}", std::process::id()),
        false => format!("{service}.{namespace}-{host}-{}", std::process::id()),
    }
}
