//! What `GET /identity` reports beyond the [`Identity`] itself: where the identity comes from,
//! the roots trusted, the last renewal and the next one. Also readiness: a managed sidecar is
//! not ready until it holds its first identity, and says why.

use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::Identity;

/// Where this sidecar's identity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// None: plaintext only.
    None,
    /// `--tls-cert/--tls-key/--trust-bundle`, reloaded on change.
    Files,
    /// The control plane's CA, renewed before expiry.
    ControlPlane,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Files => "files",
            Mode::ControlPlane => "control-plane",
        }
    }
}

/// The identity's bookkeeping, updated on every install and renewal attempt.
#[derive(Debug)]
pub struct Status {
    inner: Mutex<Report>,
}

#[derive(Debug, Clone)]
struct Report {
    mode: Mode,
    roots: Vec<String>,
    last_renewal: Option<Renewal>,
    next_renewal: Option<SystemTime>,
}

/// A renewal (or, from files, a reload) and how it went.
#[derive(Debug, Clone)]
struct Renewal {
    at: SystemTime,
    error: Option<String>,
}

impl Default for Status {
    fn default() -> Self {
        let report = Report { mode: Mode::None, roots: Vec::new(), last_renewal: None, next_renewal: None };
        Status { inner: Mutex::new(report) }
    }
}

impl Status {
    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// A new certificate or bundle is in force.
    pub fn installed(&self, roots: &[String]) {
        self.lock().roots = roots.to_vec();
    }

    /// A renewal attempt finished at `at`; `error` says why it failed.
    pub fn renewed(&self, at: SystemTime, error: Option<String>) {
        self.lock().last_renewal = Some(Renewal { at, error });
    }

    /// When the next renewal attempt is due (`None`: none is planned).
    pub fn next_renewal(&self, at: Option<SystemTime>) {
        self.lock().next_renewal = at;
    }

    /// Why the sidecar is not ready yet, if its identity is what it waits for: a managed
    /// sidecar without a certificate cannot take part in the mesh.
    pub fn waiting(&self, identity: Option<&Identity>) -> Option<String> {
        let report = self.lock();
        if report.mode != Mode::ControlPlane || identity.is_some() {
            return None;
        }
        let why = match &report.last_renewal {
            Some(Renewal { error: Some(error), .. }) => format!(": {error}"),
            _ => String::new(),
        };
        Some(format!("no mesh identity yet (waiting for a certificate from the control plane's CA){why}"))
    }

    /// The `GET /identity` body.
    pub fn report(&self, identity: Option<&Identity>) -> Value {
        let report = self.lock().clone();
        let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let last = report.last_renewal.map(|r| {
            json!({
                "at": time(r.at),
                "result": if r.error.is_none() { "ok" } else { "error" },
                "error": r.error,
            })
        });
        json!({
            "mode": report.mode.as_str(),
            "id": identity.map(|i| i.id.to_string()),
            "notAfter": identity.map(|i| time(i.not_after)),
            "roots": report.roots,
            "lastRenewal": last,
            "nextRenewal": report.next_renewal.map(time),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Report> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
