//! Whether a policy's rules match one call: a rule matches when its `from` and its `to` both do,
//! a list when any entry does (an empty one always), and the policy when any rule does.
//!
//! Some conditions cannot be judged on a call: a path or method on an opaque TCP connection, and
//! a path the app may read as another one (a dot segment, `//`, a backslash, `;`, or a
//! percent-encoded letter, digit or separator — `/api/../admin`, `/%61dmin`). Such a condition
//! fails closed: a DENY rule counts it as matched, an ALLOW rule as not. So a DENY on `/admin*`
//! cannot be walked around by spelling the path differently, and a TCP connection is denied by
//! any DENY rule its caller and port match.
//!
//! A caller's identity is matched part by part against a pattern's text, so a check never
//! formats the identity (no allocation per call).

use pilotfish_api::authz::{AuthorizationAction, AuthorizationRule, OperationMatch, Pattern, SourceMatch};
use pilotfish_api::SpiffeId;

/// A call to authorize, as the inbound path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call<'a> {
    /// An HTTP request: its method, its path (a query after `?` is ignored), the service port.
    Http { method: &'a str, path: &'a str, port: u16 },
    /// An opaque TCP connection to a service port.
    Tcp { port: u16 },
}

impl Call<'_> {
    fn port(&self) -> u16 {
        match self {
            Self::Http { port, .. } | Self::Tcp { port } => *port,
        }
    }
}

/// Whether any of `rules` (of a policy with `action`) matches a call from `peer` (its verified
/// identity; `None`: plaintext).
pub fn rules_match(
    rules: &[AuthorizationRule],
    action: AuthorizationAction,
    peer: Option<&SpiffeId>,
    call: Call<'_>,
) -> bool {
    rules.iter().any(|rule| from_matches(&rule.from, peer) && to_matches(&rule.to, action, call))
}

/// A caller without an identity matches no identity pattern, not even `*`.
fn from_matches(from: &[SourceMatch], peer: Option<&SpiffeId>) -> bool {
    from.is_empty() || peer.is_some_and(|id| from.iter().any(|source| identity_matches(&source.identity, id)))
}

/// Whether `id`, spelled as its SPIFFE ID, is `pattern`'s text (exact) or starts with it
/// (prefix): the text is walked against the ID's parts in the order they are spelled.
fn identity_matches(pattern: &Pattern, id: &SpiffeId) -> bool {
    let (mut rest, exact) = match pattern {
        Pattern::Exact(text) => (text.as_str(), true),
        Pattern::Prefix(text) => (text.as_str(), false),
    };
    let parts = ["spiffe://", id.trust_domain(), "/ns/", id.namespace(), "/sa/", id.service_account()];
    for part in parts {
        if !exact && rest.len() <= part.len() {
            return part.starts_with(rest);
        }
        match rest.strip_prefix(part) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

fn to_matches(to: &[OperationMatch], action: AuthorizationAction, call: Call<'_>) -> bool {
    to.is_empty() || to.iter().any(|op| operation_matches(op, action, call))
}

fn operation_matches(op: &OperationMatch, action: AuthorizationAction, call: Call<'_>) -> bool {
    let undecidable = action == AuthorizationAction::Deny;
    if !op.ports.is_empty() && !op.ports.contains(&call.port()) {
        return false;
    }
    match call {
        Call::Tcp { .. } => !op.is_http_only() || undecidable,
        Call::Http { method, path, .. } => {
            let path = path.split_once('?').map_or(path, |(path, _query)| path);
            let method_matches = op.methods.is_empty() || op.methods.iter().any(|m| m == method);
            let path_matches = op.paths.is_empty()
                || if ambiguous(path) { undecidable } else { op.paths.iter().any(|p| p.matches(path)) };
            method_matches && path_matches
        }
    }
}

/// Whether the app may read `path` as another path than its bytes spell (see the module doc).
fn ambiguous(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.contains(&b'\\')
        || bytes.contains(&b';')
        || path.contains("//")
        || path.split('/').any(|segment| segment == "." || segment == "..")
        || bytes.windows(3).any(|w| w[0] == b'%' && decodes_to_meaningful(w[1], w[2]))
}

/// `%XX` that decodes to a letter, digit, `-._~`, `/` or `\` (what a path pattern can name), or
/// to `%` itself, which an app that decodes twice reads as one of those (`/%252e%252e/admin`).
fn decodes_to_meaningful(high: u8, low: u8) -> bool {
    let hex = |b: u8| (b as char).to_digit(16);
    let (Some(high), Some(low)) = (hex(high), hex(low)) else { return false };
    let byte = (high * 16 + low) as u8;
    byte.is_ascii_alphanumeric() || b"-._~/\\%".contains(&byte)
}
