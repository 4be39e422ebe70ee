//! The command line: `cargo bench --bench mesh -- [--quick] [--json PATH] [--svg PATH]
//! [--scenario NAME]... [--rate R] [--seconds S] [--list]`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The hidden mode in which this binary is the TCP sink of the bulk scenarios.
pub const TCP_SINK: &str = "--tcp-sink";

pub const USAGE: &str = "\
usage: cargo bench --bench mesh -- [OPTIONS]

  --quick           ~1 s per scenario, a reduced set (the test command's smoke run)
  --scenario NAME   run NAME instead of the standard set; repeatable. NAME is a scenario name,
                    a part of one, a pattern with * (http1-*-pair-mtls-*), `standard`, `all` or `none`
  --list            list the scenarios NAME can pick, then exit
  --json PATH       write the results as a JSON list
  --svg PATH        write a chart of the latency percentiles
  --scale           also measure one idle sidecar with 10, 1,000 and 10,000 services: start
                    to ready, RSS, KiB per service (--scenario none: only that)
  --rate R          the open loop's rate in req/s (default: half the lowest HAProxy HTTP/1.1
                    closed-loop rate of this run)
  --seconds S       the measured window of each scenario (default 5; --quick 0.7)

PILOTFISH_BIN=PATH measures that binary (default: the one cargo built for this bench).";

#[derive(Debug, Default)]
pub struct Options {
    pub quick: bool,
    pub scale: bool,
    pub list: bool,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub scenarios: Vec<String>,
    pub rate: Option<f64>,
    pub seconds: Option<f64>,
    /// `Some(addr)`: run as the TCP sink on `addr`.
    pub tcp_sink: Option<String>,
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
                "--rate" => o.rate = Some(value()?.parse().context("--rate takes req/s")?),
                "--seconds" => o.seconds = Some(value()?.parse().context("--seconds takes a number")?),
                TCP_SINK => o.tcp_sink = Some(value()?),
                "-h" | "--help" => bail!("{USAGE}"),
                _ => bail!("unknown argument {arg}\n\n{USAGE}"),
            }
        }
        Ok(o)
    }
}
