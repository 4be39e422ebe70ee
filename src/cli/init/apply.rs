//! Applies planned rules to the network namespace this process runs in, through the iptables
//! tools: `iptables-save -t nat` tells what of ours is installed, one `iptables-restore
//! --noflush` commits the change atomically (and their `ip6tables` twins for IPv6).

use std::io::{self, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

use super::plan::{Family, Installed};

/// Which iptables the tools are: the image's `iptables` (whatever its alternatives point to),
/// or explicitly the legacy (x_tables) or nf_tables backend, for nodes whose kernel has only one
/// or whose other rules are written with one (Linkerd's proxy-init has the same switch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    #[default]
    Default,
    Legacy,
    Nft,
}

impl Backend {
    /// The tool's name, e.g. `ip6tables-legacy-restore` for (V6, Legacy, "restore").
    pub fn tool(self, family: Family, verb: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        match self {
            Backend::Default => format!("{base}-{verb}"),
            Backend::Legacy => format!("{base}-legacy-{verb}"),
            Backend::Nft => format!("{base}-nft-{verb}"),
        }
    }
}

/// A family's nat table, or why it cannot be used here.
pub enum Table {
    Present(Installed),
    Unavailable(String),
}

/// Reads what of ours the family's nat table holds.
pub fn read(backend: Backend, family: Family) -> anyhow::Result<Table> {
    // Without IPv6 in the kernel there is no table to read, and nothing to intercept.
    if family == Family::V6 && !Path::new("/proc/net/if_inet6").exists() {
        return Ok(Table::Unavailable("IPv6 is disabled in this kernel".into()));
    }
    let save = backend.tool(family, "save");
    let out = match Command::new(&save).args(["-t", "nat"]).stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Table::Unavailable(format!("{save} is not installed")))
        }
        Err(e) => return Err(e).with_context(|| format!("running {save}")),
    };
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Ok(Table::Unavailable(format!("{save} -t nat failed ({}): {}", out.status, said.trim())));
    }
    Ok(Table::Present(Installed::parse(&String::from_utf8_lossy(&out.stdout))))
}

/// Commits `rules` (`iptables-restore` input) in one transaction, leaving every other rule be.
pub fn restore(backend: Backend, family: Family, rules: &str) -> anyhow::Result<()> {
    let restore = backend.tool(family, "restore");
    // --wait: the legacy backend's lock may be held by another writer for a moment.
    let mut child = Command::new(&restore)
        .args(["--noflush", "--wait=10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {restore}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(rules.as_bytes()).with_context(|| format!("writing to {restore}"))?;
    drop(stdin);
    let out = child.wait_with_output().with_context(|| format!("running {restore}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{restore} refused the rules ({}): {}\nthe rules were:\n{rules}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_names_its_own_tools() {
        assert_eq!(Backend::Default.tool(Family::V4, "save"), "iptables-save");
        assert_eq!(Backend::Default.tool(Family::V6, "restore"), "ip6tables-restore");
        assert_eq!(Backend::Legacy.tool(Family::V6, "restore"), "ip6tables-legacy-restore");
        assert_eq!(Backend::Nft.tool(Family::V4, "save"), "iptables-nft-save");
    }
}
