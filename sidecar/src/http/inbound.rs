//! The inbound request path: from another sidecar straight to the local app (the app's own
//! port, or the port a redirected connection originally dialled), the peer recorded in
//! `x-forwarded-for` and `forwarded`.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::context::{authority_of, RequestContext};
use super::errors::ProxyError;
use super::headers;
use super::next_hop::prepare;
use super::orig_proto;
use super::pool::{Connect, Version};
use super::request_body::RequestBody;
use super::respond::{respond, Downstream};
use crate::upstream::endpoint::EndpointRt;

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
    let upgrade = downstream == Version::Http1 && headers::wants_upgrade(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = Request::from_parts(parts, RequestBody::streaming(body));
    prepare(&mut out, downstream, endpoint, authority, upgrade, Some(cx.conn.client.ip()));
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
