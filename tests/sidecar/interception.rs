//! `pilotfish init` for real: two "pods", each a network namespace with an app, a sidecar run
//! as UID 2102 (as injected pods run it) and the rules of the real `pilotfish init`, joined by
//! a veth pair. A's app calls B's pod address unchanged; both sidecars stand in between, with
//! mesh mTLS, and the skipped ports and CIDRs go direct. Needs root (the test command runs as
//! root).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::mtls::{Pki, TRUST_DOMAIN};
use crate::support::*;

const PROXY_UID: u32 = 2102;
/// The apps' user: anyone but the sidecar's.
const APP_UID: &str = "1000";
const A_IP: &str = "10.99.0.1";
const B_IP: &str = "10.99.0.2";
/// The address A's app calls service `a` (its own) by, as a ClusterIP.
const A_SERVICE_IP: &str = "10.99.0.10";
/// B's second address, which A's rules skip (`--exclude-outbound-cidrs`).
const B_SKIPPED_IP: &str = "10.99.0.3";
/// The app port the mesh carries, and one both pods skip.
const APP_PORT: u16 = 8080;
const SKIPPED_PORT: u16 = 9090;

/// A network namespace, deleted on drop (even when the test fails). Named by the process and
/// a counter, so tests running in parallel cannot clash.
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        // The guard first: a failure below still deletes the namespace.
        let ns = Netns(format!("pf-init-{}-{n}-{role}", std::process::id()));
        run(&["ip", "netns", "add", &ns.0]);
        run(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Two pods joined by a veth pair, each end created inside its namespace (the host never sees
/// an interface whose name could clash).
fn pods() -> (Netns, Netns) {
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    run(&["ip", "-n", &a.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.0]);
    for (ns, ips) in [(&a, &[A_IP][..]), (&b, &[B_IP, B_SKIPPED_IP][..])] {
        for ip in ips {
            run(&["ip", "-n", &ns.0, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        }
        run(&["ip", "-n", &ns.0, "link", "set", "eth0", "up"]);
    }
    (a, b)
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `args` run in the namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// The flags an injected pod's `pilotfish-init` gets, with this test's skipped port and CIDR.
const POD_FLAGS: &[&str] = &[
    "--proxy-uid",
    "2102",
    "--inbound-port",
    "15006",
    "--outbound-port",
    "15001",
    "--exclude-inbound-ports",
    "15000,15021",
    "--exclude-inbound-ports",
    "9090",
    "--exclude-outbound-ports",
    "9090",
    "--exclude-outbound-cidrs",
    B_SKIPPED_IP,
];

/// The real `pilotfish init` in `ns`, with `flags` and then `extra`.
fn init(ns: &Netns, flags: &[&str], extra: &[&str]) {
    let mut args = vec![BIN, "init"];
    args.extend_from_slice(flags);
    args.extend_from_slice(extra);
    in_ns(&ns.0, &args);
}

/// Our rules in a nat table (the `-A` lines naming a chain of ours).
fn ours(table: &str) -> usize {
    table.lines().filter(|l| l.starts_with("-A ") && l.contains("PILOTFISH_")).count()
}

/// The nat table as `iptables-save` (or `ip6tables-save`) shows it, without its comments and
/// counters (which change with traffic).
fn nat_table(ns: &str, save: &str) -> String {
    let saved = in_ns(ns, &[save, "-t", "nat"]);
    saved
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pod's app, as an unprivileged user, listening on the app port and the skipped one.
fn app(ns: &str, name: &str) -> Killed {
    let (app, skipped) = (APP_PORT.to_string(), SKIPPED_PORT.to_string());
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "setpriv", &format!("--reuid={APP_UID}"), &format!("--regid={APP_UID}")])
        .arg("--clear-groups")
        .arg(python())
        .args([script("pod_app.py").to_str().unwrap(), name, &app, &skipped])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "{name}'s app did not start");
    Killed(child)
}

/// The pod's sidecar with identity `sa/<name>`, as UID 2102; `services`: the `Service`
/// documents it knows.
fn sidecar(ns: &str, name: &str, pki: &Pki, certs: &Path, services: &str) -> Sidecar {
    let config = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: {name}}}\nspec:\n  admin: 127.0.0.1:15000\n  outbound: {{listen: 127.0.0.1:15001}}\n  inbound: {{listen: 0.0.0.0:15006, app: 127.0.0.1:{APP_PORT}, mtls: {{mode: strict}}}}\n{services}"
    );
    // The test CA's files are root's alone; the sidecar's user gets copies it can read.
    let mut args = pki.args(&pki.fresh(name));
    for path in args.iter_mut().filter(|a| !a.starts_with("--")) {
        let copy =
            certs.join(format!("{name}-{}", Path::new(path.as_str()).file_name().unwrap().to_str().unwrap()));
        std::fs::copy(&*path, &copy).unwrap();
        *path = copy.display().to_string();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Sidecar::start_in_as(&config, &args, ns, PROXY_UID)
}

/// `GET url` by the app's user in pod `ns`.
fn app_get(ns: &str, url: &str) -> Reply {
    let user = ["setpriv", "--reuid", APP_UID, "--regid", APP_UID, "--clear-groups"];
    let out = in_ns(ns, &[&user[..], &["curl", "-s", "-S", "-i", "--max-time", "10", url]].concat());
    parse_reply(out.as_bytes())
}

/// The sidecar's metrics in pod `ns`, fetched over loopback there.
async fn metrics(ns: &str) -> Vec<Sample> {
    parse_metrics(
        in_ns(ns, &["curl", "-s", "-S", "--max-time", "10", "http://127.0.0.1:15000/metrics"]).as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_talk_through_both_sidecars_over_mtls_and_skipped_traffic_goes_direct() {
    let (pod_a, pod_b) = pods();
    let (a, b) = (pod_a.0.as_str(), pod_b.0.as_str());
    let pki = Pki::new("mesh");
    let certs = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // As in a pod: the init container first, then the sidecar, then the app.
    init(&pod_a, POD_FLAGS, &[]);
    init(&pod_b, POD_FLAGS, &[]);
    // A knows B's pod address as the endpoint of service `b` (headless, as Kubernetes would
    // say), and which identity B must prove; and its own service `a`, behind a virtual IP.
    let services = [("b", B_IP, B_IP), ("a", A_SERVICE_IP, A_IP)].map(|(name, address, pod)| {
        format!(
            "---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: {APP_PORT}, protocol: http}}]\n  addresses: [{address}]\n  endpoints: [{{address: '{pod}:{APP_PORT}', identity: '{TRUST_DOMAIN}/{name}'}}]\n"
        )
    });
    let _a_sidecar = sidecar(a, "a", &pki, certs.path(), &services.concat());
    let _b_sidecar = sidecar(b, "b", &pki, certs.path(), "");
    let _a_app = app(a, "a");
    let _b_app = app(b, "b");

    // A's app dials B's pod address unchanged...
    let r = app_get(a, &format!("http://{B_IP}:{APP_PORT}/hello"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = r.json();
    // ...and B's app is called by B's sidecar over loopback, with what only sidecars add: A's
    // address as the forwarded peer, and a request id.
    assert_eq!((seen["app"].as_str(), seen["peer"].as_str()), (Some("b"), Some("127.0.0.1")));
    assert_eq!(seen["headers"]["x-forwarded-for"], A_IP);
    assert!(seen["headers"]["x-request-id"].is_string(), "{seen}");
    // Both sidecars counted the call, and it crossed between them as mesh mTLS (B's inbound is
    // strict: it refuses plaintext).
    let (at_a, at_b) = (metrics(a).await, metrics(b).await);
    let requests = "pilotfish_requests_total";
    let outbound_to_b = [("direction", "outbound"), ("service", "b.default"), ("code", "200")];
    assert_eq!(sample(&at_a, requests, &outbound_to_b), 1.0);
    assert_eq!(sample(&at_b, requests, &[("direction", "inbound"), ("code", "200")]), 1.0);
    let mesh = "pilotfish_mesh_connections_opened_total";
    assert_eq!(sample(&at_a, mesh, &[("direction", "outbound")]), 1.0);
    assert_eq!(sample(&at_b, mesh, &[("direction", "inbound")]), 1.0);
    // A's sidecar dialled B itself, not back into its own listeners: nothing else reached them.
    assert_eq!(sample(&at_a, requests, &[]), 1.0, "A's sidecar saw its own connection again");
    assert_eq!(sample(&at_a, "pilotfish_tcp_bytes_total", &[]), 0.0);
    assert_eq!(sample(&at_a, mesh, &[("direction", "inbound")]), 0.0);

    // A skipped port goes direct on both sides: B's app sees A itself, and neither sidecar.
    let r = app_get(a, &format!("http://{B_IP}:{SKIPPED_PORT}/"));
    assert_eq!(r.status, 200);
    let seen = r.json();
    assert_eq!((seen["port"].as_u64(), seen["peer"].as_str()), (Some(SKIPPED_PORT.into()), Some(A_IP)));
    assert!(seen["headers"].get("x-forwarded-for").is_none(), "{seen}");

    // Loopback inside a pod: the app calling its own pod IP goes direct...
    let seen = app_get(a, &format!("http://{A_IP}:{APP_PORT}/self")).json();
    assert_eq!((seen["app"].as_str(), seen["peer"].as_str()), (Some("a"), Some(A_IP)));
    // ...while its call to a service whose endpoint is its own pod goes out through its sidecar
    // and back in through the same sidecar's inbound listener, over mTLS, as another pod's would.
    let seen = app_get(a, &format!("http://{A_SERVICE_IP}:{APP_PORT}/self")).json();
    assert_eq!((seen["app"].as_str(), seen["peer"].as_str()), (Some("a"), Some("127.0.0.1")));
    assert_eq!(seen["headers"]["x-forwarded-for"], A_IP);
    let at_a = metrics(a).await;
    assert_eq!(sample(&at_a, requests, &[("direction", "outbound"), ("service", "a.default")]), 1.0);
    assert_eq!(sample(&at_a, mesh, &[("direction", "inbound")]), 1.0);

    // A skipped CIDR leaves A's sidecar out: the plaintext reaches B's sidecar, which intercepts
    // it (the port is not skipped there) and refuses it, as a strict port does.
    let r = app_get(a, &format!("http://{B_SKIPPED_IP}:{APP_PORT}/"));
    assert_eq!((r.status, r.header("pilotfish-error")), (403, Some("forbidden")));
    let refused = "pilotfish_inbound_tls_refused_total";
    assert_eq!(sample(&metrics(b).await, refused, &[("reason", "plaintext")]), 1.0);
    // Everything A's sidecar counts stayed as it was.
    let counted = |m: &[Sample]| {
        ["pilotfish_requests_total", "pilotfish_tcp_bytes_total", mesh, refused]
            .map(|name| sample(m, name, &[]))
    };
    assert_eq!(counted(&metrics(a).await), counted(&at_a), "A's sidecar saw the call to a skipped CIDR");

    // Running init again leaves exactly one set of rules, in both families, and it still works.
    let (v4, v6) = (nat_table(a, "iptables-save"), nat_table(a, "ip6tables-save"));
    // Two jumps, then 3 + 7 rules in our chains; IPv6 has no rule for the (IPv4) CIDR.
    assert_eq!((ours(&v4), ours(&v6)), (12, 11), "{v4}\n{v6}");
    assert!(
        v6.contains("-A PILOTFISH_OUTPUT ! -d ::1/128 -o lo -m owner --uid-owner 2102 -j PILOTFISH_INBOUND")
    );
    init(&pod_a, POD_FLAGS, &[]);
    assert_eq!(nat_table(a, "iptables-save"), v4);
    assert_eq!(nat_table(a, "ip6tables-save"), v6);
    assert_eq!(app_get(a, &format!("http://{B_IP}:{APP_PORT}/again")).status, 200);
    assert_eq!(sample(&metrics(a).await, requests, &[("service", "b.default")]), 2.0);

    // --cleanup leaves nothing of ours (and a second one has nothing to do): A's app now
    // reaches B in plaintext, which B refuses.
    init(&pod_a, &[], &["--cleanup"]);
    for save in ["iptables-save", "ip6tables-save"] {
        let table = nat_table(a, save);
        assert!(!table.contains("PILOTFISH"), "{save} after --cleanup:\n{table}");
    }
    init(&pod_a, &[], &["--cleanup"]);
    let r = app_get(a, &format!("http://{B_IP}:{APP_PORT}/"));
    assert_eq!((r.status, r.header("pilotfish-error")), (403, Some("forbidden")));
    assert_eq!(sample(&metrics(b).await, refused, &[("reason", "plaintext")]), 2.0);
    assert_eq!(sample(&metrics(a).await, requests, &[("service", "b.default")]), 2.0);
}

#[test]
fn dry_run_needs_no_root_and_prints_exactly_what_init_installs() {
    let flags = ["--exclude-outbound-ports", "25", "--exclude-outbound-cidrs", "10.0.0.0/8,fd00::/8"];
    // An unprivileged user, outside any pod's namespace.
    let mut dry =
        vec!["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN, "init", "--dry-run"];
    dry.extend(flags);
    let printed = run(&dry);
    let (v4, v6) = printed.split_once("# IPv6: ip6tables-restore --noflush\n").expect(&printed);
    let v4 = v4.strip_prefix("# IPv4: iptables-restore --noflush\n").expect(v4);
    assert!(v4.contains("-A PILOTFISH_OUTPUT -d 10.0.0.0/8 -j RETURN\n") && !v4.contains("fd00"), "{v4}");
    assert!(v6.contains("-A PILOTFISH_OUTPUT -d fd00::/8 -j RETURN\n") && !v6.contains("10.0.0.0"), "{v6}");

    // Restored by hand, the printed rules are the table init itself leaves.
    let ns = Netns::new("dry");
    let mut restore = Command::new("ip")
        .args(["netns", "exec", &ns.0, "iptables-restore", "--noflush"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    restore.stdin.take().unwrap().write_all(v4.as_bytes()).unwrap();
    assert!(restore.wait().unwrap().success());
    let by_hand = nat_table(&ns.0, "iptables-save");
    init(&ns, &[], &["--cleanup"]);
    assert_eq!(ours(&nat_table(&ns.0, "iptables-save")), 0);
    init(&ns, &flags, &[]);
    assert_eq!(nat_table(&ns.0, "iptables-save"), by_hand);
}

#[test]
fn without_ip6tables_init_warns_and_intercepts_ipv4_and_other_backends_are_chosen_by_flag() {
    let ns = Netns::new("tools");
    // Tools with iptables alone, as in an image without ip6tables.
    let tools = tempfile::tempdir().unwrap();
    for tool in ["iptables-save", "iptables-restore"] {
        let path = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
        let path = String::from_utf8(path.stdout).unwrap();
        std::os::unix::fs::symlink(path.trim(), tools.path().join(tool)).unwrap();
    }
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "env"])
        .arg(format!("PATH={}", tools.path().display()))
        .args([BIN, "init"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("IPv6 left alone: ip6tables-save is not installed"), "{said}");
    assert_eq!(ours(&nat_table(&ns.0, "iptables-save")), 10);
    assert_eq!(ours(&nat_table(&ns.0, "ip6tables-save")), 0);
    init(&ns, &[], &["--cleanup"]);

    // The legacy backend's tables are apart from nf_tables' (which the default tools here use).
    init(&ns, &["--iptables-mode", "legacy"], &[]);
    assert_eq!(ours(&nat_table(&ns.0, "iptables-legacy-save")), 10);
    assert_eq!(ours(&nat_table(&ns.0, "ip6tables-legacy-save")), 10);
    assert_eq!(ours(&nat_table(&ns.0, "iptables-save")), 0);
    init(&ns, &["--iptables-mode", "legacy"], &["--cleanup"]);
    assert_eq!(ours(&nat_table(&ns.0, "iptables-legacy-save")), 0);
}
