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

/// 9999-12-31T23:59:59Z, the last second RFC 3339 writes: the latest a token can expire.
const LAST_EXPIRY: u64 = 253_402_300_799;

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
        // Rounded up to the second, so a token lives at least its TTL; one reaching past the
        // last second an RFC 3339 date can name ends then (no arithmetic can overflow).
        let expires_at = req.ttl.map(|ttl| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let at = now.saturating_add(ttl.get());
            at.as_secs().saturating_add(u64::from(at.subsec_nanos() > 0)).min(LAST_EXPIRY)
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
        let pin = &self.serving_root;
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
