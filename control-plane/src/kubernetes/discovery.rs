//! The watches that feed the registry: Services, EndpointSlices and Pods of every namespace
//! (kube-runtime's watcher: list, then watch from the list's resourceVersion with bookmarks;
//! a 410 Gone lists again). A re-list replaces a kind's objects only once it is complete, so the
//! endpoints known before it stay in force until then, and objects gone meanwhile go with it.
//! Every change republishes the services (coalesced over [`SETTLE`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::translate::{self, Cluster, Key};
use crate::core::ControlPlane;

/// Changes within this long of each other are published together (a rollout touches a slice
/// and its pods many times within a second).
const SETTLE: Duration = Duration::from_millis(100);

/// One object kind's objects, as the watch last listed and changed them.
struct Mirror<T> {
    /// Objects of a re-list under way; they replace the kind's own when it completes.
    listing: Option<BTreeMap<Key, T>>,
    /// Whether the kind's first list has completed: until all three have, what is known is
    /// partial (services without their slices, endpoints without their pods) and is not
    /// published.
    synced: bool,
}

impl<T> Default for Mirror<T> {
    fn default() -> Self {
        Self { listing: None, synced: false }
    }
}

impl<T> Mirror<T> {
    /// Applies one watch event to `objects` (`facts`: what is kept of an object, `None` to
    /// keep nothing of it); whether `objects` changed.
    fn apply<K: Resource>(
        &mut self,
        objects: &mut BTreeMap<Key, T>,
        event: watcher::Event<K>,
        facts: impl Fn(&K) -> Option<T>,
    ) -> bool {
        let key = |o: &K| translate::key(o.meta());
        match event {
            watcher::Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                if let (Some(listing), Some(k), Some(f)) = (self.listing.as_mut(), key(&o), facts(&o)) {
                    listing.insert(k, f);
                }
                false
            }
            watcher::Event::InitDone => {
                *objects = self.listing.take().unwrap_or_default();
                self.synced = true;
                true
            }
            watcher::Event::Apply(o) => {
                let Some(k) = key(&o) else { return false };
                match facts(&o) {
                    Some(f) => objects.insert(k, f),
                    None => objects.remove(&k),
                };
                true
            }
            watcher::Event::Delete(o) => key(&o).is_some_and(|k| objects.remove(&k).is_some()),
        }
    }
}

/// A change to one of the watched kinds (boxed: a Pod is large, and most changes are not one).
enum Change {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Pod(Box<watcher::Event<Pod>>),
}

/// Watches every namespace's `K`, retrying with backoff (the watcher re-lists after a 410).
fn watch<K>(client: &Client) -> impl Stream<Item = watcher::Event<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff().filter_map(
        |event| async {
            match event {
                Ok(event) => Some(event),
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "Kubernetes watch failed; retrying");
                    None
                }
            }
        },
    )
}

/// Publishes the cluster's services into the registry until `stop`.
pub async fn run(client: Client, cp: Arc<ControlPlane>, stop: CancellationToken) {
    let changes = futures::stream::select_all([
        watch::<Service>(&client).map(|e| Change::Service(Box::new(e))).boxed(),
        watch::<EndpointSlice>(&client).map(|e| Change::Slice(Box::new(e))).boxed(),
        watch::<Pod>(&client).map(|e| Change::Pod(Box::new(e))).boxed(),
    ]);
    tokio::pin!(changes);
    let mut cluster = Cluster::default();
    let (mut services, mut slices, mut pods) = (Mirror::default(), Mirror::default(), Mirror::default());
    // When the changes since the last publication are published: a steady stream of changes
    // delays them by SETTLE at most.
    let mut publish_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            change = changes.next() => {
                let Some(change) = change else { return };
                let changed = match change {
                    Change::Service(e) => services.apply(&mut cluster.services, *e, translate::service),
                    Change::Slice(e) => slices.apply(&mut cluster.slices, *e, translate::slice),
                    Change::Pod(e) => pods.apply(&mut cluster.pods, *e, |p| Some(translate::pod(p))),
                };
                let synced = services.synced && slices.synced && pods.synced;
                if changed && synced && publish_at.is_none() {
                    publish_at = Some(tokio::time::Instant::now() + SETTLE);
                }
            }
            _ = tokio::time::sleep_until(publish_at.unwrap_or_else(tokio::time::Instant::now)), if publish_at.is_some() => {
                publish_at = None;
                let found = cluster.services(cp.trust_domain());
                tracing::debug!(services = found.len(), "publishing the services Kubernetes has");
                cp.discovered().publish(found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_relist_replaces_the_objects_only_once_complete() {
        let mut mirror = Mirror::default();
        let mut objects = BTreeMap::new();
        let mut apply = |objects: &mut BTreeMap<_, _>, e| mirror.apply(objects, e, translate::service);
        assert!(apply(&mut objects, watcher::Event::Apply(named("a"))));
        assert!(apply(&mut objects, watcher::Event::Apply(named("b"))));
        // After a 410 Gone: a new list, in which `b` is gone and `c` appeared.
        assert!(!apply(&mut objects, watcher::Event::Init));
        assert!(!apply(&mut objects, watcher::Event::InitApply(named("a"))));
        assert!(!apply(&mut objects, watcher::Event::InitApply(named("c"))));
        let names = |o: &BTreeMap<Key, _>| o.keys().map(|(_, n)| n.clone()).collect::<Vec<String>>();
        assert_eq!(names(&objects), ["a", "b"], "what was known stays until the list completes");
        assert!(apply(&mut objects, watcher::Event::InitDone));
        assert_eq!(names(&objects), ["a", "c"]);
        assert!(apply(&mut objects, watcher::Event::Delete(named("a"))));
        assert!(
            !apply(&mut objects, watcher::Event::Delete(named("a"))),
            "deleting the unknown changes nothing"
        );
        assert_eq!(names(&objects), ["c"]);
    }
}
