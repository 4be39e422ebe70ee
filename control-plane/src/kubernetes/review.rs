//! TokenReview (authentication.k8s.io/v1): the API server checks a sidecar's projected
//! ServiceAccount token for the audience `pilotfish` and names its account.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::core::{ReviewError, ReviewTokens, ServiceAccount, AUDIENCE};

pub struct TokenReviewer {
    api: Api<TokenReview>,
}

impl TokenReviewer {
    pub fn new(client: Client) -> Self {
        Self { api: Api::all(client) }
    }
}

#[async_trait::async_trait]
impl ReviewTokens for TokenReviewer {
    async fn review(&self, token: &str) -> Result<Option<ServiceAccount>, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let answer =
            self.api.create(&PostParams::default(), &review).await.map_err(|e| ReviewError(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            tracing::debug!(error = ?status.error, "a ServiceAccount token was refused");
            return Ok(None);
        }
        // The API server answers the audiences the token is valid for among those asked; one
        // that does not say is not trusted to have checked.
        if !status.audiences.unwrap_or_default().iter().any(|a| a == AUDIENCE) {
            tracing::debug!("a ServiceAccount token is not for the audience {AUDIENCE}");
            return Ok(None);
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        Ok(ServiceAccount::from_username(&username))
    }
}
