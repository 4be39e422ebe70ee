//! Tap: an operator watching one service's requests live. Each open tap is a session with a
//! filter and a bounded queue ([`TAP_QUEUE`] events; a full queue drops and counts, so a slow
//! reader holds up nothing); at most [`MAX_TAPS`] are open at once. The filters of every tap on
//! a service go to that service's sidecars over their push streams (which wake on
//! [`Taps::subscribe`]); the sidecars record what matches and report it here, and each event
//! goes to every session of the reporting service whose filter it matches (checked again: a
//! sidecar records for the union of the filters).
//!
//! A tap reaches the sidecars connected to this replica only: with several replicas (etcd),
//! the sidecars connected to the others are not tapped.
//!
//! Tapping shows paths, request ids and identities of live traffic, so it takes the admin
//! token: a read-only token is refused (403), and a join token like no token at all (401).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pilotfish_api::wire::TapControl;
use pilotfish_api::wire::{AckQuery, TapEvent, TapFilter, TapQuery, TapReport, Versioned, MAX_TAPS};
use tokio::sync::{mpsc, watch};

use super::caller::Caller;
use super::error::{Error, Result};
use super::plane::ControlPlane;
use super::sync::proxy_of;
use crate::names::{check_service, namespace_or_default};

/// Events queued for one tap client, at most.
pub const TAP_QUEUE: usize = 1024;

/// A tap refused because as many are open as may be.
#[derive(Debug, thiserror::Error)]
#[error(
    "{MAX_TAPS} taps are open already, the most at once: close one (or wait for one to end) and try again"
)]
pub struct TooManyTaps;

/// The open taps.
#[derive(Default)]
pub struct Taps {
    table: Mutex<Table>,
    /// Bumped whenever a tap opens or closes: push streams then send their service's filters.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Open>,
}

/// What a tap's session leaves in the table.
struct Open {
    service: String,
    namespace: String,
    filter: TapFilter,
    events: mpsc::Sender<TapEvent>,
    dropped: Arc<AtomicU64>,
}

/// What delivering to an open tap needs, taken out of the table.
struct Tapping {
    filter: TapFilter,
    events: mpsc::Sender<TapEvent>,
    dropped: Arc<AtomicU64>,
}

/// One open tap: its events, until it is dropped (which closes it, and sidecars stop recording
/// for it).
pub struct TapSession {
    id: u64,
    taps: Arc<Taps>,
    pub events: mpsc::Receiver<TapEvent>,
    dropped: Arc<AtomicU64>,
    /// End after this many events, if set.
    pub max: Option<u64>,
}

impl TapSession {
    /// Events dropped since the last call because the queue was full.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Drop for TapSession {
    fn drop(&mut self) {
        self.taps.table().open.remove(&self.id);
        self.taps.changed.send_modify(|g| *g += 1);
    }
}

impl Taps {
    /// Held for a lookup or an update, never across an await.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes at every tap opened or closed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// What the sidecars of `service.namespace` record now: every open tap's filter on it,
    /// each once, in a stable order (so an unchanged set is not sent again).
    pub fn control(&self, service: &str, namespace: &str) -> TapControl {
        let table = self.table();
        let mut filters: Vec<TapFilter> = table
            .open
            .values()
            .filter(|o| o.service == service && o.namespace == namespace)
            .map(|o| o.filter.clone())
            .collect();
        filters.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
        filters.dedup();
        TapControl { filters }
    }

    fn open(
        self: &Arc<Self>,
        service: String,
        namespace: String,
        filter: TapFilter,
        max: Option<u64>,
    ) -> Result<TapSession> {
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = {
            let mut table = self.table();
            if table.open.len() >= MAX_TAPS {
                return Err(TooManyTaps.into());
            }
            table.next_id += 1;
            let id = table.next_id;
            table.open.insert(id, Open { service, namespace, filter, events: tx, dropped: dropped.clone() });
            id
        };
        self.changed.send_modify(|g| *g += 1);
        Ok(TapSession { id, taps: self.clone(), events: rx, dropped, max })
    }

    /// Hands each event to every tap on `service.namespace` that wants it. The table's lock is
    /// held only to find the taps: push streams take it too.
    fn deliver(&self, service: &str, namespace: &str, proxy: &str, events: Vec<TapEvent>) {
        let taps: Vec<Tapping> = self
            .table()
            .open
            .values()
            .filter(|o| o.service == service && o.namespace == namespace)
            .map(|o| Tapping {
                filter: o.filter.clone(),
                events: o.events.clone(),
                dropped: o.dropped.clone(),
            })
            .collect();
        if taps.is_empty() {
            return;
        }
        for mut event in events {
            event.proxy = Some(proxy.to_owned());
            let path = event.path.split('?').next().unwrap_or_default();
            for tap in taps.iter().filter(|t| t.filter.matches(&event.method, path)) {
                if tap.events.try_send(event.clone()).is_err() {
                    tap.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl ControlPlane {
    /// Opens a tap on a service's requests: the admin token only.
    pub fn tap(&self, caller: &Caller, q: TapQuery) -> Result<TapSession> {
        caller.admin().map_err(|e| match e {
            Error::Forbidden(_) => Error::Forbidden(
                "it is read-only: tapping shows live requests (paths, request ids, identities) and needs \
                 the admin token (--token or PILOTFISH_TOKEN)"
                    .into(),
            ),
            other => other,
        })?;
        let filter = q.filter().map_err(Error::BadRequest)?;
        let namespace = namespace_or_default(q.namespace);
        check_service(&q.service, &namespace).map_err(Error::BadRequest)?;
        self.taps.open(q.service, namespace, filter, q.max)
    }

    /// Events proxy `id` recorded, handed to the taps on its service (the one its credential
    /// acts for).
    pub fn report_tap(&self, caller: &Caller, id: &str, q: AckQuery, report: TapReport) -> Result<()> {
        report.check_protocol()?;
        let key = proxy_of(caller, id, q)?;
        report.check().map_err(Error::BadRequest)?;
        self.taps.deliver(&key.service, &key.namespace, &key.id, report.events);
        Ok(())
    }

    /// The open taps (push streams follow them).
    pub fn taps(&self) -> &Taps {
        &self.taps
    }
}

#[cfg(test)]
mod tests {
    use pilotfish_api::wire::EdgeDirection;

    use super::*;

    fn event(method: &str, path: &str) -> TapEvent {
        TapEvent {
            at: "2026-12-03T08:00:00.000Z".into(),
            proxy: None,
            direction: EdgeDirection::Inbound,
            method: method.into(),
            authority: "web".into(),
            path: path.into(),
            status: 200,
            latency_ms: 1.0,
            request_id: None,
            peer: None,
            secured: false,
            error: None,
        }
    }

    fn filter(path: Option<&str>, method: Option<&str>) -> TapFilter {
        TapFilter { path: path.map(Into::into), method: method.map(Into::into) }
    }

    #[test]
    fn events_go_to_the_taps_of_their_service_whose_filter_they_match() {
        let taps = Arc::new(Taps::default());
        let mut changes = taps.subscribe();
        let (web, ns) = ("web".to_owned(), "default".to_owned());
        let mut api = taps.open(web.clone(), ns.clone(), filter(Some("/api"), None), None).unwrap();
        let mut posts = taps.open(web.clone(), ns.clone(), filter(None, Some("POST")), None).unwrap();
        let mut other = taps.open("db".into(), ns.clone(), TapFilter::default(), None).unwrap();
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(
            taps.control(&web, &ns).filters,
            vec![filter(None, Some("POST")), filter(Some("/api"), None)]
        );

        taps.deliver(&web, &ns, "web-1", vec![event("GET", "/api/x?q=1"), event("POST", "/other")]);
        let got = api.events.try_recv().unwrap();
        assert_eq!((got.path.as_str(), got.proxy.as_deref()), ("/api/x?q=1", Some("web-1")));
        assert!(api.events.try_recv().is_err());
        assert_eq!(posts.events.try_recv().unwrap().path, "/other");
        assert!(posts.events.try_recv().is_err());
        assert!(other.events.try_recv().is_err(), "another service's tap");

        drop(api);
        assert!(changes.has_changed().unwrap(), "closing a tap wakes the push streams");
        assert_eq!(taps.control(&web, &ns).filters, vec![filter(None, Some("POST"))]);
        drop(posts);
        assert_eq!(taps.control(&web, &ns), TapControl::default(), "no tap: sidecars stop");
    }

    #[test]
    fn a_slow_client_loses_events_counted_and_the_number_of_taps_is_bounded() {
        let taps = Arc::new(Taps::default());
        let (web, ns) = ("web".to_owned(), "default".to_owned());
        let session = taps.open(web.clone(), ns.clone(), TapFilter::default(), None).unwrap();
        let flood: Vec<TapEvent> = (0..TAP_QUEUE + 10).map(|_| event("GET", "/")).collect();
        taps.deliver(&web, &ns, "web-1", flood);
        assert_eq!(session.take_dropped(), 10);
        assert_eq!(session.take_dropped(), 0, "counted once");
        let more: Vec<TapSession> = (1..MAX_TAPS)
            .map(|_| taps.open(web.clone(), ns.clone(), TapFilter::default(), None).unwrap())
            .collect();
        assert!(taps.open(web.clone(), ns.clone(), TapFilter::default(), None).is_err(), "one too many");
        drop(more);
        assert!(taps.open(web, ns, TapFilter::default(), None).is_ok(), "closed taps make room");
    }
}
