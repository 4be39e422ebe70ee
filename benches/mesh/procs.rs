//! The processes a scenario runs: spawned pinned to the system-under-test CPU, killed on drop,
//! their output kept in files for when one fails; free ports, readiness, the Debian packages
//! the harness needs, and the `/proc` counters it reads (CPU time, peak RSS).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The CPU the system under test (upstream and proxies) shares, as a sidecar shares its pod's.
pub const SUT_CPU: &str = "0";
/// The CPU the load generator (this process) runs on.
pub const LOAD_CPU: &str = "1";

/// A child process pinned to [`SUT_CPU`], killed when dropped.
pub struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    /// Runs `program args` under `taskset -c SUT_CPU`, stdout and stderr into `dir/name.log`.
    pub fn spawn(
        dir: &Path,
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let child = Command::new("taskset")
            .args(["-c", SUT_CPU])
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Proc { child, name: name.to_owned(), log })
    }

    /// The process id (taskset execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the end of the process's output if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.tail());
        }
        Ok(())
    }

    /// The last lines of the process's output, named.
    pub fn tail(&self) -> String {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        format!("--- {}:\n{}", self.name, lines[lines.len().saturating_sub(15)..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago, below the kernel's ephemeral range (32768+) so no
/// outgoing connection takes it before the process that was given it binds it.
pub fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until `addr` accepts connections, failing early if one of `procs` has exited.
pub fn wait_port(addr: SocketAddr, procs: &mut [Proc]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        procs.iter_mut().try_for_each(Proc::check_alive)?;
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Installs the Debian packages of the commands that are missing (`(command, package)` pairs),
/// as `benches/common.sh` does; refreshes the package lists once if the install fails.
pub fn need_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> =
        tools.iter().filter(|(cmd, _)| !tool(cmd).is_absolute()).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
    };
    if !install()?.success() {
        Command::new("apt-get").args(["update", "-qq"]).status()?;
        if !install()?.success() {
            bail!("apt-get could not install {}", missing.join(" "));
        }
    }
    Ok(())
}

/// Where `cmd` is installed: on `PATH` or in the sbin directories a user's `PATH` may lack
/// (Debian puts nginx and haproxy there); just `cmd` if nowhere.
pub fn tool(cmd: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(cmd))
        .find(|file| file.is_file())
        .unwrap_or_else(|| cmd.into())
}

/// Pins every thread of this process to [`LOAD_CPU`]; threads started later inherit it.
pub fn pin_self() -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-c", "-p", LOAD_CPU, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux) is needed to pin the load generator")?;
    if !status.success() {
        bail!("taskset could not pin the load generator to cpu {LOAD_CPU}");
    }
    Ok(())
}

/// CPU time (user + system, in clock ticks) of each of `pids`.
pub fn cpu_ticks(pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the parenthesised command name (which may hold spaces): utime is
            // field 14 of the line, stime 15, i.e. the 12th and 13th after the name.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            field(11) + field(12)
        })
        .collect()
}

/// Each process's CPU ticks from `before` to `after` (two [`cpu_ticks`] readings).
pub fn cpu_ticks_between(before: &[u64], after: &[u64]) -> Vec<u64> {
    before.iter().zip(after).map(|(b, a)| a.saturating_sub(*b)).collect()
}

/// Clock ticks per second (`getconf CLK_TCK`; Linux's USER_HZ is 100 everywhere).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resets the peak resident set size (`VmHWM`) of `pids`, so the next reading is this
/// scenario's peak (`clear_refs` value 5, Linux 4.0+).
pub fn reset_peak_rss(pids: &[u32]) {
    for pid in pids {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

/// The peak resident set size (`VmHWM`, KiB) of each of `pids` (0 if unreadable).
pub fn peak_rss_kib(pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or_default();
            line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
        })
        .collect()
}
