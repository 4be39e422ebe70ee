//! `pilotfish stat` and `pilotfish edges`: the mesh's golden metrics from `GET /v1/stats`, as
//! Linkerd's viz prints them (per service: MESHED, SUCCESS, RPS, P50/P95/P99, TCP_CONN; per
//! edge: SRC, DST, CLIENT_ID, SERVER_ID, SECURED, RPS, SUCCESS, P99).

use pilotfish_api::client::Client;
use pilotfish_api::wire::{Golden, StatsBy, StatsList, StatsQuery};

use super::client::{explain, print_sorted, Output};
use super::table::Table;

/// What `stat` and `edges` take.
#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// Only this service (`name` or `name.namespace`); for `edges`, edges from or to it.
    pub service: Option<String>,
    /// How far back to look: 5s to 1h.
    #[arg(short, long, default_value = "1m")]
    pub window: String,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

async fn fetch(api: &Client, args: &StatArgs, by: StatsBy) -> anyhow::Result<StatsList> {
    let query = StatsQuery { window: Some(args.window.clone()), by: Some(by), service: args.service.clone() };
    api.stats(&query).await.map_err(explain)
}

fn success(g: &Golden) -> String {
    g.success_rate.map(|r| format!("{:.2}%", r * 100.0)).unwrap_or_else(|| "-".into())
}

fn rps(g: &Golden) -> String {
    format!("{:.1}rps", g.rps)
}

fn ms(q: Option<u32>) -> String {
    q.map(|ms| format!("{ms}ms")).unwrap_or_else(|| "-".into())
}

/// The rows (JSON or YAML), or the table.
fn print(list: &StatsList, output: Output, table: impl FnOnce() -> Table) -> anyhow::Result<()> {
    match output {
        Output::Json => print_sorted(&list.items, false),
        Output::Yaml => print_sorted(&list.items, true),
        Output::Table => {
            print!("{}", table());
            Ok(())
        }
    }
}

/// `pilotfish stat`: one row per service.
pub async fn stat(api: &Client, args: StatArgs) -> anyhow::Result<()> {
    let list = fetch(api, &args, StatsBy::Service).await?;
    print(&list, args.output, || {
        let mut table = Table::new(&["SERVICE", "MESHED", "SUCCESS", "RPS", "P50", "P95", "P99", "TCP_CONN"]);
        for row in &list.items {
            let g = &row.golden;
            let meshed =
                row.meshed.as_ref().map(|m| format!("{}/{}", m.current, m.total)).unwrap_or_default();
            table.row([
                row.service.clone().unwrap_or_default(),
                meshed,
                success(g),
                rps(g),
                ms(g.p50_ms),
                ms(g.p95_ms),
                ms(g.p99_ms),
                g.tcp_open.to_string(),
            ]);
        }
        table
    })
}

/// `pilotfish edges`: one row per edge.
pub async fn edges(api: &Client, args: StatArgs) -> anyhow::Result<()> {
    let list = fetch(api, &args, StatsBy::Edge).await?;
    print(&list, args.output, || {
        let mut table =
            Table::new(&["SRC", "DST", "CLIENT_ID", "SERVER_ID", "SECURED", "RPS", "SUCCESS", "P99"]);
        for row in &list.items {
            let g = &row.golden;
            let id = |id: &Option<String>| id.clone().unwrap_or_else(|| "-".into());
            let secured = if row.secured == Some(true) { "yes" } else { "no" };
            table.row([
                row.src.clone().unwrap_or_default(),
                row.dst.clone().unwrap_or_default(),
                id(&row.src_identity),
                id(&row.dst_identity),
                secured.to_owned(),
                rps(g),
                success(g),
                ms(g.p99_ms),
            ]);
        }
        table
    })
}
