//! `pilotfish sidecar`: run the data plane from a static config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use pilotfish_sidecar::{Options, Overrides};

/// Defaults: admin 127.0.0.1:15000, outbound 127.0.0.1:15001, inbound 0.0.0.0:15006 (only with
/// an app). Flags override the file's `Sidecar` document. SIGHUP or a change to the file reloads
/// it; SIGTERM or `POST /shutdown` on the admin listener drains and exits.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Multi-document YAML with a `Sidecar` and the `Service`s this app calls.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
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
    /// Grace period for in-flight requests on shutdown (e.g. 30s, 500ms).
    #[arg(long, value_name = "DURATION")]
    drain_timeout: Option<pilotfish_api::Duration>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { config, admin, inbound, outbound, app, drain_timeout } = args;
    let options = Options {
        config,
        overrides: Overrides { admin, inbound, outbound, app, drain: drain_timeout.map(Into::into) },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pilotfish-sidecar")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(pilotfish_sidecar::run(options))?;
    Ok(())
}
