//! `/v1/ca`: the mesh CA — certifying a sidecar's key for the identity its join token gives,
//! the trust bundle, and the CA's status.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use pilotfish_api::SpiffeId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{
    ApiError, BadRequest, Conflict, Forbidden, Internal, PayloadTooLarge, Unauthorized, Unavailable,
};
use super::extract::{credentials, Json, Reader, Shared};
use crate::core::Caller;
use pilotfish_api::wire::{CaStatus, CertifyRequest, CertifyResponse, RotateRequest};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(certify))
        .routes(routes!(bundle))
        .routes(routes!(status))
        .routes(routes!(rotate))
}

/// The caller as the workload its join token names, proven before the body is read (so refused
/// callers are counted whatever they sent).
struct Workload(SpiffeId);

impl FromRequestParts<Shared> for Workload {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, cp: &Shared) -> Result<Self, Self::Rejection> {
        Ok(Self(cp.workload(credentials(parts)).await?))
    }
}

/// Certify a sidecar's key: a leaf for the caller's own identity
///
/// The identity is `spiffe://<trust domain>/ns/<namespace>/sa/<service>` of the caller's join
/// token, whatever names the CSR asks for; only the CSR's public key is used, once its
/// signature verifies. The admin token has no identity (403).
#[utoipa::path(
    post, path = "/v1/ca/certify", tag = "ca",
    request_body = CertifyRequest,
    responses(
        (status = 200, description = "The leaf, its chain and the trust bundle", body = CertifyResponse),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn certify(
    Workload(identity): Workload,
    State(cp): State<Shared>,
    Json(req): Json<CertifyRequest>,
) -> Result<axum::Json<CertifyResponse>, ApiError> {
    Ok(axum::Json(cp.certify(&identity, &req).await?))
}

/// The trust bundle: PEM certificates of every root the mesh trusts
///
/// `text/plain`, one `CERTIFICATE` block per root (two during a root rotation), ready for
/// `curl -o bundle.pem` and `openssl verify -CAfile`. Any token: a sidecar's join token too.
#[utoipa::path(
    get, path = "/v1/ca/bundle", tag = "ca",
    responses(
        (status = 200, description = "The roots, PEM", body = String, content_type = "text/plain"),
        (status = 401, response = Unauthorized),
    ),
    security(("bearer" = [])),
)]
async fn bundle(_: Caller, State(cp): State<Shared>) -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], cp.ca_bundle())
}

/// The mesh CA: trust domain, certificate lifetime, roots and expiry
#[utoipa::path(
    get, path = "/v1/ca", tag = "ca",
    responses(
        (status = 200, description = "The CA's status", body = CaStatus),
        (status = 401, response = Unauthorized),
    ),
    security(("bearer" = [])),
)]
async fn status(_: Reader, State(cp): State<Shared>) -> axum::Json<CaStatus> {
    axum::Json(cp.ca_status().await)
}

/// Rotate the mesh's root: a new root and issuer, with no failed request
///
/// Starts a rotation and answers at once (202) with the CA's status; the control plane then
/// drives it through three phases, each an event in the log: the new root joins the trust
/// bundle (`CaRootAdded`); once every connected sidecar acknowledged that bundle, the new issuer
/// signs and sidecars renew at once (`CaIssuerActivated`); once every connected sidecar holds a
/// certificate under the new root and `overlap` has passed since the switch, the old root leaves
/// the bundle (`CaRootRetired`). `GET /v1/ca` shows the phase and what it waits for. 409 while a
/// rotation is under way, or when the CA was supplied with `--ca-cert/--ca-key`.
#[utoipa::path(
    post, path = "/v1/ca/rotate", tag = "ca",
    request_body = RotateRequest,
    responses(
        (status = 202, description = "The rotation started; the CA's status", body = CaStatus),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn rotate(
    caller: Caller,
    State(cp): State<Shared>,
    Json(req): Json<RotateRequest>,
) -> Result<(StatusCode, axum::Json<CaStatus>), ApiError> {
    Ok((StatusCode::ACCEPTED, axum::Json(cp.rotate(&caller, req).await?)))
}
