//! Applies planned rules to the network namespace this process runs in, through the iptables
//! tools: `iptables-save -t nat` tells what of ours is installed, one `iptables-restore
//! --noflush` commits the change atomically (and their `ip6tables` twins for IPv6).

use std::io::{self, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

use super::plan::{Family, Installed};

/// A family's nat table, or why it cannot be used here.
pub enum Table {
    Present(Installed),
    Unavailable(String),
}

/// Reads what of ours the family's nat table holds.
pub fn read(family: Family) -> anyhow::Result<Table> {
    // Without IPv6 in the kernel there is no table to read, and nothing to intercept.
    if family == Family::V6 && !Path::new("/proc/net/if_inet6").exists() {
        return Ok(Table::Unavailable("IPv6 is disabled in this kernel".into()));
    }
    let save = format!("{}-save", family.tool());
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
pub fn restore(family: Family, rules: &str) -> anyhow::Result<()> {
    let restore = format!("{}-restore", family.tool());
    // --wait: the legacy backend's lock may be held by another writer for a moment.
    let mut child = Command::new(&restore)
        .args(["--noflush", "--wait=10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {restore}"))?;
    child.stdin.take().expect("piped").write_all(rules.as_bytes()).with_context(|| format!("writing to {restore}"))?;
    let out = child.wait_with_output().with_context(|| format!("running {restore}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{restore} refused the rules ({}): {}\nthe rules were:\n{rules}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
