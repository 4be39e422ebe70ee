//! The HTTP version the caller's app spoke, carried across the mesh. Between two sidecars every
//! request travels over one multiplexed HTTP/2 connection; a request that left its app as
//! HTTP/1.1 is marked, and the callee's sidecar hands it to its own app as HTTP/1.1 again
//! (linkerd's `l5d-orig-proto`). The mark belongs to the sidecars: whatever a client sent is
//! removed, and it is honoured only on a mesh mTLS connection.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::pool::Version;

pub const ORIG_PROTO: HeaderName = HeaderName::from_static("pilotfish-orig-proto");
const HTTP1: HeaderValue = HeaderValue::from_static("HTTP/1.1");

/// Marks a request that goes out in `wire` while its app spoke `app`, or removes a mark a
/// client put there.
pub fn mark(headers: &mut HeaderMap, app: Version, wire: Version) {
    if app == Version::Http1 && wire == Version::Http2 {
        headers.insert(ORIG_PROTO, HTTP1);
    } else {
        headers.remove(ORIG_PROTO);
    }
}

/// The version the app behind this sidecar gets the request in, when a peer sidecar marked it
/// (`from_mesh`); the mark is removed either way.
pub fn take(headers: &mut HeaderMap, from_mesh: bool) -> Option<Version> {
    let marked = headers.remove(ORIG_PROTO)?;
    (from_mesh && marked == HTTP1).then_some(Version::Http1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http1_request_is_marked_over_http2_and_unmarked_at_the_callee() {
        let mut h = HeaderMap::new();
        mark(&mut h, Version::Http1, Version::Http2);
        assert_eq!(take(&mut h.clone(), true), Some(Version::Http1));
        // A mark that did not come from a sidecar is dropped and ignored.
        assert_eq!(take(&mut h, false), None);
        assert!(h.is_empty());
        h.insert(ORIG_PROTO, HTTP1);
        mark(&mut h, Version::Http2, Version::Http2);
        assert!(h.is_empty(), "a client's own mark does not travel");
        assert_eq!(take(&mut h, true), None);
    }
}
