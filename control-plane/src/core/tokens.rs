//! Tokens the admin creates: join tokens (one service's sidecars) and read-only tokens
//! (dashboards, CI), optionally expiring. The secret is shown once; the log keeps only its hash.
//! A token reads `ID.SECRET.FINGERPRINT`: the last part, the SHA-256 of the mesh CA's root, lets
//! whoever holds the token verify the control plane's TLS certificate with nothing else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::caller::sha256_hex;
use super::error::{Error, Result};
use super::plane::ControlPlane;
use crate::model::{kind, TokenKind, TokenRecord};
use crate::names::check_service;
use crate::store::AppendRequest;
use pilotfish_api::wire::{JoinToken, TokenRequest};

/// The longest a token's TTL may be: every expiry then stays a printable date.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl ControlPlane {
    pub async fn create_token(&self, actor: String, req: TokenRequest) -> Result<JoinToken> {
        let (service, namespace) = match (req.kind, req.service) {
            (TokenKind::Join, Some(service)) => {
                check_service(&service, &req.namespace).map_err(Error::BadRequest)?;
                (service, req.namespace)
            }
            (TokenKind::Join, None) => {
                return Err(Error::BadRequest("a join token names its service (`service`)".into()))
            }
            (TokenKind::ReadOnly, None) => (String::new(), String::new()),
            (TokenKind::ReadOnly, Some(_)) => {
                return Err(Error::BadRequest(
                    "a read-only token reads every service: leave out `service`".into(),
                ))
            }
        };
        if req.ttl.is_some_and(|ttl| ttl.get() > MAX_TOKEN_TTL) {
            return Err(Error::BadRequest(format!(
                "a token's ttl is at most {} (10 years): leave it out for a token that does not expire",
                humantime::format_duration(MAX_TOKEN_TTL)
            )));
        }
        // Rounded up to the second, so a token lives at least its TTL.
        let expires_at = req.ttl.map(|ttl| {
            let at = (SystemTime::now() + ttl.get()).duration_since(UNIX_EPOCH).unwrap_or_default();
            at.as_secs() + u64::from(at.subsec_nanos() > 0)
        });
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let record = TokenRecord {
            id: id.clone(),
            kind: req.kind,
            service: service.clone(),
            namespace: namespace.clone(),
            secret_sha256: sha256_hex(secret.as_bytes()),
            expires_at,
        };
        let data = serde_json::to_value(&record).expect("records serialize");
        let event = self
            .store
            .append(
                AppendRequest::new(format!("Token/{id}"), kind::TOKEN_CREATED, data, actor).expect_version(0),
            )
            .await?;
        self.settle().await;
        let named = |s: String| (!s.is_empty()).then_some(s);
        // The root a new client verifies this control plane's certificate against.
        let pin = &self.ca.root_fingerprints()[0];
        Ok(JoinToken {
            token: format!("{id}.{secret}.{pin}"),
            service: named(service),
            namespace: named(namespace),
            kind: req.kind,
            expires_at: expires_at.map(|at| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at)).to_string()
            }),
            seq: event.seq,
        })
    }
}
