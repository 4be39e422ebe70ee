//! Pilotfish sidecars in static mode (`pilotfish sidecar --config FILE`): the caller's sidecar
//! takes the load on a service's `localPort`; in a pair the callee's sidecar, permissive and
//! allowing any caller, forwards its inbound traffic to the upstream as its app. One tokio
//! worker thread each.

use anyhow::Result;
use std::net::SocketAddr;

use super::{Route, Setup};
use crate::pki::{path, Leaf};
use crate::procs::{free_port, Proc};
use crate::scenario::Protocol;
use crate::upstream::loopback;

pub fn start(setup: &Setup, route: &Route) -> Result<Vec<Proc>> {
    let Route { entry, target, .. } = *route;
    let protocol = match route.protocol {
        Protocol::Http1 => "http",
        Protocol::Http2 => "http2",
        Protocol::Grpc => "grpc",
        Protocol::Tcp => "tcp",
    };
    let Some(hop) = &route.hop else {
        let endpoint = format!("{{address: {target}}}");
        let a = sidecar(setup, "pilotfish-a", &caller("client", protocol, &endpoint, entry), None)?;
        return Ok(vec![a]);
    };
    // The callee first, so it listens when the caller's first request comes.
    let callee = format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: backend}}\nspec:\n  admin: {}\n  inbound: {{listen: {}, app: {target}, mtls: {{mode: permissive}}}}\n  outbound: {{listen: {}}}\n  authorization: {{default: allow}}\n",
        loopback(free_port()),
        hop.listen,
        loopback(free_port()),
    );
    let pki = setup.pki;
    let b = sidecar(setup, "pilotfish-b", &callee, hop.tls.then_some(&pki.backend))?;
    // An endpoint with an identity is dialled over mesh mTLS, one without in plaintext.
    let endpoint = match hop.tls {
        true => format!("{{address: {}, identity: \"{}\"}}", hop.listen, pki.backend.identity),
        false => format!("{{address: {}}}", hop.listen),
    };
    let a = sidecar(
        setup,
        "pilotfish-a",
        &caller("client", protocol, &endpoint, entry),
        hop.tls.then_some(&pki.client),
    )?;
    Ok(vec![a, b])
}

/// The caller's sidecar: one service on `localPort` `entry`, whose one endpoint is `endpoint`.
fn caller(name: &str, protocol: &str, endpoint: &str, entry: SocketAddr) -> String {
    format!(
        "apiVersion: pilotfish.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: {name}}}\nspec:\n  admin: {}\n  outbound: {{listen: {}}}\n---\napiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: backend}}\nspec:\n  ports: [{{port: 80, protocol: {protocol}}}]\n  endpoints: [{endpoint}]\n  localPort: {}\n",
        loopback(free_port()),
        loopback(free_port()),
        entry.port(),
    )
}

fn sidecar(setup: &Setup, name: &str, config: &str, leaf: Option<&Leaf>) -> Result<Proc> {
    let file = setup.dir.join(format!("{name}.yaml"));
    std::fs::write(&file, config)?;
    let mut args = vec!["sidecar", "--config", path(&file)];
    if let Some(leaf) = leaf {
        args.extend(["--tls-cert", path(&leaf.cert), "--tls-key", path(&leaf.key)]);
        args.extend(["--trust-bundle", path(&setup.pki.ca)]);
    }
    Proc::spawn(
        setup.dir,
        name,
        setup.pilotfish,
        &args,
        &[("TOKIO_WORKER_THREADS", "1"), ("RUST_LOG", "warn")],
    )
}
