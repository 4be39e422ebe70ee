//! Per-service local listeners (`Service.spec.localPort`): started and stopped as configuration
//! changes. A listener knows only its port; each connection looks up which service the port
//! belongs to in the snapshot in force.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::accept;
use super::outbound::{self, Listener};
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::telemetry::metrics::Direction;
use crate::transport;

#[derive(Default)]
pub struct LocalListeners {
    running: Mutex<HashMap<u16, CancellationToken>>,
}

/// Listeners bound for a snapshot but not yet accepting.
pub struct Bound(Vec<(u16, TcpListener)>);

impl LocalListeners {
    /// Binds the snapshot's local ports that are not listening yet; all or nothing.
    pub fn bind_new(&self, snap: &Snapshot) -> io::Result<Bound> {
        let running = self.running.lock().expect("lock poisoned");
        let mut bound = Vec::new();
        for (port, key) in &snap.local_ports {
            if running.contains_key(port) {
                continue;
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            let listener = transport::bind(addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("localPort {port} of service {key}: cannot listen on {addr}: {e}"),
                )
            })?;
            bound.push((*port, listener));
        }
        Ok(Bound(bound))
    }

    /// Starts accepting on newly bound ports and stops listeners the snapshot no longer has.
    pub fn apply(&self, shared: &Arc<Shared>, bound: Bound, snap: &Snapshot) {
        let mut running = self.running.lock().expect("lock poisoned");
        running.retain(|port, stop| {
            let keep = snap.local_ports.iter().any(|(p, _)| p == port);
            if !keep {
                tracing::info!(port, "local listener removed");
                stop.cancel();
            }
            keep
        });
        for (port, listener) in bound.0 {
            let stop = shared.shutdown.child_token();
            running.insert(port, stop.clone());
            let conn_shared = shared.clone();
            shared.supervise(
                "local listener",
                accept::accept_loop(
                    shared.clone(),
                    listener,
                    Direction::Outbound,
                    stop,
                    move |stream, client, slot| {
                        outbound::handle(conn_shared.clone(), stream, client, Listener::Local(port), slot)
                    },
                ),
            );
            tracing::info!(port, "local listener started");
        }
    }
}
