//! The rules `pilotfish init` installs, planned without touching the system: from an
//! [`Interception`] and what of ours a nat table already holds ([`Installed`]), the exact
//! `iptables-restore --noflush` input that leaves exactly one set of our rules, or none.
//!
//! # The rules (IPv4; IPv6 the same with `::1/128`)
//!
//! ```text
//! PREROUTING  -p tcp -j PILOTFISH_INBOUND          every TCP connection into the pod
//! PILOTFISH_INBOUND
//!   -p tcp -m multiport --dports ADMIN,STATUS,... -j RETURN      skipped inbound ports
//!   -p tcp -j PILOTFISH_REDIRECT_IN                 -> REDIRECT --to-ports INBOUND
//! OUTPUT      -p tcp -j PILOTFISH_OUTPUT           every TCP connection out of a process here
//! PILOTFISH_OUTPUT
//!   ! -d 127.0.0.1/32 -o lo -m owner --uid-owner UID -j PILOTFISH_INBOUND   (1)
//!   -o lo -m owner ! --uid-owner UID -j RETURN                             (2)
//!   -m owner --uid-owner UID -j RETURN                                     (3)
//!   -p tcp -m multiport --dports ... -j RETURN      skipped outbound ports
//!   -d CIDR -j RETURN                               skipped outbound CIDRs
//!   -p tcp -j PILOTFISH_REDIRECT_OUT                -> REDIRECT --to-ports OUTBOUND
//! ```
//!
//! Loopback follows Istio's `istio-iptables`. Linkerd's proxy-init returns everything on `lo`,
//! which suits a proxy that dials other proxies' inbound port itself; ours dial the endpoint's
//! own address (the app's port) and rely on the callee's rules, which (1) gives a pod calling
//! itself:
//! (1) the sidecar dialling its own pod's IP — the app called a service and the balancer picked
//!     this very pod — goes through the inbound listener, as a call from another pod would:
//!     mTLS is terminated and policy applies, instead of a ClientHello reaching the app's port.
//!     127.0.0.1 is left out because that is how the inbound listener reaches the app.
//! (2) the app's own loopback traffic — to 127.0.0.1 or to its own pod IP, which the kernel
//!     also routes over `lo` — and traffic between the pod's containers go direct: they share
//!     the network namespace and trust each other already, and a detour through two listeners
//!     would only cost latency.
//! (3) the sidecar's other traffic (to other pods, to the control plane) is never redirected,
//!     or it would loop back into the sidecar itself.
//!
//! Only the first packet of a connection passes the nat table, so a connection the app made
//! over `lo` is never seen by PREROUTING: (2) is the whole story for it.
//!
//! # Idempotence
//!
//! One `iptables-restore --noflush` per family, which the kernel commits atomically: it declares
//! our chains (declaring an existing chain flushes it), deletes the jumps to them found in the
//! built-in chains (verbatim from `iptables-save`), and appends the planned ones. Running it
//! again, or with other options, leaves exactly one set and at no moment none; anything else in
//! the table is untouched. Chains of ours the plan no longer has (`PILOTFISH_*`) are deleted.
//!
//! # Where a CNI plugin would plug in
//!
//! Planning is apart from applying ([`super::apply`]): a CNI plugin, chained after the
//! cluster's network plugin, would build the same [`Interception`] from the pod's annotations
//! at ADD, read what is [`Installed`] and restore [`Interception::install`]'s text inside the
//! pod's namespace (`CNI_NETNS`) instead of this process's own, and [`remove`] at DEL. The pod
//! then needs no init container with NET_ADMIN; only the applying side changes.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::str::FromStr;

pub const INBOUND: &str = "PILOTFISH_INBOUND";
pub const REDIRECT_IN: &str = "PILOTFISH_REDIRECT_IN";
pub const OUTPUT: &str = "PILOTFISH_OUTPUT";
pub const REDIRECT_OUT: &str = "PILOTFISH_REDIRECT_OUT";
/// Every chain of ours starts with this; cleanup removes all of them, older versions' too.
const PREFIX: &str = "PILOTFISH_";
/// The chains of the plan, in the order they are declared.
const CHAINS: [&str; 4] = [INBOUND, REDIRECT_IN, OUTPUT, REDIRECT_OUT];
/// `-m multiport` takes at most 15 ports, a range counting as two.
const MULTIPORT_SLOTS: usize = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The address the inbound listener reaches the app on, left out of rule (1).
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A port (`8080`) or an inclusive range (`8000-8100`; `8000:8100` as iptables writes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    pub const fn port(port: u16) -> Self {
        PortRange { first: port, last: port }
    }

    fn slots(self) -> usize {
        if self.first == self.last {
            1
        } else {
            2
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{s:?} is not a port (1-65535) or a range like 8000-8100")),
            Ok(p) => Ok(p),
        };
        let range = match s.split_once(['-', ':']) {
            Some((first, last)) => PortRange { first: port(first)?, last: port(last)? },
            None => PortRange::port(port(s)?),
        };
        if range.first > range.last {
            return Err(format!("{s:?}: the range ends before it starts"));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// An address block (`10.0.0.0/8`, `fd00::/8`, or one address). Ten lines rather than a crate:
/// iptables itself checks the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    fn family(self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address block like 10.0.0.0/8 or fd00::/8");
        let (addr, len) = s.trim().split_once('/').map_or((s.trim(), None), |(a, l)| (a, Some(l)));
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(len) => len.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What to intercept: the sidecar's ports and user, and what goes direct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interception {
    /// The sidecar's UID: its own connections are never redirected.
    pub proxy_uid: u32,
    /// Where inbound connections are redirected (the sidecar's inbound listener).
    pub inbound_port: u16,
    /// Where the app's outbound connections are redirected (the outbound listener).
    pub outbound_port: u16,
    /// Inbound ports that reach the pod directly (the sidecar's admin and status ports among
    /// them).
    pub exclude_inbound_ports: Vec<PortRange>,
    /// Destination ports the app reaches directly.
    pub exclude_outbound_ports: Vec<PortRange>,
    /// Destinations the app reaches directly (each in its own family's table).
    pub exclude_outbound_cidrs: Vec<Cidr>,
}

impl Interception {
    /// The `iptables-restore --noflush` input that replaces `installed` with this plan.
    pub fn install(&self, family: Family, installed: &Installed) -> String {
        let stale: Vec<&str> =
            installed.chains.iter().map(String::as_str).filter(|c| !CHAINS.contains(c)).collect();
        let mut out = String::from("*nat\n");
        for chain in CHAINS.iter().chain(&stale) {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for jump in &installed.jumps {
            let _ = writeln!(out, "-D {jump}");
        }
        for rule in self.rules(family) {
            let _ = writeln!(out, "-A {rule}");
        }
        for chain in stale {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
        out
    }

    /// What a table holds once this plan is installed (what `--dry-run --cleanup` removes).
    pub fn installed(&self, family: Family) -> Installed {
        Installed {
            chains: CHAINS.map(str::to_owned).to_vec(),
            jumps: self.rules(family).into_iter().filter(|r| !r.starts_with(PREFIX)).collect(),
        }
    }

    /// The rules, each as `iptables-save` prints it without its `-A`.
    fn rules(&self, family: Family) -> Vec<String> {
        let uid = self.proxy_uid;
        let mut rules = vec![format!("PREROUTING -p tcp -j {INBOUND}"), format!("OUTPUT -p tcp -j {OUTPUT}")];
        for ports in multiport(&self.exclude_inbound_ports) {
            rules.push(format!("{INBOUND} -p tcp -m multiport --dports {ports} -j RETURN"));
        }
        rules.push(format!("{INBOUND} -p tcp -j {REDIRECT_IN}"));
        rules.push(format!("{REDIRECT_IN} -p tcp -j REDIRECT --to-ports {}", self.inbound_port));
        let lo = family.loopback();
        rules.push(format!("{OUTPUT} ! -d {lo} -o lo -m owner --uid-owner {uid} -j {INBOUND}"));
        rules.push(format!("{OUTPUT} -o lo -m owner ! --uid-owner {uid} -j RETURN"));
        rules.push(format!("{OUTPUT} -m owner --uid-owner {uid} -j RETURN"));
        for ports in multiport(&self.exclude_outbound_ports) {
            rules.push(format!("{OUTPUT} -p tcp -m multiport --dports {ports} -j RETURN"));
        }
        for cidr in self.exclude_outbound_cidrs.iter().filter(|c| c.family() == family) {
            rules.push(format!("{OUTPUT} -d {cidr} -j RETURN"));
        }
        rules.push(format!("{OUTPUT} -p tcp -j {REDIRECT_OUT}"));
        rules.push(format!("{REDIRECT_OUT} -p tcp -j REDIRECT --to-ports {}", self.outbound_port));
        rules
    }
}

/// The `--dports` lists for `ports`, each within multiport's limit; duplicates dropped.
fn multiport(ports: &[PortRange]) -> Vec<String> {
    let mut lists: Vec<(usize, String)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        if ports[..i].contains(port) {
            continue;
        }
        match lists.last_mut() {
            Some((slots, list)) if *slots + port.slots() <= MULTIPORT_SLOTS => {
                *slots += port.slots();
                let _ = write!(list, ",{port}");
            }
            _ => lists.push((port.slots(), port.to_string())),
        }
    }
    lists.into_iter().map(|(_, list)| list).collect()
}

/// What of ours a nat table holds: our chains, and the jumps to them from the built-in chains
/// (each as `iptables-save` prints it, without its `-A`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    chains: Vec<String>,
    jumps: Vec<String>,
}

impl Installed {
    /// Reads `iptables-save -t nat` output.
    pub fn parse(save: &str) -> Installed {
        let mut installed = Installed::default();
        for line in save.lines() {
            if let Some(chain) = line.strip_prefix(':').and_then(|l| l.split_whitespace().next()) {
                if chain.starts_with(PREFIX) {
                    installed.chains.push(chain.to_owned());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let from_ours = rule.starts_with(PREFIX);
                let to_ours = rule.split_whitespace().skip_while(|w| *w != "-j").nth(1);
                if !from_ours && to_ours.is_some_and(|target| target.starts_with(PREFIX)) {
                    installed.jumps.push(rule.to_owned());
                }
            }
        }
        installed
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }
}

/// The `iptables-restore --noflush` input that removes everything of ours; `None` when there is
/// nothing to remove.
pub fn remove(installed: &Installed) -> Option<String> {
    if installed.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    // Declaring a chain flushes it, so no rule of ours still jumps to one being deleted.
    for chain in &installed.chains {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for jump in &installed.jumps {
        let _ = writeln!(out, "-D {jump}");
    }
    for chain in &installed.chains {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}

#[cfg(test)]
mod tests;
