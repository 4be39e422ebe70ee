//! Mesh telemetry: a sidecar's report (folded in as the proxy its credential acts for, so a
//! report cannot speak for another service's edges) and `/v1/stats` reads.

use pilotfish_api::wire::stats::MAX_EDGES_PER_REPORT;
use pilotfish_api::wire::{AckQuery, StatsList, StatsQuery, StatsReport, Versioned};
use pilotfish_api::SpiffeId;

use super::caller::Caller;
use super::error::{Error, Result};
use super::plane::ControlPlane;
use super::sync::proxy_of;
use crate::telemetry::window::RETAIN_SECONDS;
use crate::telemetry::Reporter;

/// The shortest window a read may ask for (two report periods and a half).
pub const MIN_WINDOW_SECONDS: u64 = 5;
/// The window of a read that names none.
pub const DEFAULT_WINDOW_SECONDS: u64 = 60;

impl ControlPlane {
    /// Folds in proxy `id`'s report. The edges' source is the proxy's service; the identity
    /// it claims must be that service's.
    pub fn report_stats(&self, caller: &Caller, id: &str, q: AckQuery, report: StatsReport) -> Result<()> {
        report.check_protocol()?;
        let key = proxy_of(caller, id, q)?;
        if report.edges.len() > MAX_EDGES_PER_REPORT {
            return Err(Error::BadRequest(format!(
                "a report carries at most {MAX_EDGES_PER_REPORT} edges, this one {}",
                report.edges.len()
            )));
        }
        if let Some(claimed) = &report.identity {
            let own = SpiffeId::new(&self.trust_domain, &key.namespace, &key.service)
                .map_err(|e| Error::BadRequest(e.to_string()))?;
            if claimed.parse::<SpiffeId>().ok().as_ref() != Some(&own) {
                return Err(Error::Forbidden(format!(
                    "it reports identity {claimed}, but a sidecar of {}.{} is {own}",
                    key.service, key.namespace
                )));
            }
        }
        let from = Reporter {
            service: key.service,
            namespace: key.namespace,
            proxy: key.id,
            identity: report.identity.clone(),
        };
        self.telemetry.ingest(&from, &report);
        Ok(())
    }

    /// The mesh's golden metrics over a window: a read, like the registry's.
    pub fn stats(&self, caller: &Caller, q: StatsQuery) -> Result<StatsList> {
        caller.reader()?;
        let seconds = match &q.window {
            None => DEFAULT_WINDOW_SECONDS,
            Some(text) => window_seconds(text)?,
        };
        let by = q.by.unwrap_or_default();
        let items = self.telemetry.rows(seconds, by, q.service.as_deref());
        Ok(StatsList { window_seconds: seconds, by, items })
    }
}

/// A window as a query writes it (`30s`, `1m`, `1h`): whole seconds from
/// [`MIN_WINDOW_SECONDS`] to an hour.
fn window_seconds(text: &str) -> Result<u64> {
    let bad = |why: String| {
        Error::BadRequest(format!(
            "window {text:?} {why}: give a duration from {MIN_WINDOW_SECONDS}s to 1h, e.g. window=30s, 1m or 1h"
        ))
    };
    let d = text.parse::<pilotfish_api::Duration>().map_err(|e| bad(format!("is not a duration ({e})")))?.get();
    if d.subsec_nanos() != 0 {
        return Err(bad("is not whole seconds".into()));
    }
    match d.as_secs() {
        s if (MIN_WINDOW_SECONDS..=RETAIN_SECONDS).contains(&s) => Ok(s),
        _ => Err(bad("is out of range".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_seconds_from_5s_to_an_hour() {
        assert_eq!(window_seconds("5s").unwrap(), 5);
        assert_eq!(window_seconds("1m").unwrap(), 60);
        assert_eq!(window_seconds("1h").unwrap(), 3600);
        for bad in ["4s", "2h", "1500ms", "soon", ""] {
            let e = window_seconds(bad).unwrap_err().to_string();
            assert!(e.contains("from 5s to 1h"), "{bad}: {e}");
        }
    }
}
