//! Mesh telemetry: a sidecar's report (folded in as the proxy its credential acts for, so a
//! report cannot speak for another service's edges) and `/v1/stats` reads.

use pilotfish_api::wire::stats::{window_seconds, DEFAULT_WINDOW_SECONDS, MAX_EDGES_PER_REPORT};
use pilotfish_api::wire::{AckQuery, StatsList, StatsQuery, StatsReport, Versioned};
use pilotfish_api::SpiffeId;

use super::caller::Caller;
use super::error::{Error, Result};
use super::plane::ControlPlane;
use super::sync::proxy_of;
use crate::telemetry::Reporter;

impl ControlPlane {
    /// Folds in proxy `id`'s report. The edges' source is the proxy's service; the identity
    /// it claims must be that service's.
    pub fn report_stats(&self, caller: &Caller, id: &str, q: AckQuery, report: StatsReport) -> Result<()> {
        report.check_protocol()?;
        let key = proxy_of(caller, id, q)?;
        for (what, len) in [("edges", report.edges.len()), ("breakers", report.breakers.len())] {
            if len > MAX_EDGES_PER_REPORT {
                return Err(Error::BadRequest(format!(
                    "a report carries at most {MAX_EDGES_PER_REPORT} {what}, this one {len}"
                )));
            }
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
            Some(text) => window_seconds(text).map_err(|e| Error::BadRequest(e.to_string()))?,
        };
        let by = q.by.unwrap_or_default();
        let side = q.side.unwrap_or_default();
        let items = self.telemetry.rows(seconds, side, by, q.service.as_deref());
        Ok(StatsList { window_seconds: seconds, by, side, items })
    }
}
