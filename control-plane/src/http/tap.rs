//! `/v1/tap`, `/v1/proxies/{id}/tap`: an operator's live stream of a service's requests, and
//! the sidecars' reports of the requests they recorded for it.
//!
//! The stream is newline-delimited JSON, one `TapMessage` per line, with an empty line every
//! [`KEEPALIVE`] so a client that went away is noticed within about a second (its tap then
//! closes and the sidecars stop recording). It ends after `max` events, after
//! [`TAP_TIME_LIMIT`], or when the control plane stops, with an `end` line saying which.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{
    ApiError, BadRequest, Forbidden, PayloadTooLarge, TooManyRequests, Unauthorized, Unavailable,
};
use super::extract::{Json, Path, Query, Shared};
use crate::core::{Caller, TapSession};
use crate::ndjson::{self, line, LineSender, KEEPALIVE_LINE};
use pilotfish_api::wire::{AckQuery, TapEnd, TapMessage, TapQuery, TapReport};

/// An empty line this often: a write to a client that went away fails, which closes its tap.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How long one tap lasts at most.
pub const TAP_TIME_LIMIT: Duration = Duration::from_secs(3600);
/// A write that does not complete in this long means the client is gone or not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(tap)).routes(routes!(report_tap))
}

/// A live stream of a service's requests (admin token)
///
/// Newline-delimited JSON: one `TapMessage` per line (a request its sidecars recorded, events
/// dropped because this client read too slowly, or the end and why), an empty line about every
/// second as a keepalive. The service's sidecars record inbound and outbound requests that
/// match, at most 100 a second each. Only the sidecars connected to this control-plane replica
/// are tapped. A tap lasts an hour at most; 64 may be open at once.
#[utoipa::path(
    get, path = "/v1/tap", tag = "stats",
    params(TapQuery),
    responses(
        (status = 200, description = "The stream: one TapMessage per line", body = TapMessage, content_type = "application/x-ndjson"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn tap(
    caller: Caller,
    State(cp): State<Shared>,
    Query(q): Query<TapQuery>,
) -> Result<Response, ApiError> {
    let session = cp.tap(&caller, q)?;
    let stop = cp.stopping();
    Ok(ndjson::respond(|tx| stream(session, tx, stop)))
}

/// Requests a sidecar recorded for the taps open on its service
///
/// At most 200 events. They go to the taps on the service the caller's token acts for.
#[utoipa::path(
    post, path = "/v1/proxies/{id}/tap", tag = "stats",
    params(
        ("id" = String, Path, description = "The sidecar's id", min_length = 1, max_length = 253, pattern = r"^[!-~]+$"),
        AckQuery,
    ),
    request_body = TapReport,
    responses(
        (status = 204, description = "Handed to the taps"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn report_tap(
    caller: Caller,
    State(cp): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<AckQuery>,
    Json(report): Json<TapReport>,
) -> Result<impl IntoResponse, ApiError> {
    cp.report_tap(&caller, &id, q, report)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends the session's events until it ends or the client goes away (dropping the session
/// closes the tap).
async fn stream(mut session: TapSession, mut tx: LineSender, stop: CancellationToken) {
    let deadline = Instant::now() + TAP_TIME_LIMIT;
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0;
    let end = loop {
        let delivered = tokio::select! {
            _ = stop.cancelled() => break TapEnd::Stopping,
            _ = tokio::time::sleep_until(deadline) => break TapEnd::TimeLimit,
            _ = keepalive.tick() => send(&mut tx, KEEPALIVE_LINE).await,
            event = session.events.recv() => {
                // The table holds the sender for as long as the session lives.
                let Some(event) = event else { return };
                let dropped = session.take_dropped();
                let told = dropped == 0 || send(&mut tx, line(&TapMessage::Dropped(dropped))).await;
                sent += 1;
                told && send(&mut tx, line(&TapMessage::Event(event))).await
            }
        };
        if !delivered {
            return;
        }
        if session.max.is_some_and(|max| sent >= max) {
            break TapEnd::Max;
        }
    };
    send(&mut tx, line(&TapMessage::End(end))).await;
}

/// Sends `data` on the stream; `false` when the client is gone or too slow to take it.
async fn send(tx: &mut LineSender, data: Bytes) -> bool {
    ndjson::send(tx, data, SEND_TIMEOUT).await
}
