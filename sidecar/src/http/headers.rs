//! Header rules a proxy owes the hops on either side: hop-by-hop fields (RFC 9110 §7.6.1) are not
//! forwarded, inbound requests record the peer in `x-forwarded-for` and `forwarded` (RFC 7239),
//! and rate-limited routes tell clients their budget (`RateLimit-*`).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::resilience::ratelimit::limiter::Decision;

/// How many [`HOP_BY_HOP`] names there are (a const array of `HeaderName`s has no const `len`).
const HOP_BY_HOP_COUNT: usize = 6;

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the
/// non-standard ones still seen in the wild). `Trailer` is end-to-end and stays.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop fields, and any field the `Connection` header names. With `keep_upgrade`
/// (a protocol switch being proxied) `Connection: upgrade` and `Upgrade` stay. `TE: trailers`
/// stays too: it is how gRPC says it understands trailers, and HTTP/2 allows exactly that value.
///
/// Runs twice per request (request and response), and most messages carry none of these fields
/// or only `Connection: keep-alive`: one pass over the names finds which are there, where a
/// `remove` of each would hash and probe for it (measured with `benches/instructions.sh`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // Fields `Connection` names besides the hop-by-hop ones (rare: a parsed name allocates).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.eq_ignore_ascii_case("close") && !HOP_BY_HOP.iter().any(|h| t.eq_ignore_ascii_case(h.as_str()))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")));
    let upgrade = keep_upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// Appends the peer to `x-forwarded-for` and `forwarded` (creating them when absent).
pub fn append_forwarded(headers: &mut HeaderMap, peer: IpAddr) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = peer.to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
    // RFC 7239: IPv6 addresses are quoted and bracketed.
    let node = match peer {
        IpAddr::V4(_) => ip,
        IpAddr::V6(_) => format!("\"[{ip}]\""),
    };
    if let Ok(v) = HeaderValue::from_str(&format!("for={node};proto=http")) {
        headers.append(header::FORWARDED, v);
    }
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` of the binding budget among `decisions`.
pub fn add_rate_limit_headers(headers: &mut HeaderMap, decisions: &[Decision]) {
    // The most restrictive budget is the one a client needs to know about: the least remaining,
    // among equals the one that takes longest to give quota back.
    let Some(d) = decisions.iter().min_by(|a, b| a.remaining.cmp(&b.remaining).then(b.reset.cmp(&a.reset)))
    else {
        return;
    };
    headers.insert("ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    let reset = d.reset.as_secs() + u64::from(d.reset.subsec_nanos() > 0);
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip, trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn connection_may_name_hop_by_hop_fields_in_any_case_and_close() {
        let mut h = map(&[("connection", "Keep-Alive, close, X-Other"), ("x-other", "1"), ("x-kept", "yes")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut untouched = map(&[("x-kept", "yes"), ("content-length", "3")]);
        strip_hop_by_hop(&mut untouched, false);
        assert_eq!(untouched.len(), 2);
    }

    #[test]
    fn every_connection_line_counts_and_te_trailers_survives_being_named() {
        let mut h = map(&[
            ("connection", "x-one"),
            ("connection", "TE, x-two"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!((h["x-kept"].to_str().unwrap(), h["te"].to_str().unwrap()), ("yes", "trailers"));
    }

    #[test]
    fn upgrade_survives_only_when_proxied() {
        let req = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&req));
        let mut kept = req.clone();
        strip_hop_by_hop(&mut kept, true);
        assert_eq!(
            (kept["connection"].to_str().unwrap(), kept["upgrade"].to_str().unwrap()),
            ("upgrade", "websocket")
        );
        let mut dropped = req;
        strip_hop_by_hop(&mut dropped, false);
        assert!(dropped.is_empty());
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.7")]);
        append_forwarded(&mut h, "10.0.0.1".parse().unwrap());
        append_forwarded(&mut h, "::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.1, ::1");
        let fwd: Vec<_> = h.get_all("forwarded").iter().collect();
        assert_eq!(fwd, ["for=10.0.0.1;proto=http", "for=\"[::1]\";proto=http"]);
    }
}
