//! Proving a caller from the bearer token it presents (an expired token is refused like a
//! wrong one) or, failing that, from the mesh certificate its TLS connection presented; and what
//! a join token may reach: its own service's instances, and nothing that tells it what other
//! services have.

use std::time::SystemTime;

use rustls::pki_types::CertificateDer;

use super::caller::{stored_token, Caller, Presented};
use super::error::{Error, Result};
use super::plane::ControlPlane;

impl ControlPlane {
    /// Who is calling, from the bearer token presented (`None`: no token; 401 without a valid
    /// one). Knows tokens created through another replica by catching up with the log when the
    /// token is not known yet — only up to the head the store's watch has announced, so a
    /// made-up token costs no store read (it would be one per unauthenticated request) and hears
    /// 401, not 503, while the store is down.
    ///
    /// Without a valid token, a verified client certificate of this trust domain proves its
    /// workload as its service's join token would: a sidecar bootstraps with its join token and
    /// goes on with its mesh identity once the token expires (renewals included).
    ///
    /// With `--kubernetes`, a token that is none of the control plane's own is reviewed as a
    /// ServiceAccount token (which may act for any service of its namespace); a certificate
    /// proves its one workload either way.
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Caller> {
        match self.by_token(credentials.bearer).await {
            Err(Error::Unauthorized) => {
                if let Some(token) = credentials.bearer {
                    match self.reviews.account(token).await {
                        Ok(Some(account)) => return Ok(Caller::Account(account)),
                        Ok(None) => {}
                        Err(e) => return Err(Error::Unavailable(e.to_string())),
                    }
                }
                // Judged now, against the roots in force: an expired certificate, or one under
                // a retired root, proves nothing.
                let peer =
                    credentials.peer.and_then(|chain| self.ca.view().verify_client(chain, SystemTime::now()));
                // A certificate proves one workload, never a whole namespace: one issued to a
                // join token's service must not gain its namespace's other services (a
                // Kubernetes sidecar presents its reviewed token on every call anyway).
                match peer {
                    Some(peer) if peer.trust_domain() == self.trust_domain => Ok(Caller::workload(&peer)),
                    _ => Err(Error::Unauthorized),
                }
            }
            proven => proven,
        }
    }

    async fn by_token(&self, bearer: Option<&str>) -> Result<Caller> {
        match bearer.and_then(|token| self.admin_token.presented(token)) {
            None => Err(Error::Unauthorized),
            Some(Presented::Admin) => Ok(Caller::Admin),
            Some(Presented::Stored(parts)) => {
                if !self.state.read().await.tokens.contains_key(parts.id) {
                    let followed = *self.store.subscribe().borrow();
                    self.refresh_to(followed).await?;
                }
                let state = self.state.read().await;
                stored_token(&state.tokens, &parts, SystemTime::now()).ok_or(Error::Unauthorized)
            }
        }
    }

    /// Operations on a registered instance: the admin, or its own service's join token. To a
    /// join token another service's instance looks exactly like one that does not exist, so a
    /// token cannot probe which instances other services have; a sidecar whose lease lapsed
    /// hears 404 and registers again.
    pub(super) async fn authorize_endpoint(&self, caller: &Caller, id: &str) -> Result<String> {
        let state = self.state.read().await;
        match state.endpoints.get(id) {
            Some(e) if caller.owns(&e.service, &e.namespace) => Ok(caller.actor()),
            _ => Err(Error::NotFound(format!(
                "endpoint {id} (not registered for this token's service, or its lease lapsed: register again)"
            ))),
        }
    }
}

/// What a request proves its caller with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The bearer token of `Authorization`.
    pub bearer: Option<&'a str>,
    /// The client certificate chain its TLS connection presented, the leaf first (not yet
    /// verified: [`ControlPlane::authenticate`] does, against the roots in force).
    pub peer: Option<&'a [CertificateDer<'static>]>,
}
