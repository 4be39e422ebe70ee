//! The request as the next hop gets it: hop-by-hop fields out, the peer recorded (inbound), and
//! the URI, version and `Host` in the form the upstream protocol wants, carrying the authority
//! the request was routed by. Also the copies a retried request goes out as.

use http::header::{HeaderValue, EXPECT, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri};

use super::headers;
use super::pool::Version;
use super::request_body::RequestBody;
use crate::upstream::endpoint::EndpointRt;

/// Rewrites `req` for `endpoint`, spoken to in `version`; `authority` falls back to the
/// endpoint's address. With `upgrade`, a protocol switch is passed on.
pub fn prepare(
    req: &mut Request<RequestBody>,
    version: Version,
    endpoint: &EndpointRt,
    authority: Option<Authority>,
    upgrade: bool,
    forwarded_for: Option<std::net::IpAddr>,
) {
    headers::strip_hop_by_hop(req.headers_mut(), upgrade);
    // `100-continue` is answered to the client by this hop, when the body is first read.
    req.headers_mut().remove(EXPECT);
    if let Some(peer) = forwarded_for {
        headers::append_forwarded(req.headers_mut(), peer);
    }
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    let authority = authority
        .unwrap_or_else(|| Authority::try_from(endpoint.label.as_str()).expect("IP:PORT is an authority"));
    match version {
        Version::Http1 => {
            parts.scheme = None;
            parts.authority = None;
            *req.version_mut() = http::Version::HTTP_11;
            // Most requests were routed by their own (single) `Host`: it stays as it is.
            let mut hosts = req.headers().get_all(HOST).iter();
            let same = hosts.next().is_some_and(|h| h.as_bytes() == authority.as_str().as_bytes())
                && hosts.next().is_none();
            if !same {
                let host =
                    HeaderValue::from_str(authority.as_str()).expect("an authority is a valid header value");
                req.headers_mut().insert(HOST, host);
            }
        }
        Version::Http2 => {
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority);
            *req.version_mut() = http::Version::HTTP_2;
            req.headers_mut().remove(HOST);
        }
    }
    *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path make a URI");
}

/// Moves the parts out of `slot`, leaving empty ones (the request goes out once, unless it
/// comes back unsent).
pub fn take_parts(slot: &mut http::request::Parts) -> http::request::Parts {
    let mut taken = Request::new(()).into_parts().0;
    std::mem::swap(slot, &mut taken);
    taken
}

/// Another copy of a request kept for replay.
pub fn rebuild(template: &http::request::Parts, body: RequestBody) -> Request<RequestBody> {
    let mut req = Request::new(body);
    *req.method_mut() = template.method.clone();
    *req.uri_mut() = template.uri.clone();
    *req.version_mut() = template.version;
    *req.headers_mut() = template.headers.clone();
    req
}
