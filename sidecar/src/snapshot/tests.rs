//! The snapshot as the request path looks things up in it, and as reloads carry it over.

use std::sync::Arc;

use pilotfish_api::Protocol;

use super::build::BuildError;
use super::{Overrides, Snapshot};
use crate::telemetry::metrics::Metrics;

const CONFIG: &str = r#"
apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {name: web, namespace: shop}
spec: {outbound: {listen: 127.0.0.1:0}}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: users, namespace: shop}
spec:
  ports: [{port: 80, protocol: http}]
  addresses: [10.96.0.10]
  endpoints: [{address: 127.0.0.1:9001}, {address: 127.0.0.1:9002}]
  localPort: 18081
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: billing, namespace: other}
spec: {endpoints: [{address: 127.0.0.1:9003}]}
"#;

fn build() -> Snapshot {
    Snapshot::build("test.yaml", CONFIG, &Overrides::default(), None, &Metrics::new()).unwrap()
}

#[test]
fn resolves_service_host_names_like_cluster_dns() {
    let snap = build();
    for host in [
        "users",
        "users:80",
        "USERS.shop",
        "users.shop.svc",
        "users.shop.svc.cluster.local",
        "users.shop.svc.cluster.local.:80",
    ] {
        let svc = snap.service_by_authority(host).unwrap_or_else(|| panic!("{host}"));
        assert_eq!(&*svc.key, "users.shop");
    }
    // Short names only resolve in the sidecar's own namespace.
    assert!(snap.service_by_authority("billing").is_none());
    assert!(snap.service_by_authority("billing.other").is_some());
    assert!(snap.service_by_authority("nobody").is_none());
    for host in
        ["users.svc", "users.svc.cluster.local", "users.shop.cluster.local", "x.users.shop", "users..shop"]
    {
        assert!(snap.service_by_authority(host).is_none(), "{host}");
    }
}

#[test]
fn maps_virtual_addresses_and_local_ports() {
    let snap = build();
    let (svc, proto) = snap.service_by_addr("10.96.0.10:80".parse().unwrap()).unwrap();
    assert_eq!((&*svc.key, proto), ("users.shop", Some(Protocol::Http)));
    assert!(snap.service_by_addr("10.96.0.10:81".parse().unwrap()).is_none());
    assert_eq!(snap.local_ports, vec![(18081, Arc::from("users.shop"))]);
}

#[test]
fn reload_keeps_endpoint_pools_and_bumps_version() {
    let metrics = Metrics::new();
    let first = Snapshot::build("t", CONFIG, &Overrides::default(), None, &metrics).unwrap();
    let a = &first.service("users.shop").unwrap().endpoints[0].conns;
    let second = Snapshot::build("t", CONFIG, &Overrides::default(), Some(&first), &metrics).unwrap();
    assert_eq!(second.version, 2);
    let b = &second.built_services().next().expect("a service in use is built on reload").endpoints[0].conns;
    assert!(Arc::ptr_eq(a, b));
}

#[test]
fn builds_a_service_when_first_needed() {
    let metrics = Metrics::new();
    let snap = Snapshot::build("t", CONFIG, &Overrides::default(), None, &metrics).unwrap();
    let series = || String::from_utf8_lossy(&metrics.encode()).contains("users.shop");
    assert_eq!(snap.built_services().count(), 0);
    assert!(!series(), "no series for a service nothing called");
    let users = snap.service_by_authority("users").unwrap();
    assert!(Arc::ptr_eq(users, snap.service("users.shop").unwrap()), "built once");
    assert_eq!(snap.built_services().count(), 1);
    assert!(series());
    let reloaded = Snapshot::build("t", CONFIG, &Overrides::default(), Some(&snap), &metrics).unwrap();
    let keys: Vec<_> = reloaded.built_services().map(|s| s.key.clone()).collect();
    assert_eq!(keys, [Arc::from("users.shop")], "a reload builds what was in use, and only that");
}

#[test]
fn endpoint_churn_does_not_grow_the_metrics() {
    let metrics = Metrics::new();
    let config = |port: u32| {
        format!(
            "apiVersion: pilotfish.io/v1alpha1\nkind: Service\nmetadata: {{name: users}}\nspec: {{endpoints: [{{address: 127.0.0.1:{port}}}]}}\n"
        )
    };
    let series = |text: &[u8]| String::from_utf8_lossy(text).lines().filter(|l| !l.starts_with('#')).count();
    let mut snap = Snapshot::build("t", &config(1000), &Overrides::default(), None, &metrics).unwrap();
    let mut first = None;
    for cycle in 0..3000u32 {
        let next = Snapshot::build("t", &config(1001 + cycle), &Overrides::default(), Some(&snap), &metrics)
            .unwrap();
        let endpoint = &next.service("users.default").unwrap().endpoints[0];
        endpoint.metrics.record(http::StatusCode::OK);
        endpoint.metrics.record(http::StatusCode::from_u16(418).unwrap());
        metrics.retire(&next.live_series());
        snap = next;
        first.get_or_insert_with(|| series(&metrics.encode()));
    }
    let text = metrics.encode();
    assert_eq!(series(&text), first.unwrap(), "3,000 endpoint changes later, the same number of series");
    assert!(
        !String::from_utf8_lossy(&text).contains("127.0.0.1:1001\""),
        "a departed endpoint's series are gone"
    );
}

#[test]
fn overrides_win_over_the_file() {
    let o = Overrides {
        app: Some("127.0.0.1:8080".parse().unwrap()),
        inbound: Some("127.0.0.1:7000".parse().unwrap()),
        opaque_ports: Some(vec![3306, 5432]),
        ..Overrides::default()
    };
    let snap = Snapshot::build("t", CONFIG, &o, None, &Metrics::new()).unwrap();
    let inbound = snap.sidecar.inbound.as_ref().unwrap();
    assert_eq!((inbound.listen.port(), inbound.app.port()), (7000, 8080));
    assert_eq!(inbound.opaque_ports, [3306, 5432]);

    let o = Overrides { inbound: o.inbound, ..Overrides::default() };
    assert!(matches!(Snapshot::build("t", CONFIG, &o, None, &Metrics::new()), Err(BuildError::Conflict(_))));
    let o = Overrides { opaque_ports: Some(vec![3306]), ..Overrides::default() };
    assert!(matches!(Snapshot::build("t", CONFIG, &o, None, &Metrics::new()), Err(BuildError::Conflict(_))));
}

#[test]
fn a_service_first_called_during_a_reload_keeps_its_state() {
    let metrics = Metrics::new();
    let old = Snapshot::build("test.yaml", CONFIG, &Overrides::default(), None, &metrics).unwrap();
    let text = format!("{CONFIG}# changed\n");
    let new = Snapshot::build("test.yaml", &text, &Overrides::default(), Some(&old), &metrics).unwrap();
    // The first call lands on the old snapshot after the new one was built from it.
    let first = old.service("users.shop").unwrap().clone();
    new.catch_up(&old);
    let carried = new.built("users.shop").expect("built by the catch-up");
    assert!(Arc::ptr_eq(&first.budget, &carried.budget), "the retry budget carries over");
    assert!(Arc::ptr_eq(&first.in_flight, &carried.in_flight), "in-flight requests carry over");
    assert!(new.built("billing.other").is_none(), "what nothing called stays unbuilt");
}
