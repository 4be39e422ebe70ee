//! The operator commands — `apply`, `get`, `delete`, `history`, `diff`, `rollback` — as
//! clients of the control plane's HTTP API; tables come from [`super::table`].

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::table::{cell, Table};

/// Where the control plane is and how to authenticate to it.
#[derive(Debug, clap::Args)]
pub struct Server {
    /// The control plane's API.
    #[arg(long, env = "PILOTFISH_SERVER", default_value = "http://127.0.0.1:15100", global = true)]
    server: String,
    /// Bearer token for writes.
    #[arg(long, env = "PILOTFISH_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenAction {
    /// A token that lets one service's sidecars get configuration and register instances
    /// (printed once; give it to `pilotfish sidecar --token`).
    Create {
        #[arg(long)]
        service: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create or update resources from a YAML/JSON stream (`-` for stdin); all or nothing.
    Apply {
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
    },
    /// Show resources of a kind (Service, HTTPRoute, BackendPolicy, RateLimitPolicy), or one.
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
    /// Every sidecar: the version it acknowledged, whether that is current, its last NACK.
    Proxies {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

pub fn run(server: Server, command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(execute(server, command))
}

async fn execute(server: Server, command: Command) -> anyhow::Result<()> {
    let api = Api::new(server);
    match command {
        Command::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let out = api.call(http::Method::POST, "/v1/resources", Some(text)).await?;
            // Like kubectl: warnings on stderr, before the result.
            for w in out["warnings"].as_array().into_iter().flatten() {
                eprintln!(
                    "Warning: {}: document {} ({}): {}: {}",
                    file.display(),
                    w["document"],
                    cell(&w["object"]),
                    cell(&w["field"]),
                    cell(&w["message"])
                );
            }
            for item in out["applied"].as_array().into_iter().flatten() {
                let what = if item["unchanged"] == true { "unchanged" } else { "configured" };
                match item["seq"].as_u64() {
                    Some(seq) => println!(
                        "{} {what} (version {}, seq {seq})",
                        item["aggregate"].as_str().unwrap_or(""),
                        item["version"]
                    ),
                    None => println!(
                        "{} {what} (version {})",
                        item["aggregate"].as_str().unwrap_or(""),
                        item["version"]
                    ),
                }
            }
        }
        Command::Get { kind, name, namespace, output } => {
            let items = match &name {
                Some(name) => vec![
                    api.call(http::Method::GET, &format!("/v1/resources/{kind}/{namespace}/{name}"), None)
                        .await?,
                ],
                None => {
                    let out = api
                        .call(
                            http::Method::GET,
                            &format!("/v1/resources?kind={kind}&namespace={namespace}"),
                            None,
                        )
                        .await?;
                    out["items"].as_array().cloned().unwrap_or_default()
                }
            };
            match output {
                Output::Json => {
                    let docs: Vec<&Value> = items.iter().map(|i| &i["document"]).collect();
                    let shown = if name.is_some() {
                        docs[0].clone()
                    } else {
                        Value::from(docs.into_iter().cloned().collect::<Vec<_>>())
                    };
                    println!("{}", serde_json::to_string_pretty(&shown)?);
                }
                Output::Yaml => {
                    for item in &items {
                        print!("---\n{}", serde_yaml_ng::to_string(&item["document"])?);
                    }
                }
                Output::Table => {
                    let mut table = Table::new(&["KIND", "NAMESPACE", "NAME", "VERSION", "SEQ"]);
                    for item in &items {
                        let d = &item["document"];
                        table.row([
                            cell(&d["kind"]),
                            cell(&d["metadata"]["namespace"]),
                            cell(&d["metadata"]["name"]),
                            cell(&item["version"]),
                            cell(&item["seq"]),
                        ]);
                    }
                    print!("{table}");
                }
            }
        }
        Command::Delete { kind, name, namespace } => {
            let out = api
                .call(http::Method::DELETE, &format!("/v1/resources/{kind}/{namespace}/{name}"), None)
                .await?;
            println!("{} deleted (seq {})", out["deleted"].as_str().unwrap_or(""), out["seq"]);
        }
        Command::History { since, output } => {
            let mut events = Vec::new();
            let mut after = since;
            loop {
                let out = api
                    .call(http::Method::GET, &format!("/v1/events?since={after}&limit=1000"), None)
                    .await?;
                let page = out["events"].as_array().cloned().unwrap_or_default();
                match page.last().and_then(|e| e["seq"].as_u64()) {
                    Some(last) => after = last,
                    None => break,
                }
                events.extend(page);
            }
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&events)?),
                Output::Yaml => print!("{}", serde_yaml_ng::to_string(&events)?),
                Output::Table => {
                    let mut table = Table::new(&["SEQ", "AT", "KIND", "AGGREGATE", "VERSION", "ACTOR"]);
                    for e in &events {
                        table.row(
                            ["seq", "at", "kind", "aggregate", "version", "actor"]
                                .map(|field| cell(&e[field])),
                        );
                    }
                    print!("{table}");
                }
            }
        }
        Command::Diff { from, to } => {
            let path = match to {
                Some(to) => format!("/v1/diff?from={from}&to={to}"),
                None => format!("/v1/diff?from={from}"),
            };
            let out = api.call(http::Method::GET, &path, None).await?;
            for c in out["changes"].as_array().into_iter().flatten() {
                let mark = match (c["before"].is_null(), c["after"].is_null()) {
                    (true, false) => "+ added",
                    (false, true) => "- deleted",
                    _ => "~ changed",
                };
                println!("{mark} {}", c["aggregate"].as_str().unwrap_or(""));
                if !c["after"].is_null() {
                    for line in serde_yaml_ng::to_string(&c["after"]["spec"])?.lines() {
                        println!("    {line}");
                    }
                }
            }
        }
        Command::Token { action: TokenAction::Create { service, namespace } } => {
            let body = serde_json::json!({ "service": service, "namespace": namespace }).to_string();
            let out = api.call(http::Method::POST, "/v1/tokens", Some(body)).await?;
            eprintln!("join token for {service}.{namespace} (shown once):");
            println!("{}", out["token"].as_str().unwrap_or_default());
        }
        Command::Proxies { output } => {
            let out = api.call(http::Method::GET, "/v1/proxies", None).await?;
            let items = out["items"].as_array().cloned().unwrap_or_default();
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&items)?),
                Output::Yaml => print!("{}", serde_yaml_ng::to_string(&items)?),
                Output::Table => {
                    println!("current version: {}", cell(&out["version"]));
                    let mut table =
                        Table::new(&["ID", "SERVICE", "CONNECTED", "ACKED", "CURRENT", "LAST NACK"]);
                    for p in &items {
                        let nack = p["lastNack"]["error"]
                            .as_str()
                            .map(|e| format!("v{}: {e}", cell(&p["lastNack"]["version"])));
                        table.row([
                            cell(&p["id"]),
                            format!("{}.{}", cell(&p["service"]), cell(&p["namespace"])),
                            cell(&p["connected"]),
                            cell(&p["ackedVersion"]),
                            cell(&p["current"]),
                            nack.unwrap_or_default(),
                        ]);
                    }
                    print!("{table}");
                }
            }
        }
        Command::Rollback { to } => {
            let body = serde_json::json!({ "toSeq": to }).to_string();
            let out = api.call(http::Method::POST, "/v1/rollback", Some(body)).await?;
            let n = out["events"].as_array().map_or(0, Vec::len);
            println!("rolled back to seq {to}: {n} change(s) written");
        }
    }
    Ok(())
}

struct Api {
    server: String,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    fn new(server: Server) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { server: server.server.trim_end_matches('/').to_owned(), token: server.token, client }
    }

    /// One request; a non-2xx answer becomes an error carrying the server's message.
    async fn call(&self, method: http::Method, path: &str, body: Option<String>) -> anyhow::Result<Value> {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let res = self
            .client
            .request(req)
            .await
            .with_context(|| format!("cannot reach the control plane at {}", self.server))?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if !status.is_success() {
            let message = value["error"].as_str().map_or_else(|| value.to_string(), str::to_owned);
            if status == http::StatusCode::UNAUTHORIZED {
                bail!("{status}: {message} (pass --token or set PILOTFISH_TOKEN)");
            }
            bail!("{status}: {message}");
        }
        Ok(value)
    }
}
