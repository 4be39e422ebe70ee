//! `pilotfish up`: a whole mesh on this machine in one command — an embedded control plane,
//! a managed sidecar beside every service instance, and one for you (your curl, your app) to
//! send requests through. With no file it runs a small demo mesh, one of whose services is
//! flaky so that retries and circuit breakers show their worth. Ctrl-C stops everything: the
//! sidecars deregister and drain, started commands are stopped, and the data directory keeps
//! the configuration for the next `up`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pilotfish_api::wire::{TokenKind, TokenRequest};
use pilotfish_control_plane::core::{ControlPlane, Settings};
use pilotfish_control_plane::store::Embedded;
use pilotfish_sidecar::managed::Managed;
use pilotfish_sidecar::{Lifecycle, Options, Overrides, Source};

use super::sidecar::TraceArgs;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// How long the dashboard's read-only token works. The control plane lives in `up`'s
/// process, so the token reads nothing once `up` stops; a later `up` on the same data directory
/// prints a new one, and this bounds how long an old one (from scrollback, say) keeps working.
const DASHBOARD_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Ports: BASE your sidecar's admin, BASE+1 its outbound listener (send your requests there),
/// BASE+100 the control plane, BASE+200.. the services' apps and sidecars.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Your own services (YAML: `services: [{name, app: ADDR, command: "..."}]`); omitted:
    /// the demo mesh.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Where the control plane keeps the mesh's state (a second `up` resumes from it).
    #[arg(long, value_name = "DIR", default_value = ".pilotfish")]
    data_dir: PathBuf,
    #[arg(long, value_name = "PORT", default_value_t = 15000)]
    base_port: u16,
    /// Every sidecar of the mesh exports its spans there.
    #[command(flatten)]
    traces: TraceArgs,
}

/// The mesh to run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshFile {
    services: Vec<ServiceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    name: String,
    /// Where the app listens.
    app: SocketAddr,
    /// How to start it (run with `sh -c`); omitted: it is already running.
    #[serde(default)]
    command: Option<String>,
}

/// One instance of a service and how it comes to exist.
struct Instance {
    service: String,
    app: SocketAddr,
    run: AppRun,
}

enum AppRun {
    /// A demo app served by this process; fails this fraction of requests with 503.
    Demo {
        greeting: String,
        fail_rate: f64,
    },
    Command(String),
    External,
}

const DEMO_CONFIG: &str = r#"
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: hello}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: catalog}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: flaky}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky}
spec:
  parentRefs: [{name: flaky}]
  rules:
  - timeouts: {request: 2s, backendRequest: 500ms}
    retry: {attempts: 3, backoff: 10ms, codes: [503]}
---
apiVersion: pilotfish.io/v1alpha1
kind: BackendPolicy
metadata: {name: flaky}
spec:
  targetRef: {kind: Service, name: flaky}
  circuitBreaker: {consecutiveFailures: 3, baseEjectionTime: 10s}
"#;

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("pilotfish-up").build()?;
    runtime.block_on(up(args))
}

async fn up(args: Args) -> anyhow::Result<()> {
    let Args { file, data_dir, base_port: base, traces } = args;
    let traces = traces.options();
    let port = |offset: u16| SocketAddr::from(([127, 0, 0, 1], base + offset));
    let (instances, config) = match &file {
        None => (demo(port(200)), Some(DEMO_CONFIG.to_owned())),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let mesh: MeshFile = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{}: not a mesh file", path.display()))?;
            let instances = mesh
                .services
                .into_iter()
                .map(|s| Instance {
                    service: s.name,
                    app: s.app,
                    run: s.command.map_or(AppRun::External, AppRun::Command),
                })
                .collect();
            (instances, None)
        }
    };
    for i in &instances {
        pilotfish_api::document::validate_name(&i.service)
            .map_err(|e| anyhow::anyhow!("service name: {e}"))?;
    }

    // The control plane, in this process.
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let token = super::control_plane::stored_or_new_token(&data_dir)?;
    let store = Embedded::open(&data_dir.join("store")).await.context("opening the mesh's store")?;
    let ca = pilotfish_control_plane::ca::Ca::open(&data_dir.join("ca"))?;
    let cp = ControlPlane::open(Arc::new(store), Settings::new(token), ca)
        .await
        .context("loading the mesh's state")?;
    let cp_addr = port(100);
    let listener = TcpListener::bind(cp_addr).await.with_context(|| {
        format!("cannot listen on {cp_addr}: is another `pilotfish up` running? (--base-port)")
    })?;
    let stop_cp = CancellationToken::new();
    let cp_server =
        tokio::spawn(pilotfish_control_plane::listener::serve(cp.clone(), listener, stop_cp.clone()));
    if let Some(config) = config {
        let applied =
            cp.apply("pilotfish up", &config, None, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        for warning in applied.warnings {
            tracing::warn!("{warning}");
        }
    }

    // The apps: demo apps served here, commands started as children.
    let mut children = Children::default();
    for i in &instances {
        match &i.run {
            AppRun::Demo { greeting, fail_rate } => {
                let listener =
                    TcpListener::bind(i.app).await.with_context(|| format!("cannot listen on {}", i.app))?;
                tokio::spawn(demo_app(listener, greeting.clone(), *fail_rate));
            }
            AppRun::Command(command) => {
                // Its own process group, so stopping it stops whatever the shell started too.
                let child = tokio::process::Command::new("sh")
                    .args(["-c", command])
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting {:?}", command))?;
                children.0.push(child);
            }
            AppRun::External => {}
        }
    }

    // A managed sidecar beside every instance, and yours, each on its own service's join
    // token (so each proves its own service's identity, never the admin's).
    let mut tokens = std::collections::BTreeMap::new();
    for service in instances.iter().map(|i| i.service.as_str()).chain(["laptop"]) {
        if !tokens.contains_key(service) {
            let created = cp
                .create_token("pilotfish up".to_owned(), TokenRequest::join(service, "default"))
                .await
                .map_err(|e| anyhow::anyhow!("creating {service}'s join token: {e}"))?;
            tokens.insert(service.to_owned(), created.token);
        }
    }
    let cp_url = format!("http://{cp_addr}");
    let sidecar = |service: &str, app: Option<SocketAddr>, offset: u16| {
        let managed = Managed {
            servers: vec![cp_url.clone()],
            service: service.to_owned(),
            namespace: "default".to_owned(),
            token: tokens[service].clone().into(),
            ca_file: None,
            id: format!("{service}-{}", base + offset),
            lease_ttl: Duration::from_secs(10),
            register: true,
        };
        let overrides = Overrides {
            admin: Some(port(offset + 100)),
            inbound: app.map(|_| port(offset)),
            outbound: Some(port(offset + 200)),
            app,
            drain: Some(Duration::from_secs(3)),
            ..Overrides::default()
        };
        let lifecycle = Lifecycle::default();
        tokio::spawn(pilotfish_sidecar::run(Options {
            source: Source::ControlPlane(managed),
            overrides,
            lifecycle,
            tracing: traces.clone(),
        }))
    };
    let mut sidecars = Vec::new();
    for (n, i) in instances.iter().enumerate() {
        sidecars.push(sidecar(&i.service, Some(i.app), 300 + n as u16));
    }
    let yours = Managed {
        servers: vec![cp_url.clone()],
        service: "laptop".to_owned(),
        namespace: "default".to_owned(),
        token: tokens["laptop"].clone().into(),
        ca_file: None,
        id: format!("laptop-{base}"),
        lease_ttl: Duration::from_secs(10),
        register: true,
    };
    let overrides = Overrides {
        admin: Some(port(0)),
        outbound: Some(port(1)),
        drain: Some(Duration::from_secs(3)),
        ..Overrides::default()
    };
    sidecars.push(tokio::spawn(pilotfish_sidecar::run(Options {
        source: Source::ControlPlane(yours),
        overrides,
        lifecycle: Lifecycle::default(),
        tracing: traces.clone(),
    })));

    // The dashboard's token: read-only, and it expires.
    let dashboard = cp
        .create_token(
            "pilotfish up".to_owned(),
            TokenRequest {
                service: None,
                namespace: "default".to_owned(),
                kind: TokenKind::ReadOnly,
                ttl: Some(pilotfish_api::Duration::from_secs(DASHBOARD_TOKEN_TTL.as_secs())),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the dashboard's read-only token: {e}"))?;

    wait_until_routable(&cp, &instances, port(0), &mut sidecars).await?;
    print_banner(&instances, base, &data_dir, file.is_none(), &dashboard.token);

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    eprintln!("stopping the mesh…");
    // The sidecars saw the same signal: they deregister (the control plane is still up) and
    // drain. Then the apps and the control plane stop.
    for s in sidecars {
        match tokio::time::timeout(Duration::from_secs(15), s).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("a sidecar stopped with an error: {e}"),
            Ok(Err(e)) => eprintln!("a sidecar failed: {e}"),
            Err(_) => eprintln!("a sidecar did not stop in time"),
        }
    }
    children.stop().await;
    stop_cp.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), cp_server).await;
    eprintln!("stopped; the mesh's state is kept in {}", data_dir.display());
    Ok(())
}

/// The commands `up` started, each in its own process group. Stopped on the way out, and killed
/// when dropped on an error path, so nothing they started outlives `up`.
#[derive(Default)]
struct Children(Vec<tokio::process::Child>);

impl Children {
    /// SIGTERM to each group; whatever is left after a grace period is killed.
    async fn stop(mut self) {
        for child in &mut self.0 {
            signal_group(child, "-TERM");
            if tokio::time::timeout(Duration::from_secs(3), child.wait()).await.is_err() {
                signal_group(child, "-KILL");
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            signal_group(child, "-KILL");
        }
    }
}

fn signal_group(child: &tokio::process::Child, signal: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").args([signal, "--", &format!("-{pid}")]).status();
    }
}

fn demo(first: SocketAddr) -> Vec<Instance> {
    let at = |n: u16| SocketAddr::new(first.ip(), first.port() + n);
    let demo = |service: &str, n: u16, greeting: &str, fail_rate: f64| Instance {
        service: service.to_owned(),
        app: at(n),
        run: AppRun::Demo { greeting: greeting.to_owned(), fail_rate },
    };
    vec![
        demo("hello", 0, "hello from the hello service\n", 0.0),
        demo("catalog", 1, "{\"items\": [\"pilotfish\", \"remora\", \"wrasse\"]}\n", 0.0),
        demo("flaky", 2, "flaky instance 1: fine this time\n", 0.0),
        demo("flaky", 3, "flaky instance 2: fine this time\n", 0.5),
    ]
}

/// A demo app: answers every request with its greeting, or 503 for `fail_rate` of them.
async fn demo_app(listener: TcpListener, greeting: String, fail_rate: f64) {
    let greeting = Bytes::from(greeting);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let greeting = greeting.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let greeting = greeting.clone();
                async move {
                    let mut res = http::Response::new(Full::new(greeting));
                    if fastrand::f64() < fail_rate {
                        *res.body_mut() =
                            Full::new(Bytes::from_static(b"this instance is having a bad day\n"));
                        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, std::convert::Infallible>(res)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Waits until every instance is registered and your sidecar is ready (or a sidecar failed).
async fn wait_until_routable(
    cp: &Arc<ControlPlane>,
    instances: &[Instance],
    admin: SocketAddr,
    sidecars: &mut [tokio::task::JoinHandle<Result<(), pilotfish_sidecar::Error>>],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(done) = sidecars.iter_mut().find(|s| s.is_finished()) {
            match done.await {
                Ok(Err(e)) => bail!("a sidecar could not start: {e}"),
                other => bail!("a sidecar stopped while starting: {other:?}"),
            }
        }
        let registered = cp.state().read().await.endpoints.len();
        let ready = tokio::net::TcpStream::connect(admin).await.is_ok();
        if registered >= instances.len() && ready {
            // One push for the last registration to reach your sidecar.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the mesh did not come up within 30 s ({registered} of {} instances registered)",
                instances.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn print_banner(instances: &[Instance], base: u16, data_dir: &std::path::Path, demo: bool, token: &str) {
    let out = base + 1;
    println!(
        "Pilotfish mesh is up. Control plane: http://127.0.0.1:{} (state in {})",
        base + 100,
        data_dir.display()
    );
    // The token rides in the fragment, which the browser never sends: it stays out of logs.
    println!("Dashboard: http://127.0.0.1:{}/#token={token}", base + 100);
    println!(
        "  (a read-only token, valid for {} h; the next `up` prints a new one)",
        DASHBOARD_TOKEN_TTL.as_secs() / 3600
    );
    println!("Services:");
    for (n, i) in instances.iter().enumerate() {
        println!(
            "  {:<10} app {:<16} sidecar inbound 127.0.0.1:{}",
            i.service,
            i.app.to_string(),
            base + 300 + n as u16
        );
    }
    println!("Send requests through your sidecar at 127.0.0.1:{out}, naming the service in Host. Try:");
    let names: Vec<&str> = {
        let mut v: Vec<&str> = instances.iter().map(|i| i.service.as_str()).collect();
        v.dedup();
        v
    };
    for name in &names {
        println!("  curl -s -H 'Host: {name}' http://127.0.0.1:{out}/");
    }
    if demo {
        println!(
            "  # flaky has an instance failing half its requests: retries and its circuit breaker hide it"
        );
        println!("  for i in $(seq 20); do curl -s -o /dev/null -w '%{{http_code}} ' -H 'Host: flaky' http://127.0.0.1:{out}/; done; echo");
    }
    println!("  curl -s http://127.0.0.1:{base}/metrics | grep -E 'pilotfish_(requests|retries)_total'");
    println!(
        "  PILOTFISH_SERVER=http://127.0.0.1:{} PILOTFISH_TOKEN=$(cat {}) pilotfish get service",
        base + 100,
        data_dir.join("admin-token").display()
    );
    println!("Ctrl-C stops everything.");
}
