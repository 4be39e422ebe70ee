//! The command line: `cargo bench --bench mesh -- [--quick] [--json PATH] [--svg PATH]
//! [--scenario NAME]... [--runs N] [--base-rate R] [--seconds S] [--scale] [--list]`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The hidden mode in which this binary is the TCP sink of the bulk scenarios.
pub const TCP_SINK: &str = "--tcp-sink";
/// The hidden mode in which this binary is the gRPC server of the gRPC scenarios.
pub const GRPC_SERVER: &str = "--grpc-server";

pub const USAGE: &str = "\
usage: cargo bench --bench mesh -- [OPTIONS]

  --quick           ~1 s per scenario, a reduced set (the test command's smoke run)
  --scenario NAME   run NAME instead of the standard set; repeatable. NAME is a scenario name,
                    a part of one, a pattern with * (http1-*-pair-mtls-*), `standard`, `all` or `none`.
                    Names: PROTOCOL-PROXY[-single|-pair][-mtls]-closed|-rateP, PROTOCOL one of
                    http1 http2 grpc tcp (tcp has no load suffix), P one of 20 50 80 (percent)
  --list            list the scenarios NAME can pick, then exit
  --json PATH       write the results as a JSON list
  --svg PATH        write a chart of the latency percentiles
  --scale           also measure one idle sidecar with 10, 1,000 and 10,000 services: start
                    to ready, RSS, KiB per service (--scenario none: only that)
  --runs N          measure each scenario N times, round the whole set, and report the medians
                    (default 3; --quick 1)
  --base-rate R     the open loops' 100% in req/s (default: per protocol, the lowest HAProxy
                    closed-loop rate of this run's first round)
  --seconds S       the measured window of each run (default 3, after 0.5 s of warm-up;
                    --quick 0.7)

PILOTFISH_BIN=PATH measures that binary (default: the one cargo built for this bench).";

#[derive(Debug, Default)]
pub struct Options {
    pub quick: bool,
    pub scale: bool,
    pub list: bool,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub scenarios: Vec<String>,
    pub runs: Option<usize>,
    pub base_rate: Option<f64>,
    pub seconds: Option<f64>,
    /// `Some(addr)`: run as the TCP sink on `addr`.
    pub tcp_sink: Option<String>,
    /// `Some(addr)`: run as the gRPC server on `addr`.
    pub grpc_server: Option<String>,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options> {
        let mut o = Options::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value\n\n{USAGE}"));
            match arg.as_str() {
                // cargo bench passes --bench to every bench binary.
                "--bench" => {}
                "--quick" => o.quick = true,
                "--scale" => o.scale = true,
                "--list" => o.list = true,
                "--json" => o.json = Some(value()?.into()),
                "--svg" => o.svg = Some(value()?.into()),
                "--scenario" => o.scenarios.push(value()?),
                "--runs" => o.runs = Some(value()?.parse().context("--runs takes a count")?),
                "--base-rate" => o.base_rate = Some(value()?.parse().context("--base-rate takes req/s")?),
                "--seconds" => o.seconds = Some(value()?.parse().context("--seconds takes a number")?),
                TCP_SINK => o.tcp_sink = Some(value()?),
                GRPC_SERVER => o.grpc_server = Some(value()?),
                "-h" | "--help" => bail!("{USAGE}"),
                _ => bail!("unknown argument {arg}\n\n{USAGE}"),
            }
        }
        Ok(o)
    }
}
