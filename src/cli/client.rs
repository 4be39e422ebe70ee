//! The operator commands — `apply`, `get`, `delete`, `history`, `diff`, `rollback`, `token`,
//! `proxies`, `ca`, `stat`, `edges`, `tap` — through the typed client of the control plane's API
//! (`pilotfish_api::client`); tables come from [`super::table`].

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use pilotfish_api::client::{Client, ClientError, Trust};
use pilotfish_api::wire::{DiffQuery, EventsQuery, ListQuery, RollbackRequest, TokenKind, TokenRequest};
use serde_json::Value;

use super::table::{cell, Table};

/// Where the control plane is and how to authenticate to it.
#[derive(Debug, clap::Args)]
pub struct Server {
    /// The control plane's API.
    #[arg(long, env = "PILOTFISH_SERVER", default_value = "http://127.0.0.1:15100", global = true)]
    server: String,
    /// Bearer token: the admin token, or a read-only one for reads.
    #[arg(long, env = "PILOTFISH_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// An https control plane: the PEM file of the CA to verify it against (`ca.pem` in the
    /// control plane's data directory).
    #[arg(long, env = "PILOTFISH_CA_FILE", value_name = "FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// An https control plane: the SHA-256 of its CA's root, as a join or read-only token
    /// carries it (a token's third part is used when neither this nor --ca-file is given).
    #[arg(
        long,
        env = "PILOTFISH_CA_FINGERPRINT",
        value_name = "SHA256",
        global = true,
        conflicts_with = "ca_file"
    )]
    ca_fingerprint: Option<String>,
}

impl Server {
    /// A client of the control plane with the token and trust given.
    fn client(self) -> anyhow::Result<Client> {
        let trust = match (&self.ca_file, &self.ca_fingerprint) {
            (Some(path), _) => Some(Trust::ca_file(path)?),
            (None, Some(fingerprint)) => Some(Trust::pinned(fingerprint)?),
            (None, None) => self.token.as_deref().and_then(Trust::from_token),
        };
        Ok(Client::builder(&self.server).token(self.token).trust(trust).build())
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenAction {
    /// A join token that lets one service's sidecars get configuration, register instances and
    /// get certificates (give it to `pilotfish sidecar --token`), or with `--read-only` a token
    /// that reads everything and writes nothing (dashboards, CI). Printed once.
    Create {
        #[arg(long, required_unless_present = "read_only", conflicts_with = "read_only")]
        service: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// A read-only token instead of a join token.
        #[arg(long)]
        read_only: bool,
        /// How long the token works (e.g. 30m, 24h); omitted: until further notice.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<pilotfish_api::Duration>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create or update resources from a YAML/JSON stream (`-` for stdin); all or nothing.
    Apply {
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
    },
    /// Show resources of a kind (Service, HTTPRoute, BackendPolicy, RateLimitPolicy, AuthorizationPolicy,
    /// Rollout), or one.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete a resource.
    Delete {
        kind: String,
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// The event log: every change, in order.
    History {
        #[arg(long, default_value_t = 0)]
        since: u64,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// What changed in the configuration between two points of the log (B defaults to now).
    Diff { from: u64, to: Option<u64> },
    /// Restore the configuration as it was after event SEQ (as new events).
    Rollback {
        #[arg(long = "to", value_name = "SEQ")]
        to: u64,
    },
    /// Join tokens for sidecars.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The mesh CA: `status` (roots and expiry), `bundle` (the roots' PEM).
    Ca {
        #[command(subcommand)]
        action: super::ca::CaAction,
    },
    /// Every sidecar: the version it acknowledged, whether that is current, its last NACK.
    Proxies {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Golden metrics per service: sidecars reporting, success rate, requests per second,
    /// latency quantiles, open TCP connections, circuit breakers open toward it.
    Stat(super::stats::StatArgs),
    /// Golden metrics per edge (caller → callee): identities, mTLS, requests per second,
    /// success rate, p99 latency.
    Edges(super::stats::StatArgs),
    /// Golden metrics per route (HTTPRoute `namespace/name`) into a service: success rate,
    /// requests per second, latency quantiles.
    Routes(super::stats::RoutesArgs),
    /// A service's requests as they happen (sampled on its sidecars, at most 100 a second
    /// each): method, authority, path, status, latency, request id, peer identity. Needs the
    /// admin token.
    Tap(super::tap::TapArgs),
    /// Progressive delivery: a Rollout's status, and pause, resume, abort or promote it.
    Rollout {
        #[command(subcommand)]
        action: super::rollout::RolloutCommand,
    },
}

pub fn run(server: Server, command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(execute(server, command))
}

/// A failed call as the operator reads it: the server's message, and what to do about a
/// missing token.
pub fn explain(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Unauthorized(_) => anyhow::anyhow!("{e} (pass --token or set PILOTFISH_TOKEN)"),
        e => e.into(),
    }
}

/// Prints `value` as YAML or JSON with its keys sorted, as the CLI always printed the API's
/// answers.
pub fn print_sorted(value: &impl serde::Serialize, yaml: bool) -> anyhow::Result<()> {
    let value = serde_json::to_value(value)?;
    if yaml {
        print!("{}", serde_yaml_ng::to_string(&value)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(())
}

async fn execute(server: Server, command: Command) -> anyhow::Result<()> {
    let api = server.client()?;
    match command {
        Command::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let out = api.apply(&text).await.map_err(explain)?;
            // Like kubectl: warnings on stderr, before the result.
            for w in &out.warnings {
                eprintln!(
                    "Warning: {}: document {} ({}): {}: {}",
                    file.display(),
                    w.document,
                    w.object,
                    w.field,
                    w.message
                );
            }
            for item in &out.applied {
                let what = if item.unchanged { "unchanged" } else { "configured" };
                match item.seq {
                    Some(seq) => println!("{} {what} (version {}, seq {seq})", item.aggregate, item.version),
                    None => println!("{} {what} (version {})", item.aggregate, item.version),
                }
            }
        }
        Command::Get { kind, name, namespace, output } => {
            let items = match &name {
                Some(name) => vec![api.get(&kind, &namespace, name).await.map_err(explain)?],
                None => {
                    let query = ListQuery { kind: Some(kind), namespace: Some(namespace) };
                    api.list(&query).await.map_err(explain)?.items
                }
            };
            match output {
                Output::Json => {
                    let docs: Vec<&Value> = items.iter().map(|i| &i.document).collect();
                    let shown = if name.is_some() {
                        docs[0].clone()
                    } else {
                        Value::from(docs.into_iter().cloned().collect::<Vec<_>>())
                    };
                    println!("{}", serde_json::to_string_pretty(&shown)?);
                }
                Output::Yaml => {
                    for item in &items {
                        print!("---\n{}", serde_yaml_ng::to_string(&item.document)?);
                    }
                }
                Output::Table => {
                    let mut table = Table::new(&["KIND", "NAMESPACE", "NAME", "VERSION", "SEQ"]);
                    for item in &items {
                        let d = &item.document;
                        table.row([
                            cell(&d["kind"]),
                            cell(&d["metadata"]["namespace"]),
                            cell(&d["metadata"]["name"]),
                            item.version.to_string(),
                            item.seq.to_string(),
                        ]);
                    }
                    print!("{table}");
                }
            }
        }
        Command::Delete { kind, name, namespace } => {
            let out = api.delete(&kind, &namespace, &name).await.map_err(explain)?;
            println!("{} deleted (seq {})", out.deleted, out.seq);
        }
        Command::History { since, output } => {
            let mut events = Vec::new();
            let mut query = EventsQuery { since, limit: Some(1000) };
            loop {
                let page = api.events(&query).await.map_err(explain)?.events;
                match page.last() {
                    Some(last) => query.since = last.seq,
                    None => break,
                }
                events.extend(page);
            }
            match output {
                Output::Json => print_sorted(&events, false)?,
                Output::Yaml => print_sorted(&events, true)?,
                Output::Table => {
                    let mut table = Table::new(&["SEQ", "AT", "KIND", "AGGREGATE", "VERSION", "ACTOR"]);
                    for e in events {
                        table.row([
                            e.seq.to_string(),
                            e.at,
                            e.kind,
                            e.aggregate,
                            e.version.to_string(),
                            e.actor,
                        ]);
                    }
                    print!("{table}");
                }
            }
        }
        Command::Diff { from, to } => {
            let out = api.diff(&DiffQuery { from, to }).await.map_err(explain)?;
            for c in &out.changes {
                let (before, after) =
                    (c.before.as_ref().filter(|v| !v.is_null()), c.after.as_ref().filter(|v| !v.is_null()));
                let mark = match (before, after) {
                    (None, Some(_)) => "+ added",
                    (Some(_), None) => "- deleted",
                    _ => "~ changed",
                };
                println!("{mark} {}", c.aggregate);
                if let Some(after) = after {
                    for line in serde_yaml_ng::to_string(&after["spec"])?.lines() {
                        println!("    {line}");
                    }
                }
            }
        }
        Command::Stat(args) => super::stats::stat(&api, args).await?,
        Command::Edges(args) => super::stats::edges(&api, args).await?,
        Command::Routes(args) => super::stats::routes(&api, args).await?,
        Command::Tap(args) => super::tap::tap(&api, args).await?,
        Command::Rollout { action } => super::rollout::execute(&api, action).await?,
        Command::Ca { action } => super::ca::execute(&api, action).await.map_err(explain)?,
        Command::Token { action: TokenAction::Create { service, namespace, read_only, ttl } } => {
            let kind = if read_only { TokenKind::ReadOnly } else { TokenKind::Join };
            let request = TokenRequest { service, namespace, kind, ttl };
            let out = api.create_token(&request).await.map_err(explain)?;
            let what = match (&out.service, &out.namespace) {
                (Some(service), Some(namespace)) => format!("join token for {service}.{namespace}"),
                _ => "read-only token".to_owned(),
            };
            let until = out.expires_at.map(|at| format!(", valid until {at}")).unwrap_or_default();
            eprintln!("{what} (shown once{until}):");
            println!("{}", out.token);
        }
        Command::Proxies { output } => {
            let out = api.proxies().await.map_err(explain)?;
            match output {
                Output::Json => print_sorted(&out.items, false)?,
                Output::Yaml => print_sorted(&out.items, true)?,
                Output::Table => {
                    println!("current version: {}", out.version);
                    let mut table = Table::new(&[
                        "ID",
                        "SERVICE",
                        "CONNECTED",
                        "ACKED",
                        "CURRENT",
                        "CERT EXPIRES",
                        "ROOT",
                        "LAST NACK",
                    ]);
                    let mut warnings = Vec::new();
                    for p in out.items {
                        let nack = p.last_nack.map(|n| format!("v{}: {}", n.version, n.error));
                        let cert = p.certificate.as_ref();
                        let root =
                            cert.and_then(|c| c.root.as_deref()).map(|r| r[..r.len().min(16)].to_owned());
                        if let Some(warning) = p.certificate_warning {
                            warnings.push(format!(
                                "warning: {} ({}.{}): {warning}",
                                p.id, p.service, p.namespace
                            ));
                        }
                        table.row([
                            p.id,
                            format!("{}.{}", p.service, p.namespace),
                            p.connected.to_string(),
                            p.acked_version.to_string(),
                            p.current.to_string(),
                            cert.map(|c| c.not_after.clone()).unwrap_or_else(|| "-".into()),
                            root.unwrap_or_else(|| "-".into()),
                            nack.unwrap_or_default(),
                        ]);
                    }
                    print!("{table}");
                    for warning in warnings {
                        eprintln!("{warning}");
                    }
                }
            }
        }
        Command::Rollback { to } => {
            let out = api.rollback(&RollbackRequest { to_seq: to }).await.map_err(explain)?;
            println!("rolled back to seq {to}: {} change(s) written", out.events.len());
        }
    }
    Ok(())
}
