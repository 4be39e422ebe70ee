//! What one measurement is (a proxy, a topology, TLS or not, a protocol, a load) and the sets
//! of them: the standard set, the quick set the test command runs, and everything else that
//! `--scenario` can pick.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proxy {
    Direct,
    Pilotfish,
    Haproxy,
    Nginx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// The load generator talks to the upstream itself: the floor.
    Direct,
    /// One proxy between the load generator and the upstream (the caller's sidecar).
    Single,
    /// Two: the caller's and the callee's, as between two meshed services.
    Pair,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 keep-alive, a 1 KiB body.
    Http1,
    /// HTTP/2 prior knowledge, many streams on few connections.
    Http2,
    /// Unary gRPC calls (a 1 KiB reply) multiplexed as HTTP/2 is.
    Grpc,
    /// Opaque bytes one way, as fast as they go.
    Tcp,
}

/// Closed loop (as fast as the answers come back) or an open loop at a fixed rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Closed,
    /// This percentage of the protocol's base rate: HAProxy's slowest closed loop of the run
    /// (see [`crate::run`]), or `--base-rate`.
    Fixed(u8),
}

impl Load {
    pub fn is_fixed(self) -> bool {
        matches!(self, Load::Fixed(_))
    }
}

/// The open loops' rates, in percent of the base rate.
const RATES: [u8; 3] = [20, 50, 80];
/// The open loop of the standard set.
const STANDARD_RATE: u8 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub proxy: Proxy,
    pub topology: Topology,
    /// mTLS between the two proxies of a pair.
    pub tls: bool,
    pub protocol: Protocol,
    pub load: Load,
}

impl fmt::Display for Scenario {
    /// `PROTOCOL-PROXY[-TOPOLOGY][-mtls]-closed|rateP`, e.g. `http1-pilotfish-pair-mtls-rate50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match self.protocol {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        };
        let proxy = match self.proxy {
            Proxy::Direct => "direct",
            Proxy::Pilotfish => "pilotfish",
            Proxy::Haproxy => "haproxy",
            Proxy::Nginx => "nginx",
        };
        write!(f, "{protocol}-{proxy}")?;
        match self.topology {
            Topology::Direct => {}
            Topology::Single => write!(f, "-single")?,
            Topology::Pair => write!(f, "-pair")?,
        }
        if self.tls {
            write!(f, "-mtls")?;
        }
        match (self.protocol, self.load) {
            (Protocol::Tcp, _) => Ok(()),
            (_, Load::Closed) => write!(f, "-closed"),
            (_, Load::Fixed(percent)) => write!(f, "-rate{percent}"),
        }
    }
}

/// Every proxy's topologies: direct alone; single and pair for each proxy, and the mTLS pair.
fn topologies(proxies: &[Proxy]) -> Vec<(Proxy, Topology, bool)> {
    let mut out = vec![(Proxy::Direct, Topology::Direct, false)];
    for &p in proxies {
        out.extend([(p, Topology::Single, false), (p, Topology::Pair, false), (p, Topology::Pair, true)]);
    }
    out
}

fn with(
    protocol: Protocol,
    load: Load,
    list: Vec<(Proxy, Topology, bool)>,
) -> impl Iterator<Item = Scenario> {
    list.into_iter().map(move |(proxy, topology, tls)| Scenario { proxy, topology, tls, protocol, load })
}

/// Every scenario the harness knows, closed loops first (the fixed rates derive from them).
/// nginx has no TCP scenarios: Debian's nginx-light has no `stream` module.
pub fn all() -> Vec<Scenario> {
    let everyone = [Proxy::Pilotfish, Proxy::Haproxy, Proxy::Nginx];
    let tcp = [Proxy::Pilotfish, Proxy::Haproxy];
    let requests = [Protocol::Http1, Protocol::Http2, Protocol::Grpc];
    let mut out: Vec<Scenario> =
        requests.iter().flat_map(|&p| with(p, Load::Closed, topologies(&everyone))).collect();
    out.extend(with(Protocol::Tcp, Load::Closed, topologies(&tcp)));
    for rate in RATES {
        out.extend(requests.iter().flat_map(|&p| with(p, Load::Fixed(rate), topologies(&everyone))));
    }
    out.sort_by_key(|s| s.load.is_fixed());
    out
}

/// The standard set (under 5 minutes): HTTP/1.1 closed loop and at half HAProxy's rate, HTTP/2
/// closed loop and TCP, for direct and Pilotfish's and HAProxy's single, pair and mTLS pair.
pub fn standard() -> Vec<Scenario> {
    all()
        .into_iter()
        .filter(|s| s.proxy != Proxy::Nginx)
        .filter(|s| match s.load {
            Load::Closed => s.protocol != Protocol::Grpc,
            Load::Fixed(rate) => s.protocol == Protocol::Http1 && rate == STANDARD_RATE,
        })
        .collect()
}

/// `--quick` (the test command's smoke run): each proxy, topology, protocol and kind of load at
/// least once (one open-loop rate: the others differ only in their number), the rest left out.
pub fn quick() -> Vec<Scenario> {
    let names = [
        "http1-direct-closed",
        "http1-pilotfish-single-closed",
        "http1-pilotfish-pair-mtls-closed",
        "http1-haproxy-pair-mtls-closed",
        "http1-nginx-pair-mtls-closed",
        "http2-direct-closed",
        "http2-pilotfish-pair-mtls-closed",
        "http2-haproxy-single-closed",
        "http2-nginx-single-closed",
        "grpc-direct-closed",
        "grpc-pilotfish-pair-mtls-closed",
        "grpc-nginx-single-closed",
        "tcp-direct",
        "tcp-pilotfish-pair-mtls",
        "tcp-haproxy-pair",
        "http1-direct-rate50",
        "http1-pilotfish-pair-rate50",
    ];
    all().into_iter().filter(|s| names.contains(&s.to_string().as_str())).collect()
}

/// The scenarios `--scenario` patterns pick: `standard`, `all`, `none`, or a scenario name where `*`
/// matches any run of characters (`http1-nginx-*`, `*-pair-mtls-*`); a pattern without `*`
/// matches names that contain it.
pub fn select(patterns: &[String]) -> Vec<Scenario> {
    let mut picked: Vec<Scenario> = Vec::new();
    for pattern in patterns {
        let set = match pattern.as_str() {
            "standard" => standard(),
            "all" => all(),
            "none" => Vec::new(),
            _ => all().into_iter().filter(|s| matches(pattern, &s.to_string())).collect(),
        };
        picked.extend(set.into_iter().filter(|s| !picked.contains(s)).collect::<Vec<_>>());
    }
    picked.sort_by_key(|s| s.load.is_fixed());
    picked
}

fn matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}
