//! The token API's messages: a request for a join token (one service's sidecars) or a
//! read-only token (dashboards, CI), optionally expiring, and the token, shown once; and how a
//! token's text splits into its id, secret and the pinned CA fingerprint.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::protocol::default_namespace;
use crate::Duration;

/// What a token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TokenKind {
    /// One service's sidecars: their push stream, their own registrations and ACKs, their
    /// certificates and the trust bundle.
    #[default]
    Join,
    /// Reads everything but secrets; writes nothing.
    ReadOnly,
}

/// `POST /v1/tokens` body. Without `kind`, a join token (what releases before read-only
/// tokens always asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// The service a join token is for; a read-only token names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "is_join")]
    pub kind: TokenKind,
    /// How long the token works (e.g. `24h`), rounded up to whole seconds; omitted: it does
    /// not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}

fn is_join(kind: &TokenKind) -> bool {
    *kind == TokenKind::Join
}

impl TokenRequest {
    /// A join token for `service.namespace`, valid until further notice.
    pub fn join(service: &str, namespace: &str) -> Self {
        Self {
            service: Some(service.to_owned()),
            namespace: namespace.to_owned(),
            kind: TokenKind::Join,
            ttl: None,
        }
    }
}

/// `POST /v1/tokens` answer (201). The secret is in `token` only here: the log keeps its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    /// `<id>.<secret>.<fingerprint>` (see [`TokenParts`]): what `pilotfish sidecar --token`
    /// and `--token` of the other commands take.
    pub token: String,
    /// A join token's service (absent for a read-only token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "is_join")]
    pub kind: TokenKind,
    /// When the token stops working (RFC 3339); absent: it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub seq: u64,
}

/// A token's text split at its dots: `ID.SECRET`, or `ID.SECRET.FINGERPRINT` where the
/// fingerprint is the SHA-256 (hex) of the mesh CA's root the control plane presents, so a
/// new sidecar can verify the control plane's certificate with nothing but its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenParts<'a> {
    pub id: &'a str,
    pub secret: &'a str,
    pub fingerprint: Option<&'a str>,
}

impl<'a> TokenParts<'a> {
    /// `None` for text of neither shape (an admin token, a typo): such a token is refused as a
    /// whole, never half-read.
    pub fn parse(token: &'a str) -> Option<Self> {
        let mut parts = token.split('.');
        let (id, secret) = (parts.next()?, parts.next()?);
        let fingerprint = parts.next();
        if parts.next().is_some() || id.is_empty() || secret.is_empty() {
            return None;
        }
        if fingerprint.is_some_and(|f| !is_fingerprint(f)) {
            return None;
        }
        Some(Self { id, secret, fingerprint })
    }
}

/// Whether `text` is a SHA-256 fingerprint as tokens and `--ca-fingerprint` carry it: 64
/// lowercase hex digits.
pub fn is_fingerprint(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::round_trip;

    #[test]
    fn token_requests_and_tokens_round_trip() {
        round_trip::<TokenRequest>(json!({ "service": "web", "namespace": "shop" }));
        let bare: TokenRequest = serde_json::from_value(json!({ "service": "web" })).unwrap();
        assert_eq!(bare, TokenRequest::join("web", "default"));
        round_trip::<TokenRequest>(json!({ "namespace": "default", "kind": "readOnly", "ttl": "1h" }));
        round_trip::<JoinToken>(
            json!({ "token": "abc.def", "service": "web", "namespace": "default", "seq": 2 }),
        );
        round_trip::<JoinToken>(json!({
            "token": "abc.def", "kind": "readOnly", "expiresAt": "2026-12-02T07:00:00Z", "seq": 3
        }));
    }

    #[test]
    fn tokens_split_into_id_secret_and_an_optional_fingerprint() {
        let fp = "ab".repeat(32);
        assert_eq!(
            TokenParts::parse("id.secret"),
            Some(TokenParts { id: "id", secret: "secret", fingerprint: None })
        );
        let pinned = format!("id.secret.{fp}");
        assert_eq!(
            TokenParts::parse(&pinned),
            Some(TokenParts { id: "id", secret: "secret", fingerprint: Some(&fp) })
        );
        for bad in [
            "admin-token".to_owned(),
            ".secret".to_owned(),
            "id.".to_owned(),
            "id.secret.not-hex".to_owned(),
            format!("id.secret.{}", "AB".repeat(32)),
            format!("id.secret.{fp}.more"),
            format!("id.secret.{}", &fp[..62]),
        ] {
            assert_eq!(TokenParts::parse(&bad), None, "{bad}");
        }
    }
}
