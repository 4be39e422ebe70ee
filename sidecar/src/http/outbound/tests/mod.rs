//! Unit tests of the outbound stages, each on a snapshot built from YAML the way the sidecar
//! builds it, with a connection as a listener would make it.

mod attempts;
mod endpoint;
mod route;

use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::Semaphore;

use crate::http::context::{Connection, HttpTarget};
use crate::http::pool::Version;
use crate::listener::accept::ConnSlot;
use crate::snapshot::{Overrides, Snapshot};
use crate::state::Shared;
use crate::telemetry::metrics::{Direction, Metrics};

/// A sidecar whose configuration is `yaml`, and an outbound connection to it for `target`.
fn connection(yaml: &str, target: HttpTarget) -> Connection {
    let metrics = Metrics::new();
    let snap = Snapshot::build("test.yaml", yaml, &Overrides::default(), None, &metrics).unwrap();
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let gauge = IntGauge::new("open_connections", "open connections").unwrap();
    Connection {
        shared: Shared::new(snap, metrics),
        direction: Direction::Outbound,
        client: "10.0.0.7:40000".parse().unwrap(),
        target,
        downstream: Version::Http1,
        slot: Arc::new(ConnSlot::new(permit, gauge)),
        peer: None,
        peer_header: None,
        edge: None,
    }
}

/// The configuration in force on `conn`.
fn snapshot(conn: &Connection) -> Arc<Snapshot> {
    conn.shared.snapshot.load_full()
}

/// The exported text of `conn`'s metrics.
fn exported(conn: &Connection) -> String {
    String::from_utf8(conn.shared.metrics.encode()).unwrap()
}
