//! The side-by-side mesh benchmark: the same nginx upstream and the same load, directly (the
//! floor) and through Pilotfish, HAProxy and nginx as one proxy and as a pair (plaintext and
//! mTLS), over HTTP/1.1, HTTP/2 and opaque TCP, in one run. The upstream and the proxies share
//! CPU 0 (as a sidecar shares its pod's CPU); the load generator has CPU 1.
//!
//!   cargo bench --bench mesh -- [--quick] [--json PATH] [--svg PATH] [--scenario NAME]
//!
//! # Layout
//! - `options`: the command line.
//! - `scenario`: what one measurement is; the standard, quick and full sets.
//! - `run`: the run: tools, certificates, upstream, each scenario's proxies and load, the rate.
//! - `procs`: pinned child processes, ports, `/proc` counters.
//! - `pki`: the mesh CA and leaves (openssl).
//! - `upstream`: nginx with a 1 KiB body and the TCP sink.
//! - `proxies`: Pilotfish, HAProxy and nginx configurations for each topology.
//! - `load`: the HTTP load generator (closed and open loop, HDR histograms).
//! - `bulk`: the opaque TCP load.
//! - `scale`: one idle sidecar's start-to-ready time and memory with many services.
//! - `report`, `chart`: the table, the JSON and the SVG.

mod bulk;
mod chart;
mod load;
mod options;
mod pki;
mod procs;
mod proxies;
mod report;
mod run;
mod scale;
mod scenario;
mod upstream;

use std::process::ExitCode;

fn main() -> ExitCode {
    let result = options::Options::parse(std::env::args().skip(1)).and_then(run::main);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mesh bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
