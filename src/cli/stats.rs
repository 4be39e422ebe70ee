//! `pilotfish stat`, `pilotfish edges` and `pilotfish routes`: the mesh's golden metrics from
//! `GET /v1/stats`, as Linkerd's viz prints them (per service: MESHED, SUCCESS, RPS,
//! P50/P95/P99, TCP_CONN, and the circuit breakers open toward it; per edge: SRC, DST,
//! CLIENT_ID, SERVER_ID, SECURED, RPS, SUCCESS, P99; per route into a service: ROUTE, SERVICE,
//! SUCCESS, RPS, P50/P95/P99), from the callers' side or (`--side server`) the destinations'.

use pilotfish_api::client::Client;
use pilotfish_api::wire::{Golden, StatsBy, StatsList, StatsQuery, StatsSide};

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
    /// Whose view: the callers' sidecars (`client`: every call once, as the caller got it) or
    /// the destinations' (`server`: every attempt that reached them, retries included).
    #[arg(long, value_enum, default_value = "client")]
    pub side: Side,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// What `routes` takes: `stat`'s arguments with the service required.
#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    /// The service the routes send traffic to (`name` or `name.namespace`).
    pub service: String,
    /// How far back to look: 5s to 1h.
    #[arg(short, long, default_value = "1m")]
    pub window: String,
    /// Whose view (the server side knows no routes: its requests are under `[default]`).
    #[arg(long, value_enum, default_value = "client")]
    pub side: Side,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `--side`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Side {
    Client,
    Server,
}

async fn fetch(api: &Client, args: &StatArgs, by: StatsBy) -> anyhow::Result<StatsList> {
    let side = match args.side {
        Side::Client => StatsSide::Client,
        Side::Server => StatsSide::Server,
    };
    let query = StatsQuery {
        window: Some(args.window.clone()),
        by: Some(by),
        service: args.service.clone(),
        side: Some(side),
    };
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
        let mut table = Table::new(&[
            "SERVICE",
            "MESHED",
            "SUCCESS",
            "RPS",
            "P50",
            "P95",
            "P99",
            "TCP_CONN",
            "BREAKERS_OPEN",
        ]);
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
                row.breakers_open.to_string(),
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
            let service =
                |s: &Option<String>| s.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
            table.row([
                service(&row.src),
                service(&row.dst),
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

/// `pilotfish routes`: one row per route into a service.
pub async fn routes(api: &Client, args: RoutesArgs) -> anyhow::Result<()> {
    let RoutesArgs { service, window, side, output } = args;
    let args = StatArgs { service: Some(service), window, side, output };
    let list = fetch(api, &args, StatsBy::Route).await?;
    print(&list, args.output, || {
        let mut table = Table::new(&["ROUTE", "SERVICE", "SUCCESS", "RPS", "P50", "P95", "P99"]);
        for row in &list.items {
            let g = &row.golden;
            // Requests no HTTPRoute sent (the service's default route).
            let route = row.route.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| "[default]".into());
            table.row([
                route,
                row.service.clone().unwrap_or_default(),
                success(g),
                rps(g),
                ms(g.p50_ms),
                ms(g.p95_ms),
                ms(g.p99_ms),
            ]);
        }
        table
    })
}
