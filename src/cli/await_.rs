//! `pilotfish await`: the legacy (pre-native-sidecar) pod's hooks. Without a command it waits
//! until the sidecar is ready (the app containers' postStart hook, so they start only once the
//! mesh works); with `-- CMD ARGS...` it waits, runs the command with stdio inherited and
//! signals forwarded, then asks the sidecar to drain and exit (`POST /shutdown`) so that a Job's
//! pod completes, and exits with the command's code.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustix::process::{kill_process, Pid, Signal};
use tokio::signal::unix::{signal, SignalKind};

/// Waits for the sidecar's admin `/ready`; with a command, runs it and then shuts the sidecar
/// down.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sidecar's admin listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    admin: std::net::SocketAddr,
    /// How long to wait for the sidecar to be ready.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    timeout: pilotfish_api::Duration,
    /// The command to run once the sidecar is ready (after `--`).
    #[arg(last = true, value_name = "CMD ARGS")]
    command: Vec<String>,
}

/// How often readiness is asked: short, as the app waits on it.
const POLL: Duration = Duration::from_millis(200);
/// How long one request to the admin listener may take (it is on the loopback).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The signals a container runtime or a terminal sends, passed on to the command.
const FORWARDED: [Signal; 6] =
    [Signal::TERM, Signal::INT, Signal::HUP, Signal::QUIT, Signal::USR1, Signal::USR2];

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { admin, timeout, command } = args;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let code = runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let admin = Admin { client, base: format!("http://{admin}") };
        let ready = admin.wait_ready(timeout).await;
        let Some((program, args)) = command.split_first() else { return ready.map(|()| 0) };
        if let Err(e) = ready {
            // The command never runs; still tell a sidecar that may come up late to stop, or
            // the Job's pod would never complete.
            let _ = admin.shutdown().await;
            return Err(e);
        }
        let code = run_forwarding_signals(program, args).await;
        if let Err(e) = admin.shutdown().await {
            eprintln!(
                "warning: the command is done, but the sidecar at {} was not told to stop: {e:#}",
                admin.base
            );
        }
        anyhow::Ok(code)
    })?;
    // The command's own exit code is the container's, and so the Job's verdict.
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

struct Admin {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    base: String,
}

impl Admin {
    async fn call(&self, method: Method, path: &str) -> anyhow::Result<StatusCode> {
        let req = Request::builder().method(method).uri(format!("{}{path}", self.base)).body(Empty::new())?;
        let res =
            tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req)).await.context("no answer")??;
        Ok(res.status())
    }

    async fn wait_ready(&self, timeout: pilotfish_api::Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout.get();
        loop {
            let last = match self.call(Method::GET, "/ready").await {
                Ok(StatusCode::OK) => return Ok(()),
                Ok(status) => format!("/ready answered {status}"),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() + POLL > deadline {
                bail!(
                    "the sidecar at {} was not ready within {timeout} (last: {last}); is the pilotfish-proxy container running? Its log says why it is not ready",
                    self.base,
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        match self.call(Method::POST, "/shutdown").await? {
            StatusCode::OK => Ok(()),
            status => bail!("POST /shutdown answered {status}"),
        }
    }
}

/// Runs the command to its end; its exit code, 128 + the signal that killed it, or the shell's
/// 126/127 when it cannot be started.
async fn run_forwarding_signals(program: &str, args: &[String]) -> i32 {
    // Installed before the command starts, so no signal falls between the two.
    let mut signals: Vec<_> =
        match FORWARDED.iter().map(|s| signal(SignalKind::from_raw(s.as_raw()))).collect() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("error: cannot install signal handlers: {e}");
                return 126;
            }
        };
    let mut child = match tokio::process::Command::new(program).args(args).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("error: cannot run {program}: {e}");
            return if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
        }
    };
    let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
    loop {
        let received = next_signal(&mut signals);
        tokio::select! {
            status = child.wait() => return match status {
                Ok(status) => exit_code(status),
                Err(e) => {
                    eprintln!("error: waiting for {program}: {e}");
                    1
                }
            },
            index = received => {
                if let Some(pid) = pid {
                    let _ = kill_process(pid, FORWARDED[index]);
                }
            }
        }
    }
}

/// The index of the first of `signals` to arrive.
async fn next_signal(signals: &mut [tokio::signal::unix::Signal]) -> usize {
    std::future::poll_fn(|cx| {
        for (i, s) in signals.iter_mut().enumerate() {
            if s.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}
