use std::time::Duration;

use pilotfish_api::wire::{
    BreakersOpen, EdgeCounts, EdgeDirection, EdgePeer, EdgeReport, StatsBy, StatsReport, StatsSide,
};

use super::window::RETAIN_SECONDS;
use super::*;

fn reporter(service: &str, proxy: &str) -> Reporter {
    Reporter { service: service.into(), namespace: "default".into(), proxy: proxy.into(), identity: None }
}

fn report(to: &str, requests: u64, successes: u64) -> StatsReport {
    StatsReport::new(
        None,
        vec![EdgeReport {
            direction: EdgeDirection::Outbound,
            peer: EdgePeer { service: to.into(), namespace: "default".into(), identity: None },
            route: None,
            secured: false,
            counts: EdgeCounts { requests, successes, latency: vec![(3, requests)], ..EdgeCounts::default() },
        }],
        0,
    )
}

#[tokio::test(start_paused = true)]
async fn traffic_older_than_the_window_is_not_counted() {
    let t = Telemetry::default();
    t.ingest(&reporter("web", "web-1"), &report("users", 100, 90));
    tokio::time::sleep(Duration::from_secs(4)).await;
    t.ingest(&reporter("web", "web-1"), &report("users", 10, 10));
    let row = |secs| t.rows(secs, StatsSide::Client, StatsBy::Service, Some("users")).remove(0).golden;
    assert_eq!((row(5).requests, row(5).successes), (110, 100));
    assert_eq!(row(5).p50_ms, Some(5), "bucket 3's upper bound");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(row(5).requests, 10, "the first report is 5 s old");
    assert_eq!(row(60).requests, 110);
    assert_eq!(row(60).rps, 110.0 / 60.0);
}

#[tokio::test(start_paused = true)]
async fn sidecars_that_stop_reporting_age_out() {
    let t = Telemetry::default();
    t.ingest(&reporter("web", "web-1"), &report("users", 1, 1));
    t.ingest(&reporter("web", "web-2"), &report("users", 1, 1));
    let meshed = |t: &Telemetry| {
        t.rows(60, StatsSide::Client, StatsBy::Service, Some("web")).remove(0).meshed.unwrap()
    };
    assert_eq!(meshed(&t), Meshed { current: 2, total: 2 });
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        t.ingest(&reporter("web", "web-1"), &StatsReport::new(None, vec![], 0));
    }
    assert_eq!(meshed(&t), Meshed { current: 1, total: 2 }, "web-2 stopped 12 s ago");
    tokio::time::sleep(Duration::from_secs(RETAIN_SECONDS)).await;
    assert!(t.rows(3600, StatsSide::Client, StatsBy::Service, None).is_empty(), "everything aged out");
    assert!(t.lock().sidecars.is_empty() && t.lock().edges.is_empty());
}

#[tokio::test(start_paused = true)]
async fn edges_name_both_sides_and_are_bounded() {
    let t = Telemetry::default();
    let mut web = reporter("web", "web-1");
    web.identity = Some("spiffe://td/ns/default/sa/web".into());
    let mut secured = report("users", 4, 3);
    secured.edges[0].secured = true;
    secured.edges[0].peer.identity = Some("spiffe://td/ns/default/sa/users".into());
    t.ingest(&web, &secured);
    let rows = t.rows(60, StatsSide::Client, StatsBy::Edge, Some("users"));
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.src.as_deref(), row.dst.as_deref(), row.secured),
        (Some("web.default"), Some("users.default"), Some(true))
    );
    assert_eq!(row.src_identity.as_deref(), Some("spiffe://td/ns/default/sa/web"));
    assert_eq!(row.golden.success_rate, Some(0.75));
    for i in 0..MAX_EDGES + 5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        t.ingest(&web, &report(&format!("s{i}"), 1, 1));
    }
    assert_eq!(t.lock().edges.len(), MAX_EDGES);
    assert!(
        t.rows(3600, StatsSide::Client, StatsBy::Edge, Some("users")).is_empty(),
        "the oldest edge was evicted"
    );
}

#[tokio::test(start_paused = true)]
async fn the_server_side_is_what_destinations_saw_and_the_caller_is_its_identity() {
    let t = Telemetry::default();
    let mut users = reporter("users", "users-1");
    users.identity = Some("spiffe://td/ns/default/sa/users".into());
    let mut inbound = report("web", 12, 11);
    inbound.edges[0].direction = EdgeDirection::Inbound;
    inbound.edges[0].secured = true;
    inbound.edges[0].peer.identity = Some("spiffe://td/ns/default/sa/web".into());
    // A plaintext caller is no service.
    let mut plaintext = report("", 3, 3);
    plaintext.edges[0].direction = EdgeDirection::Inbound;
    inbound.edges.push(plaintext.edges.remove(0));
    t.ingest(&users, &inbound);
    t.ingest(&reporter("web", "web-1"), &report("users", 10, 9));

    let service = |side| t.rows(60, side, StatsBy::Service, Some("users")).remove(0).golden.requests;
    assert_eq!((service(StatsSide::Client), service(StatsSide::Server)), (10, 15));
    let edges = t.rows(60, StatsSide::Server, StatsBy::Edge, Some("users"));
    let ends: Vec<_> = edges.iter().map(|r| (r.src.as_deref(), r.dst.as_deref(), r.secured)).collect();
    assert_eq!(
        ends,
        [
            (Some(""), Some("users.default"), Some(false)),
            (Some("web.default"), Some("users.default"), Some(true))
        ]
    );
    assert_eq!(edges[1].dst_identity.as_deref(), Some("spiffe://td/ns/default/sa/users"));
    assert_eq!(edges[1].src_identity.as_deref(), Some("spiffe://td/ns/default/sa/web"));
    assert_eq!(t.rows(60, StatsSide::Client, StatsBy::Edge, Some("users")).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn breakers_open_are_the_most_of_any_sidecars_latest_report() {
    let t = Telemetry::default();
    let open = |n| {
        let mut r = report("users", 1, 1);
        r.breakers = vec![BreakersOpen { service: "users".into(), namespace: "default".into(), open: n }];
        r
    };
    t.ingest(&reporter("web", "web-1"), &open(2));
    t.ingest(&reporter("web", "web-2"), &open(1));
    t.ingest(&reporter("api", "api-1"), &open(3));
    let breakers = |by, svc: &str| -> Vec<u64> {
        t.rows(60, StatsSide::Client, by, Some(svc)).iter().map(|r| r.breakers_open).collect()
    };
    assert_eq!(breakers(StatsBy::Service, "users"), [3]);
    assert_eq!(breakers(StatsBy::Route, "users"), [3]);
    assert_eq!(breakers(StatsBy::Edge, "web"), [2], "web's sidecars keep at most 2 open");
    assert_eq!(t.rows(60, StatsSide::Server, StatsBy::Service, Some("users")).len(), 0, "no server side");
    // A later report without users: its breakers closed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.ingest(&reporter("api", "api-1"), &report("users", 1, 1));
    assert_eq!(breakers(StatsBy::Service, "users"), [2]);
    // web's reports fall out of a 5 s window.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rows = t.rows(5, StatsSide::Client, StatsBy::Service, Some("users"));
    assert_eq!(rows[0].breakers_open, 0, "{rows:?}");
    assert_eq!(t.lock().breaker_entries, 2);
}
