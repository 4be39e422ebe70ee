//! Who is calling: a bearer token, proven against the admin token or a stored token (join or
//! read-only, unexpired), and what that caller may do. The API proves the caller first, before
//! it reads anything else of a request (path, query or body), so a caller without a valid token
//! learns nothing from the difference between a 400 and a 404: it gets 401.
//!
//! What each may do: the admin anything; a read-only token every read (the registry, the
//! configuration, the log, the proxies; no secret is readable through the API at all) and no
//! write (403, so the operator learns it holds the wrong token); a join token only what its
//! sidecar needs — anything else is refused like no token at all (401). A Kubernetes
//! ServiceAccount (`--kubernetes`, its token reviewed) may do what a join token of any service
//! of its namespace may: whoever can run a pod in a namespace can run it as any of the
//! namespace's accounts and service names, so the namespace is the boundary Kubernetes draws.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use pilotfish_api::wire::TokenParts;
use pilotfish_api::SpiffeId;

use super::error::{Error, Result};
use super::review::ServiceAccount;
use crate::model::{TokenKind, TokenRecord};

/// A caller whose token checked out.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    /// A read-only token: dashboards, CI.
    ReadOnly(TokenRecord),
    /// A join token: one service's sidecars.
    Service(TokenRecord),
    /// A Kubernetes ServiceAccount: the sidecars of its namespace's pods running as it.
    Account(ServiceAccount),
}

impl Caller {
    /// A workload proven by its mesh certificate: it may do what its service's join token may.
    pub fn workload(id: &SpiffeId) -> Self {
        Self::Service(TokenRecord {
            id: id.to_string(),
            kind: TokenKind::Join,
            service: id.service_account().to_owned(),
            namespace: id.namespace().to_owned(),
            secret_sha256: String::new(),
            expires_at: None,
        })
    }

    /// How the caller appears as the actor of the events it writes.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin => "admin".to_owned(),
            Self::ReadOnly(t) => format!("read-only token {}", t.id),
            // A workload proven by its certificate: the record's id is its SPIFFE ID.
            Self::Service(t) if t.secret_sha256.is_empty() => format!("mesh identity {}", t.id),
            Self::Service(t) => format!("token {} ({}.{})", t.id, t.service, t.namespace),
            Self::Account(a) => format!("service account {}/{}", a.namespace, a.name),
        }
    }

    /// Admin operations: a read-only token is forbidden them, a join token is refused like no
    /// token at all.
    pub fn admin(&self) -> Result<String> {
        match self {
            Self::Admin => Ok(self.actor()),
            Self::ReadOnly(_) => Err(Error::Forbidden(
                "it is read-only: writes need the admin token (--token or PILOTFISH_TOKEN)".into(),
            )),
            Self::Service(_) | Self::Account(_) => Err(Error::Unauthorized),
        }
    }

    /// Reads of the mesh's configuration, registry, log and proxies: the admin or a read-only
    /// token; a join token is refused like no token at all.
    pub fn reader(&self) -> Result<()> {
        match self {
            Self::Admin | Self::ReadOnly(_) => Ok(()),
            Self::Service(_) | Self::Account(_) => Err(Error::Unauthorized),
        }
    }

    /// Whether the caller may act for `service.namespace`: the admin for any, a join token for
    /// its own, a ServiceAccount for any of its namespace, a read-only token for none.
    pub fn owns(&self, service: &str, namespace: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::ReadOnly(_) => false,
            Self::Service(t) => t.service == service && t.namespace == namespace,
            Self::Account(a) => a.namespace == namespace,
        }
    }

    /// [`Caller::owns`], as the actor or a 403 that says whose token it is.
    pub fn act_for(&self, service: &str, namespace: &str) -> Result<String> {
        match self {
            Self::Service(t) if !self.owns(service, namespace) => Err(Error::Forbidden(format!(
                "it belongs to service {}.{}, not {service}.{namespace}",
                t.service, t.namespace
            ))),
            Self::Account(a) if !self.owns(service, namespace) => Err(Error::Forbidden(format!(
                "it is service account {}/{}, whose pods are services of namespace {}, not {namespace}",
                a.namespace, a.name, a.namespace
            ))),
            Self::ReadOnly(_) => Err(read_only_sidecar()),
            _ => Ok(self.actor()),
        }
    }
}

/// A read-only token used where a sidecar's join token belongs.
pub fn read_only_sidecar() -> Error {
    Error::Forbidden(
        "it is read-only: a sidecar needs its service's join token (pilotfish token create --service NAME)"
            .into(),
    )
}

/// The token a caller presents, before it is checked against the stored tokens.
pub enum Presented<'a> {
    Admin,
    Stored(TokenParts<'a>),
}

/// The admin token, kept only as a digest so comparing takes the same time whatever matches.
pub struct AdminToken {
    sha256: String,
}

impl AdminToken {
    pub fn new(token: &str) -> Self {
        Self { sha256: sha256_hex(token.as_bytes()) }
    }

    /// What a bearer token presents: the admin token, or a stored token's parts (the
    /// fingerprint is for the client and plays no part here); `None` for a token of neither
    /// shape.
    pub fn presented<'a>(&self, token: &'a str) -> Option<Presented<'a>> {
        if constant_time_eq(sha256_hex(token.as_bytes()).as_bytes(), self.sha256.as_bytes()) {
            return Some(Presented::Admin);
        }
        TokenParts::parse(token).map(Presented::Stored)
    }
}

/// The caller holding the token `id` with `secret`, if it is one of `tokens` and has not
/// expired at `now`.
pub fn stored_token(
    tokens: &BTreeMap<String, TokenRecord>,
    parts: &TokenParts<'_>,
    now: SystemTime,
) -> Option<Caller> {
    let record = tokens.get(parts.id)?;
    let hash = sha256_hex(parts.secret.as_bytes());
    if !constant_time_eq(hash.as_bytes(), record.secret_sha256.as_bytes()) {
        return None;
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if record.expires_at.is_some_and(|at| at <= now) {
        return None;
    }
    Some(match record.kind {
        TokenKind::Join => Caller::Service(record.clone()),
        TokenKind::ReadOnly => Caller::ReadOnly(record.clone()),
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
