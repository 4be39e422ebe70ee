//! The command line: one `clap` definition for every subcommand, and the dispatch to each.

mod await_;
mod ca;
mod client;
mod control_plane;
mod init;
mod inject;
mod rollout;
mod sidecar;
mod stats;
mod table;
mod tap;
mod up;
mod yaml_stream;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pilotfish: a low-latency service mesh — sidecar proxy, control plane and CLI in one binary.
#[derive(Debug, Parser)]
#[command(name = "pilotfish", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the operator commands reach the control plane.
    #[command(flatten)]
    server: client::Server,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a sidecar proxy beside one service instance.
    Sidecar(sidecar::Args),
    /// Run the control plane: event-sourced store, registry, HTTP API.
    ControlPlane(control_plane::Args),
    /// A local mesh in one command: control plane, sidecars, and a demo (or your services).
    Up(up::Args),
    /// Kubernetes: redirect a pod's TCP through its sidecar (iptables; the init container).
    Init(init::Args),
    /// Kubernetes, before native sidecars: wait until the sidecar is ready; with `-- CMD`, run
    /// it, then stop the sidecar and exit with CMD's code (Jobs).
    #[command(name = "await")]
    Await(await_::Args),
    /// Add the Pilotfish sidecar to the workloads of Kubernetes manifests (printed to stdout).
    Inject(inject::InjectArgs),
    /// Take the sidecar `inject` added out again.
    Uninject(inject::Input),
    #[command(flatten)]
    Client(client::Command),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Sidecar(args) => sidecar::run(args),
        Command::ControlPlane(args) => control_plane::run(args),
        Command::Up(args) => up::run(args),
        Command::Init(args) => init::run(args),
        Command::Await(args) => await_::run(args),
        Command::Inject(args) => inject::run_inject(args),
        Command::Uninject(input) => inject::run_uninject(input),
        Command::Client(command) => client::run(cli.server, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries the access log), filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
