//! The inbound request path: from another sidecar straight to the local app (the app's own
//! port, or the port a redirected connection originally dialled) once authorization admits the
//! call and the caller is within its `{peer: true}` rate limit, the peer recorded in `x-forwarded-for` and `forwarded`, and its verified mesh identity
//! in `x-pilotfish-peer-identity` (never a value the client sent).

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use pilotfish_api::SpiffeId;

use super::body::ProxyBody;
use super::context::{authority_of, RequestContext};
use super::errors::ProxyError;
use super::headers;
use super::next_hop::prepare;
use super::orig_proto;
use super::pool::{Connect, Version};
use super::request_body::RequestBody;
use super::respond::{respond, Downstream};
use crate::authz::Call;
use crate::upstream::endpoint::EndpointRt;

/// The caller's verified mesh identity, as the app reads it.
pub const PEER_IDENTITY: HeaderName = HeaderName::from_static("x-pilotfish-peer-identity");

/// Sends `req` to the app: `adhoc` when the connection was for another port of the app's host.
pub async fn to_app(
    cx: RequestContext<'_>,
    adhoc: Option<&Arc<EndpointRt>>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(inbound) = &cx.snap.inbound else {
        return cx.refuse(&req, None, ProxyError::NoRoute("inbound".into()), &cx.snap.unrouted);
    };
    let authority = match authority_of(&req) {
        Ok(a) => a,
        Err(e) => return cx.refuse(&req, None, e, &inbound.local),
    };
    let endpoint = adhoc.unwrap_or(&inbound.app);
    // The version the calling app spoke, when a peer sidecar carried it over the mesh.
    let downstream =
        orig_proto::take(req.headers_mut(), cx.conn.peer.is_some()).unwrap_or(cx.conn.downstream);
    let record = cx.record_for(&req, authority.as_ref(), &cx.snap.name);
    let peer = cx.conn.peer.as_deref();
    let call =
        Call::Http { method: req.method().as_str(), path: req.uri().path(), port: endpoint.addr.port() };
    let decision = cx.snap.authz.check(peer, call);
    if !decision.allowed {
        let denial = cx.snap.authz.explain(decision, peer);
        tracing::debug!(client = %cx.conn.client, %denial, "inbound request denied");
        return cx.respond_local(ProxyError::Forbidden(denial.to_string()), &inbound.local, record);
    }
    if let Some(limit) = &inbound.rate_limit {
        if let Err(refused) = limit.check(cx.conn.client.ip(), peer, &req) {
            return cx.respond_local(ProxyError::RateLimited(refused), &inbound.local, record);
        }
    }
    let upgrade = downstream == Version::Http1 && headers::wants_upgrade(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = Request::from_parts(parts, RequestBody::streaming(body));
    prepare(&mut out, downstream, endpoint, authority, upgrade, Some(cx.conn.client.ip()));
    set_peer_identity(out.headers_mut(), cx.conn.peer_header.as_ref());
    let connect = Connect {
        timeout: cx.snap.sidecar.timeouts.connect.get(),
        open: &inbound.connections,
        max_open: usize::MAX,
        pending: &inbound.pending,
        max_pending: usize::MAX,
        mesh: None,
    };
    match endpoint.conns.send(downstream, Box::new(out), &connect).await {
        Ok(answer) => respond(&cx, answer, endpoint, &inbound.metrics, Downstream { record, on_upgrade }),
        Err(e) => cx.respond_local(ProxyError::from(e.error), &endpoint.metrics, record),
    }
}

/// The [`PEER_IDENTITY`] value of a connection from `peer`.
pub fn peer_header(peer: &SpiffeId) -> HeaderValue {
    HeaderValue::try_from(peer.to_string()).expect("a SPIFFE ID is a valid header value")
}

/// Replaces whatever the client sent as [`PEER_IDENTITY`] with the peer's (nothing for a
/// plaintext caller). After the hop-by-hop fields are gone, so a client's `Connection` header
/// cannot name it away.
fn set_peer_identity(headers: &mut HeaderMap, peer: Option<&HeaderValue>) {
    headers.remove(PEER_IDENTITY);
    if let Some(value) = peer {
        headers.insert(PEER_IDENTITY, value.clone());
    }
}

#[cfg(test)]
mod tests;
