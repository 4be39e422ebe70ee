//! Managed mode: the configuration comes from the control plane's push stream instead of a
//! file, and this sidecar's app is registered in the control plane's registry under a lease it
//! renews by heartbeat.
//!
//! The sidecar ACKs every version it swaps in and NACKs (with the error) every version it
//! refuses, keeping the last good one. When the control plane is unreachable it keeps serving
//! what it has and reconnects with jittered exponential backoff, trying each control-plane URL
//! in turn, and resumes from the version it has. A push line of a protocol this build does not
//! support is NACKed like a configuration it refuses. Every call goes through the typed client
//! of `pilotfish_api::client`.
//!
//! Each push line also carries the mesh's security settings: the trust bundle and
//! `renewBefore` go to the identity's renew loop (through [`crate::identity::mesh_feed`], so
//! only the latest counts), and the mesh's authorization default becomes the synthesized
//! `Sidecar` document's `spec.authorization.default`, so authorization reads it where static
//! mode puts it.
//!
//! Tap lines on the same stream (protocol 2) say which requests to record for operators
//! tapping the service; they go straight to [`Shared::tap`], and tapping stops whenever the
//! stream ends (the control plane that asked for it may be gone; the next one says again).
//!
//! Every ACK and NACK carries the certificate in force and the fingerprints of the roots its
//! handshakes trust ([`Shared::reported`]): a root rotation goes by those roots, not by which
//! versions were ACKed, since an ACK says nothing of a bundle the renew loop could not use, and
//! a sidecar NACKing an unrelated configuration never ACKs the version carrying a new root.
//! When the report changes — a renewal, a bundle put in force — the last ACKed version is ACKed
//! again at once, so the control plane sees it without waiting for a new version; and after
//! every (re)connection, since the control plane may not know it. Nothing is sent while the
//! report stays the same, nor before the first ACK. A version carrying a trust bundle is
//! answered once that bundle is in force (or a few seconds passed), so its ACK already names
//! the roots it brings instead of leaving them to a second ACK a moment later.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pilotfish_api::authz::MeshDefault;
use pilotfish_api::client::{
    Bearer, Client, ClientError, PushMessage, PushStream, SharedClientCert, SharedRoots, StreamError, Trust,
};
use pilotfish_api::wire::{
    Ack, AckQuery, MeshSettings, PushQuery, Registration, TapControl, PROTOCOL_VERSION,
};
use pilotfish_api::UnknownFields;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::reload;
use crate::identity::mesh_feed::{MeshSender, IN_FORCE_WITHIN};
use crate::identity::publish::Reported;
use crate::listener::local::LocalListeners;
use crate::snapshot::Overrides;
use crate::state::Shared;
use crate::telemetry::tap::Tap;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Connecting includes waiting for the response headers of the stream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Registration, heartbeat, deregistration and ACK calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection to the control plane is kept.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// Where the control plane is and who this sidecar is.
#[derive(Debug, Clone)]
pub struct Managed {
    /// Base URLs of the control-plane replicas (`http://host:port`, or `https://host:port`
    /// verified against the CA root the join token pins, or a root the push stream brought).
    pub servers: Vec<String>,
    pub service: String,
    pub namespace: String,
    /// A join token, or a file holding a Kubernetes ServiceAccount token (re-read at each call).
    pub token: Bearer,
    /// The roots an https control plane is verified against, PEM (else the root the join
    /// token pins).
    pub ca_file: Option<PathBuf>,
    /// This sidecar's name in the proxies API.
    pub id: String,
    /// How long the registration lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// Whether the sidecar registers its inbound address as an instance of its service. Not in
    /// Kubernetes, where the cluster's EndpointSlices list the pod (and the inbound listener's
    /// address, 0.0.0.0, says nothing of the pod's).
    pub register: bool,
}

impl Managed {
    /// The configuration as the sidecar parses it: its own `Sidecar` document (listeners come
    /// from the command line; the authorization default from the control plane, when it sends
    /// one) followed by what the control plane sent.
    pub fn document_stream(&self, config: &str, authz_default: Option<MeshDefault>) -> String {
        let spec = match authz_default {
            Some(default) => serde_json::json!({ "authorization": { "default": default } }),
            None => serde_json::json!({}),
        };
        let sidecar = serde_json::json!({
            "apiVersion": "pilotfish.io/v1alpha1",
            "kind": "Sidecar",
            "metadata": { "name": self.service, "namespace": self.namespace },
            "spec": spec,
        });
        format!("{sidecar}\n---\n{config}")
    }

    /// A client of each control-plane replica, in the order they are tried.
    ///
    /// Each presents `cert` (the mesh identity, once the sidecar has one) to an https control
    /// plane, which takes it as the sidecar's credential once the join token expired. Idle
    /// connections are not kept long, so a connection opened before the sidecar had a
    /// certificate (or with an old one) is soon replaced by one presenting the current one.
    pub fn clients(&self, pushed: &SharedRoots, cert: &SharedClientCert) -> Vec<Client> {
        self.servers
            .iter()
            .map(|server| {
                // An https control plane is verified against the root its join token pins, or
                // against the mesh's latest pushed bundle: after a root rotation its serving
                // certificate chains to a root the token does not pin.
                let trust = match &self.ca_file {
                    Some(path) => Trust::ca_file(path)
                        .inspect_err(|e| tracing::error!(error = %e, "cannot read the control plane's CA"))
                        .ok(),
                    None => self.token.given().and_then(Trust::from_token),
                };
                let trust = trust.map(|t| t.or_roots(pushed.clone()));
                Client::builder(server)
                    .bearer(self.token.clone())
                    .trust(trust)
                    .client_cert(Arc::new(cert.clone()))
                    .pool_idle_timeout(POOL_IDLE)
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(CALL_TIMEOUT)
                    .build()
            })
            .collect()
    }
}

/// One push line, ready for the snapshot builder.
#[derive(Debug)]
pub struct Pushed {
    pub version: u64,
    /// The configuration as a document stream ([`Managed::document_stream`]).
    pub documents: String,
    /// The mesh's security settings (absent from a control plane without a CA).
    pub mesh: Option<MeshSettings>,
}

impl Pushed {
    /// Hands the mesh settings to the identity's renew loop; the trust bundle whose being in
    /// force the ACK waits for.
    pub fn publish_mesh(&mut self, to: &MeshSender) -> Option<String> {
        let mesh = self.mesh.take()?;
        let bundle = mesh.trust_bundle_pem.clone();
        to.publish(mesh);
        Some(bundle)
    }
}

/// The push stream, (re)connected as needed.
pub struct PushClient {
    managed: Managed,
    clients: Vec<Client>,
    server: usize,
    stream: Option<PushStream>,
    /// The last version swapped in and ACKed (sent on reconnect so an unchanged config is not
    /// resent).
    acked: Option<u64>,
    failures: u32,
    /// No connection attempt before this (a backoff outlives a cancelled [`PushClient::next`]).
    retry_at: Option<Instant>,
    /// What the control plane is told of the identity in force ([`Shared::reported`]), once
    /// the sidecar has its state.
    in_force: Option<watch::Receiver<Option<Reported>>>,
    /// What the control plane connected to was last told of it.
    reported: Option<Reported>,
    /// The roots of the latest pushed trust bundle, which every control-plane client trusts.
    roots: SharedRoots,
    /// Where tap lines go, once the sidecar has its state.
    tap: Option<Arc<Tap>>,
    /// Until then, the latest tap line (the first configuration may have been NACKed, with a
    /// tap line after it read while waiting for the next).
    tap_pending: Option<TapControl>,
}

impl PushClient {
    /// `cert` as [`Managed::clients`].
    pub fn new(managed: Managed, cert: &SharedClientCert) -> Self {
        let roots = SharedRoots::default();
        Self {
            clients: managed.clients(&roots, cert),
            managed,
            server: 0,
            stream: None,
            acked: None,
            failures: 0,
            retry_at: None,
            in_force: None,
            reported: None,
            roots,
            tap: None,
            tap_pending: None,
        }
    }

    /// Hands every tap line to `tap` from now on, starting with one read before.
    pub fn tap_into(&mut self, tap: Arc<Tap>) {
        if let Some(control) = self.tap_pending.take() {
            tap.set(control);
        }
        self.tap = Some(tap);
    }

    /// The roots of the latest pushed trust bundle, for the other control-plane clients.
    pub fn pushed_roots(&self) -> &SharedRoots {
        &self.roots
    }

    /// Reports what `in_force` holds on every ACK and NACK from now on.
    pub fn report_from(&mut self, in_force: watch::Receiver<Option<Reported>>) {
        self.in_force = Some(in_force);
    }

    pub fn managed(&self) -> &Managed {
        &self.managed
    }

    /// The next snapshot. Cancelling it loses no line and no backoff; a connection attempt
    /// under way starts over.
    pub async fn next(&mut self) -> Pushed {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                if let Some(at) = self.retry_at {
                    tokio::time::sleep_until(at).await;
                    self.retry_at = None;
                }
                let server = self.clients[self.server].base().to_owned();
                match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                    Ok(Ok(stream)) => {
                        tracing::info!(%server, "connected to the control plane");
                        self.stream = Some(stream);
                        // This control plane may know nothing of the identity in force.
                        self.reported = None;
                        self.report().await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%server, error = %e, "control plane unreachable; serving the last good config");
                        self.fail_over();
                    }
                    Err(_) => {
                        tracing::warn!(%server, "control plane did not answer within {CONNECT_TIMEOUT:?}; trying the next");
                        self.fail_over();
                    }
                }
                continue;
            };
            match stream.next().await {
                Ok(PushMessage::Tap(control)) => match &self.tap {
                    Some(tap) => tap.set(control),
                    None => self.tap_pending = Some(control),
                },
                Ok(PushMessage::Config(line)) => {
                    // Only a snapshot proves the server healthy; connecting is not enough.
                    self.failures = 0;
                    if let Some(mesh) = &line.mesh {
                        self.roots.set_pem(&mesh.trust_bundle_pem);
                    }
                    let authz_default = line.mesh.as_ref().map(|mesh| mesh.authz_default);
                    let documents = self.managed.document_stream(&line.config, authz_default);
                    return Pushed { version: line.version, documents, mesh: line.mesh };
                }
                Err(StreamError::Unsupported { version, error }) => {
                    self.failures = 0;
                    tracing::error!(version, "push line refused, keeping the last good config: {error}");
                    self.ack(version, Some(error.to_string())).await;
                }
                Err(e @ (StreamError::Unreadable(_) | StreamError::LineTooLong(_))) => {
                    tracing::warn!(error = %e, "unusable line on the push stream; reconnecting");
                    self.fail_over();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "push stream ended; reconnecting");
                    self.fail_over();
                }
            }
        }
    }

    /// Drops the stream, moves to the next control-plane URL, and backs off — longer with every
    /// failure in a row, so a server that accepts and then fails cannot cause a reconnect storm.
    fn fail_over(&mut self) {
        self.stream = None;
        self.tap_pending = None;
        if let Some(tap) = &self.tap {
            tap.stop();
        }
        self.server = (self.server + 1) % self.clients.len();
        self.failures += 1;
        self.retry_at = Some(Instant::now() + backoff(self.failures));
    }

    async fn connect(&self) -> Result<PushStream, ClientError> {
        let m = &self.managed;
        let query = PushQuery {
            id: m.id.clone(),
            service: m.service.clone(),
            namespace: m.namespace.clone(),
            version: self.acked.unwrap_or(0),
            protocol: Some(PROTOCOL_VERSION),
        };
        self.clients[self.server].push(&query).await
    }

    /// ACK (`error: None`) or NACK a version.
    pub async fn ack(&mut self, version: u64, error: Option<String>) {
        let ack = match error {
            None => {
                self.acked = Some(version);
                Ack::accepted(version)
            }
            Some(error) => Ack::refused(version, error),
        };
        self.send(ack).await;
    }

    /// ACKs the last ACKed version again if the certificate or roots in force are not what the
    /// control plane was last told of.
    pub async fn report(&mut self) {
        let Some(version) = self.acked else { return };
        if self.in_force() == self.reported {
            return;
        }
        tracing::info!(version, "reporting the certificate and roots in force to the control plane");
        self.send(Ack::accepted(version)).await;
    }

    fn in_force(&self) -> Option<Reported> {
        self.in_force.as_ref().and_then(|rx| rx.borrow().clone())
    }

    /// Sends `ack` with the certificate and roots in force.
    async fn send(&mut self, ack: Ack) {
        let in_force = self.in_force();
        let ack = ack
            .with_certificate(in_force.as_ref().map(|r| r.certificate.clone()))
            .with_trusted_roots(in_force.as_ref().map(|r| r.trusted_roots.clone()));
        // The proxy is the id under the service it connected as (see `connect`).
        let m = &self.managed;
        let query = AckQuery { service: Some(m.service.clone()), namespace: Some(m.namespace.clone()) };
        match self.clients[self.server].ack(&m.id, &query, &ack).await {
            Ok(()) => self.reported = in_force,
            Err(e) => tracing::warn!(version = ack.version, error = %e, "cannot report to the control plane"),
        }
    }
}

/// Applies every snapshot after the first, passes the mesh settings on to `mesh`, and
/// reports every new certificate and set of roots in force, until the sidecar shuts down.
pub async fn follow(
    shared: Arc<Shared>,
    local: Arc<LocalListeners>,
    mut push: PushClient,
    overrides: Overrides,
    mesh: MeshSender,
) {
    push.report_from(shared.reported.subscribe());
    push.tap_into(shared.tap.clone());
    let mut installed = shared.reported.subscribe();
    loop {
        let mut pushed = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            next = push.next() => next,
            Ok(()) = installed.changed() => {
                push.report().await;
                continue;
            }
        };
        let bundle = pushed.publish_mesh(&mesh);
        let (version, text) = (pushed.version, pushed.documents);
        let verdict = match reload::swap_in(
            &shared,
            &local,
            "control-plane",
            &text,
            &overrides,
            UnknownFields::Tolerate,
        ) {
            Ok(applied) => {
                if applied.is_some() {
                    tracing::info!(version, "configuration from the control plane applied");
                }
                None
            }
            Err(e) => {
                shared.metrics.config_errors.inc();
                tracing::error!(
                    version,
                    "configuration from the control plane rejected, keeping the last good one: {e}"
                );
                Some(e)
            }
        };
        if let Some(bundle) = bundle {
            if !mesh.in_force(&bundle).await {
                tracing::warn!(
                    version,
                    "this version's trust bundle is not in force after {IN_FORCE_WITHIN:?}; answering with the roots in force"
                );
            }
        }
        push.ack(version, verdict).await;
    }
}

/// Registers `address` as an instance of the service and renews its lease until `stop`, then
/// deregisters it; `roots` as [`Managed::clients`].
pub async fn register(
    managed: Managed,
    roots: SharedRoots,
    cert: SharedClientCert,
    address: SocketAddr,
    stop: CancellationToken,
) {
    let clients = managed.clients(&roots, &cert);
    let ttl = managed.lease_ttl.as_secs().max(1);
    let registration = Registration::new(&managed.service, &managed.namespace, address, ttl);
    let mut server = 0;
    let mut failures = 0;
    let mut id: Option<String> = None;
    loop {
        let client = &clients[server];
        let result = match &id {
            None => client.register(&registration).await.map(|r| id = Some(r.id)),
            Some(current) => match client.heartbeat(current).await {
                // The control plane let the lease lapse (it was down, or so were we): again.
                Err(ClientError::NotFound(_)) => {
                    id = None;
                    continue;
                }
                other => other.map(drop),
            },
        };
        let pause = match result {
            Ok(()) => {
                failures = 0;
                Duration::from_secs(ttl) / 3
            }
            Err(e) => {
                tracing::warn!(server = %client.base(), error = %e, "cannot renew this instance's registration");
                server = (server + 1) % clients.len();
                failures += 1;
                backoff(failures)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    if let Some(id) = id {
        let bye = clients[server].deregister(&id);
        if tokio::time::timeout(Duration::from_secs(2), bye).await.is_err() {
            tracing::warn!("could not deregister before exiting; the lease will lapse instead");
        }
    }
}

/// Reconnect and retry pauses: the retry layer's exponential backoff with full jitter, from
/// 100 ms up to 5 s.
fn backoff(failures: u32) -> Duration {
    crate::resilience::retry::backoff(failures, Duration::from_millis(100), MAX_BACKOFF)
}

#[cfg(test)]
mod tests;
