//! The proxies between the load generator and the upstream, one scenario's worth, started fresh
//! for each scenario (so CPU and peak memory are that scenario's alone) and stopped after it.
//! Every proxy runs one thread (one process) pinned with the upstream.

mod haproxy;
mod nginx;
mod pilotfish;

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;

use crate::pki::Pki;
use crate::procs::{free_port, wait_port, Proc};
use crate::scenario::{Protocol, Proxy, Scenario, Topology};
use crate::upstream::{loopback, Upstream};

/// What a scenario's proxies need to know.
pub struct Setup<'a> {
    pub dir: &'a Path,
    pub upstream: &'a Upstream,
    pub pki: &'a Pki,
    pub pilotfish: &'a Path,
}

/// A scenario's running proxies and where the load generator sends its traffic.
pub struct Running {
    pub entry: SocketAddr,
    /// The caller's side first; empty for `direct`.
    pub procs: Vec<Proc>,
}

impl Running {
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }
}

/// Where one scenario's traffic goes: into `entry`, through the pair's `hop` if any, to
/// `target` in the upstream.
pub struct Route {
    pub protocol: Protocol,
    pub entry: SocketAddr,
    pub hop: Option<Hop>,
    pub target: SocketAddr,
}

/// The hop a pair's second proxy listens on and the first one dials.
pub struct Hop {
    pub listen: SocketAddr,
    /// mTLS on this hop.
    pub tls: bool,
}

/// Starts `scenario`'s proxies and waits until each one listens.
pub fn start(setup: &Setup, scenario: &Scenario) -> Result<Running> {
    let target = match scenario.protocol {
        Protocol::Http1 => setup.upstream.http1,
        Protocol::Http2 => setup.upstream.http2,
        Protocol::Grpc => setup.upstream.grpc,
        Protocol::Tcp => setup.upstream.tcp,
    };
    if scenario.topology == Topology::Direct {
        return Ok(Running { entry: target, procs: Vec::new() });
    }
    let entry = loopback(free_port());
    let hop = (scenario.topology == Topology::Pair)
        .then(|| Hop { listen: loopback(free_port()), tls: scenario.tls });
    let listens: Vec<SocketAddr> = std::iter::once(entry).chain(hop.as_ref().map(|h| h.listen)).collect();
    let route = Route { protocol: scenario.protocol, entry, hop, target };
    let mut procs = match scenario.proxy {
        Proxy::Pilotfish => pilotfish::start(setup, &route)?,
        Proxy::Haproxy => haproxy::start(setup, &route)?,
        // nginx proxies HTTP in HTTP/1.1 only: its HTTP/2 scenarios take h2c from the load
        // generator and call the upstream's HTTP/1.1 port. gRPC it proxies in HTTP/2.
        Proxy::Nginx if scenario.protocol == Protocol::Http2 => {
            nginx::start(setup, &Route { target: setup.upstream.http1, ..route })?
        }
        Proxy::Nginx => nginx::start(setup, &route)?,
        Proxy::Direct => unreachable!("direct has no proxy"),
    };
    for addr in listens {
        wait_port(addr, &mut procs)?;
    }
    Ok(Running { entry, procs })
}
