//! `pilotfish tap SERVICE`: a service's requests as they happen, from `GET /v1/tap` — one line
//! per request (time, direction, method, status, latency, authority, path, request id, peer
//! identity, the sidecar that saw it), or with `-o json` the events as newline-delimited JSON.

use std::io::Write;

use pilotfish_api::client::Client;
use pilotfish_api::wire::{EdgeDirection, TapEnd, TapEvent, TapMessage, TapQuery};

use super::client::explain;

/// What `tap` takes.
#[derive(Debug, clap::Args)]
pub struct TapArgs {
    /// The service whose requests to show (to and from it): `name` or `name.namespace`.
    pub service: String,
    /// Only requests whose path starts with this.
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// Only requests of this method (e.g. GET).
    #[arg(long, value_name = "M")]
    pub method: Option<String>,
    /// Stop after this many requests.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: TapOutput,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TapOutput {
    /// One line per request.
    Text,
    /// One JSON event per line.
    Json,
}

/// Prints requests until the tap ends (`--max`, the hour a tap lasts) or the command is
/// interrupted.
pub async fn tap(api: &Client, args: TapArgs) -> anyhow::Result<()> {
    let (service, namespace) = match args.service.split_once('.') {
        Some((name, namespace)) => (name.to_owned(), Some(namespace.to_owned())),
        None => (args.service.clone(), None),
    };
    let query = TapQuery {
        service,
        namespace,
        path: args.path,
        method: args.method.map(|m| m.to_ascii_uppercase()),
        max: args.max,
    };
    let mut stream = api.tap(&query).await.map_err(explain)?;
    let mut out = std::io::stdout().lock();
    loop {
        match stream.next().await? {
            TapMessage::Event(event) => {
                match args.output {
                    TapOutput::Json => serde_json::to_writer(&mut out, &event)?,
                    TapOutput::Text => write!(out, "{}", text(&event))?,
                }
                writeln!(out)?;
                out.flush()?;
            }
            TapMessage::Dropped(n) => eprintln!("({n} requests left out: this terminal read too slowly)"),
            TapMessage::End(end) => {
                if end != TapEnd::Max {
                    eprintln!("tap ended: {}", reason(end));
                }
                return Ok(());
            }
        }
    }
}

fn reason(end: TapEnd) -> &'static str {
    match end {
        TapEnd::Max => "--max requests shown",
        TapEnd::TimeLimit => "a tap lasts an hour at most; run it again to go on",
        TapEnd::Stopping => "the control plane is stopping",
    }
}

/// `08:00:00.123 in  GET 200 1.2ms web /api/users id=… peer=… proxy=…`.
fn text(e: &TapEvent) -> String {
    let time = e.at.split_once('T').map_or(e.at.as_str(), |(_, t)| t.trim_end_matches('Z'));
    let direction = match e.direction {
        EdgeDirection::Inbound => "in ",
        EdgeDirection::Outbound => "out",
    };
    let mut line = format!(
        "{time} {direction} {:<6} {} {:>8} {} {}",
        e.method,
        e.status,
        format!("{:.1}ms", e.latency_ms),
        e.authority,
        e.path
    );
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    line.push_str(&format!(" id={} peer={}", or_dash(&e.request_id), or_dash(&e.peer)));
    if let Some(proxy) = &e.proxy {
        line.push_str(&format!(" proxy={proxy}"));
    }
    if let Some(error) = &e.error {
        line.push_str(&format!(" error={error}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_line_with_every_field() {
        let event = TapEvent {
            at: "2026-12-03T08:00:00.123Z".into(),
            proxy: Some("web-1".into()),
            direction: EdgeDirection::Inbound,
            method: "GET".into(),
            authority: "web".into(),
            path: "/api/users".into(),
            status: 200,
            latency_ms: 1.24,
            request_id: Some("r-1".into()),
            peer: Some("spiffe://pilotfish.local/ns/default/sa/client".into()),
            secured: true,
            error: None,
        };
        assert_eq!(
            text(&event),
            "08:00:00.123 in  GET    200    1.2ms web /api/users id=r-1 \
             peer=spiffe://pilotfish.local/ns/default/sa/client proxy=web-1"
        );
        let local = TapEvent { error: Some("no-endpoints".into()), request_id: None, peer: None, ..event };
        assert!(text(&local).ends_with("id=- peer=- proxy=web-1 error=no-endpoints"), "{}", text(&local));
    }
}
