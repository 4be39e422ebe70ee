//! Who is calling: a bearer token, proven against the admin token or a join token, and what
//! that caller may act for. The API proves the caller first, before it reads anything else of a
//! request (path, query or body), so a caller without a valid token learns nothing from the
//! difference between a 400 and a 404: it gets 401.

use std::collections::BTreeMap;

use super::error::{Error, Result};
use crate::model::TokenRecord;

/// A caller whose token checked out.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    /// A join token: one service's sidecars.
    Service(TokenRecord),
}

impl Caller {
    /// How the caller appears as the actor of the events it writes.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin => "admin".to_owned(),
            Self::Service(t) => format!("token {} ({}.{})", t.id, t.service, t.namespace),
        }
    }

    /// Admin operations: a join token is refused like no token at all.
    pub fn admin(&self) -> Result<String> {
        match self {
            Self::Admin => Ok(self.actor()),
            Self::Service(_) => Err(Error::Unauthorized),
        }
    }

    /// Whether the caller may act for `service.namespace`: the admin for any, a join token for
    /// its own.
    pub fn owns(&self, service: &str, namespace: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Service(t) => t.service == service && t.namespace == namespace,
        }
    }

    /// [`Caller::owns`], as the actor or a 403 that says whose token it is.
    pub fn act_for(&self, service: &str, namespace: &str) -> Result<String> {
        match self {
            Self::Service(t) if !self.owns(service, namespace) => Err(Error::Forbidden(format!(
                "it belongs to service {}.{}, not {service}.{namespace}",
                t.service, t.namespace
            ))),
            _ => Ok(self.actor()),
        }
    }
}

/// The token a caller presents, before it is checked against the join tokens.
pub enum Presented<'a> {
    Admin,
    Join { id: &'a str, secret: &'a str },
}

/// The admin token, kept only as a digest so comparing takes the same time whatever matches.
pub struct AdminToken {
    sha256: String,
}

impl AdminToken {
    pub fn new(token: &str) -> Self {
        Self { sha256: sha256_hex(token.as_bytes()) }
    }

    /// What a bearer token presents: the admin token, or a join token's id and secret; `None`
    /// for a token of neither shape.
    pub fn presented<'a>(&self, token: &'a str) -> Option<Presented<'a>> {
        if constant_time_eq(sha256_hex(token.as_bytes()).as_bytes(), self.sha256.as_bytes()) {
            return Some(Presented::Admin);
        }
        let (id, secret) = token.split_once('.')?;
        Some(Presented::Join { id, secret })
    }
}

/// The join token `id` with `secret`, if it is one of `tokens`.
pub fn join_token(tokens: &BTreeMap<String, TokenRecord>, id: &str, secret: &str) -> Option<TokenRecord> {
    let record = tokens.get(id)?;
    let hash = sha256_hex(secret.as_bytes());
    constant_time_eq(hash.as_bytes(), record.secret_sha256.as_bytes()).then(|| record.clone())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
