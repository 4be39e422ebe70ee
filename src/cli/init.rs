//! `pilotfish init`: traffic interception in a pod's network namespace (the `pilotfish-init`
//! init container). Inbound TCP goes to the sidecar's inbound listener, the app's outbound TCP
//! to its outbound listener, through nat chains of our own (`PILOTFISH_*`), for IPv4 and IPv6.
//!
//! # Layout
//! - [`plan`]: the rules, as pure text — what is redirected, what goes direct, and why.
//! - [`apply`]: reads and changes the current namespace's tables with the iptables tools.

mod apply;
mod plan;

use plan::{Cidr, Family, Installed, Interception, PortRange};

/// Redirects the pod's TCP through the sidecar: run once in the pod's network namespace, as
/// root with NET_ADMIN and NET_RAW, before the app starts. Running it again replaces the rules
/// with exactly one set; `--cleanup` removes them. The sidecar's UID, its admin and status
/// ports, loopback traffic between the pod's containers, and the ports and CIDRs given here are
/// not redirected.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sidecar's UID: its own connections go direct (else they would loop into it).
    #[arg(long, value_name = "UID", default_value_t = 2102)]
    proxy_uid: u32,
    /// The sidecar's inbound listener port: where connections into the pod are redirected.
    #[arg(long, value_name = "PORT", default_value_t = 15006)]
    inbound_port: u16,
    /// The sidecar's outbound listener port: where the app's connections are redirected.
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    outbound_port: u16,
    /// The sidecar's admin port, never redirected inbound.
    #[arg(long, value_name = "PORT", default_value_t = 15000)]
    admin_port: u16,
    /// The sidecar's status port (the kubelet's probes), never redirected inbound.
    #[arg(long, value_name = "PORT", default_value_t = 15021)]
    status_port: u16,
    /// Inbound ports (or ranges, 8000-8100) that reach the app directly, comma-separated.
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    exclude_inbound_ports: Vec<PortRange>,
    /// Destination ports (or ranges) the app reaches directly, comma-separated.
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    exclude_outbound_ports: Vec<PortRange>,
    /// Destination address blocks (10.0.0.0/8, fd00::/8) the app reaches directly,
    /// comma-separated.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<Cidr>,
    /// Which iptables tools to use: the image's default, or the legacy or nf_tables backend.
    #[arg(long, value_name = "MODE", value_enum, default_value_t)]
    iptables_mode: apply::Backend,
    /// Print the rules (iptables-restore input, per family) instead of applying them; needs no
    /// root and no network namespace.
    #[arg(long)]
    dry_run: bool,
    /// Remove every rule and chain of ours instead (with --dry-run: print what would be removed
    /// after an install with these options).
    #[arg(long)]
    cleanup: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        proxy_uid,
        inbound_port,
        outbound_port,
        admin_port,
        status_port,
        exclude_inbound_ports: listed,
        exclude_outbound_ports,
        exclude_outbound_cidrs,
        iptables_mode,
        dry_run,
        cleanup,
    } = args;
    let mut exclude_inbound_ports = vec![PortRange::port(admin_port), PortRange::port(status_port)];
    exclude_inbound_ports.extend(listed);
    let plan = Interception {
        proxy_uid,
        inbound_port,
        outbound_port,
        exclude_inbound_ports,
        exclude_outbound_ports,
        exclude_outbound_cidrs,
    };
    for family in Family::ALL {
        if dry_run {
            let rules = if cleanup {
                plan::remove(&plan.installed(family)).unwrap_or_default()
            } else {
                plan.install(family, &Installed::default())
            };
            print!("# {family}: {} --noflush\n{rules}", iptables_mode.tool(family, "restore"));
        } else {
            change(&plan, iptables_mode, family, cleanup)?;
        }
    }
    Ok(())
}

/// Installs `plan` (or with `cleanup` removes ours) in one family's nat table; a missing IPv6
/// is a warning, a missing IPv4 an error.
fn change(plan: &Interception, mode: apply::Backend, family: Family, cleanup: bool) -> anyhow::Result<()> {
    let installed = match apply::read(mode, family)? {
        apply::Table::Present(installed) => installed,
        apply::Table::Unavailable(why) if family == Family::V6 => {
            tracing::warn!("IPv6 left alone: {why}");
            return Ok(());
        }
        apply::Table::Unavailable(why) => anyhow::bail!(
            "{why}: pilotfish init needs the iptables tools and NET_ADMIN in the pod's network namespace (run it as root)"
        ),
    };
    if !cleanup {
        apply::restore(mode, family, &plan.install(family, &installed))?;
        let (inbound, outbound, uid) = (plan.inbound_port, plan.outbound_port, plan.proxy_uid);
        tracing::info!(
            replaced = !installed.is_empty(),
            "{family}: TCP redirected (inbound to port {inbound}, outbound to port {outbound}, UID {uid} direct)"
        );
    } else if let Some(rules) = plan::remove(&installed) {
        apply::restore(mode, family, &rules)?;
        tracing::info!("{family}: removed pilotfish's rules");
    } else {
        tracing::info!("{family}: no pilotfish rules to remove");
    }
    Ok(())
}
