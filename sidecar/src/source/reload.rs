//! Config reload: on SIGHUP or when the file changes (polled each second), the new file is
//! validated and built into a snapshot, then swapped in atomically. A rejected file changes
//! nothing: the error (file, document, field, reason) is logged and counted in
//! `pilotfish_config_errors_total`, and the previous config stays in force. Connections in flight
//! keep the snapshot they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use pilotfish_api::UnknownFields;

use crate::listener::local::LocalListeners;
use crate::snapshot::{Overrides, Snapshot};
use crate::state::Shared;

pub async fn watch(shared: Arc<Shared>, local: Arc<LocalListeners>, path: PathBuf, overrides: Overrides) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file change only");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen = fingerprint(&path);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            Some(()) = async { hangup.as_mut()?.recv().await } => {
                seen = fingerprint(&path);
                reload(&shared, &local, &path, &overrides, "SIGHUP");
            }
            _ = tick.tick() => {
                let now = fingerprint(&path);
                if now != seen {
                    seen = now;
                    reload(&shared, &local, &path, &overrides, "file change");
                }
            }
        }
    }
}

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn reload(shared: &Arc<Shared>, local: &LocalListeners, path: &Path, overrides: &Overrides, why: &str) {
    match try_reload(shared, local, path, overrides) {
        Ok(Some(version)) => {
            tracing::info!(version, file = %path.display(), trigger = why, "config reloaded")
        }
        Ok(None) => tracing::debug!(file = %path.display(), trigger = why, "config unchanged"),
        Err(e) => {
            shared.metrics.config_errors.inc();
            let version = shared.snapshot.load().version;
            tracing::error!(
                file = %path.display(),
                trigger = why,
                kept_version = version,
                "config rejected, previous config stays in force: {e}"
            );
        }
    }
}

fn try_reload(
    shared: &Arc<Shared>,
    local: &LocalListeners,
    path: &Path,
    overrides: &Overrides,
) -> Result<Option<u64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    swap_in(shared, local, &path.display().to_string(), &text, overrides, UnknownFields::Refuse)
}

/// Validates and builds `text` into a snapshot and swaps it in; `Ok(None)` when it is the
/// configuration already in force. On error nothing changes.
pub fn swap_in(
    shared: &Arc<Shared>,
    local: &LocalListeners,
    source: &str,
    text: &str,
    overrides: &Overrides,
    unknown: UnknownFields,
) -> Result<Option<u64>, String> {
    let old = shared.snapshot.load_full();
    if crate::snapshot::build::hash_text(text) == old.hash {
        return Ok(None);
    }
    let mut snap = Snapshot::build_with(source, text, overrides, Some(&old), &shared.metrics, unknown)
        .map_err(|e| e.to_string())?;
    if snap.keep_listeners_of(&old) {
        tracing::warn!(
            "the Sidecar's listener addresses or connection limit changed: they take effect at the next restart"
        );
    }
    let bound = local.bind_new(&snap).map_err(|e| e.to_string())?;
    let snap = Arc::new(snap);
    shared.snapshot.store(snap.clone());
    snap.catch_up(&old);
    old.retired.cancel();
    crate::upstream::health::spawn(&snap);
    shared.metrics.config_version.set(snap.version as i64);
    shared.metrics.retire(&snap.live_series());
    local.apply(shared, bound, &snap);
    Ok(Some(snap.version))
}
