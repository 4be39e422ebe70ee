//! A Kubernetes ServiceAccount token as a sidecar's credential (`--kubernetes`): the token is
//! checked by whoever can (a TokenReview, see `kubernetes::review`) behind [`ReviewTokens`], and
//! the caller is the account the review names, never what the sidecar claims. Answers are kept
//! for a short while, so a sidecar's calls (push, ACKs, certificates) do not each cost the API
//! server a review, and a flood of made-up tokens costs it one review per token, not per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::caller::sha256_hex;

/// The audience a sidecar's projected token must be for: a token for the API server (or any
/// other audience) is refused, so one leaked from elsewhere does not get a mesh identity.
pub const AUDIENCE: &str = "pilotfish";

/// A ServiceAccount a review proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    /// The account of a reviewed user name, `system:serviceaccount:<ns>:<name>`; `None` for any
    /// other user (a person, a node): only service accounts are workloads.
    pub fn from_username(username: &str) -> Option<Self> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains(':'))
            .then(|| Self { namespace: namespace.to_owned(), name: name.to_owned() })
    }
}

/// The reviewer could not answer (the API server is unreachable, or refused the review itself):
/// the caller hears 503 and retries, rather than 401 for a token that may be good.
#[derive(Debug, thiserror::Error)]
#[error("cannot review the ServiceAccount token: {0}")]
pub struct ReviewError(pub String);

/// Checks a bearer token: `Ok(Some(account))` when it is a valid token of `account` for
/// [`AUDIENCE`], `Ok(None)` when it is not.
#[async_trait::async_trait]
pub trait ReviewTokens: Send + Sync {
    async fn review(&self, token: &str) -> Result<Option<ServiceAccount>, ReviewError>;
}

/// How long an answer is kept. Short: a deleted ServiceAccount or pod stops proving its caller
/// within it (a projected token itself lives an hour at least).
const KEEP_ACCEPTED: Duration = Duration::from_secs(60);
const KEEP_REFUSED: Duration = Duration::from_secs(10);
/// Answers kept at most; past it, expired ones are dropped, then all (a flood of tokens).
const MAX_KEPT: usize = 10_000;

/// The reviewer in force (none without `--kubernetes`) and its recent answers, by the SHA-256
/// of the token (never the token itself).
#[derive(Default)]
pub struct Reviews {
    reviewer: OnceLock<Arc<dyn ReviewTokens>>,
    kept: Mutex<HashMap<String, (Instant, Option<ServiceAccount>)>>,
}

impl Reviews {
    /// Uses `reviewer` from now on; the first one set stays.
    pub fn set(&self, reviewer: Arc<dyn ReviewTokens>) {
        let _ = self.reviewer.set(reviewer);
    }

    /// The account `token` proves; `Ok(None)` without a reviewer or for a refused token. Only
    /// a token shaped as a JWT (what the API server issues) is sent for review: anything else
    /// costs the API server nothing.
    pub async fn account(&self, token: &str) -> Result<Option<ServiceAccount>, ReviewError> {
        let Some(reviewer) = self.reviewer.get() else { return Ok(None) };
        if !looks_like_jwt(token) {
            return Ok(None);
        }
        let digest = sha256_hex(token.as_bytes());
        let now = Instant::now();
        if let Some((until, account)) = self.kept.lock().expect("reviews lock poisoned").get(&digest) {
            if *until > now {
                return Ok(account.clone());
            }
        }
        let account = reviewer.review(token).await?;
        let keep = if account.is_some() { KEEP_ACCEPTED } else { KEEP_REFUSED };
        let mut kept = self.kept.lock().expect("reviews lock poisoned");
        if kept.len() >= MAX_KEPT {
            kept.retain(|_, (until, _)| *until > now);
            if kept.len() >= MAX_KEPT {
                kept.clear();
            }
        }
        kept.insert(digest, (now + keep, account.clone()));
        Ok(account)
    }
}

/// Three base64url parts, the first a JSON object (`eyJ` is `{"` encoded).
fn looks_like_jwt(token: &str) -> bool {
    let base64url = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let parts: Vec<&str> = token.split('.').collect();
    token.len() <= 16 * 1024
        && parts.len() == 3
        && parts.iter().all(|p| base64url(p))
        && token.starts_with("eyJ")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn only_service_accounts_are_workloads() {
        let web = ServiceAccount::from_username("system:serviceaccount:shop:web").unwrap();
        assert_eq!((web.namespace.as_str(), web.name.as_str()), ("shop", "web"));
        for other in [
            "alice",
            "system:node:n1",
            "system:serviceaccount:shop",
            "system:serviceaccount::web",
            "system:serviceaccount:a:b:c",
        ] {
            assert_eq!(ServiceAccount::from_username(other), None, "{other}");
        }
    }

    const GOOD: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnb29kIn0.c2ln";
    const BAD: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiYWQifQ.c2ln";

    struct Counting(AtomicUsize);

    #[async_trait::async_trait]
    impl ReviewTokens for Counting {
        async fn review(&self, token: &str) -> Result<Option<ServiceAccount>, ReviewError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok((token == GOOD).then(|| ServiceAccount { namespace: "shop".into(), name: "web".into() }))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_kept_for_a_while_then_asked_again() {
        let reviews = Reviews::default();
        assert_eq!(reviews.account(GOOD).await.unwrap(), None, "no reviewer: no account");
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        reviews.set(counting.clone());
        assert!(reviews.account(GOOD).await.unwrap().is_some());
        assert!(reviews.account(GOOD).await.unwrap().is_some());
        assert_eq!(reviews.account(BAD).await.unwrap(), None);
        assert_eq!(reviews.account(BAD).await.unwrap(), None);
        assert_eq!(counting.0.load(Ordering::Relaxed), 2, "one review per token while kept");
        tokio::time::advance(KEEP_REFUSED + Duration::from_secs(1)).await;
        reviews.account(BAD).await.unwrap();
        reviews.account(GOOD).await.unwrap();
        assert_eq!(counting.0.load(Ordering::Relaxed), 3, "a refusal is asked again sooner");
        for not_a_jwt in ["admin-token", "id.secret.fingerprint", "eyJ.a.b.c", "eyJ..x"] {
            assert_eq!(reviews.account(not_a_jwt).await.unwrap(), None);
        }
        assert_eq!(counting.0.load(Ordering::Relaxed), 3, "what is no JWT is never sent for review");
    }
}
