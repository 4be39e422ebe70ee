//! The join-token API's messages: a request for one service's token and the token, shown once.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::protocol::default_namespace;

/// `POST /v1/tokens` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub service: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

/// `POST /v1/tokens` answer (201). The secret is in `token` only here: the log keeps its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JoinToken {
    /// `<id>.<secret>`: what `pilotfish sidecar --token` takes.
    pub token: String,
    pub service: String,
    pub namespace: String,
    pub seq: u64,
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
        assert_eq!(bare.namespace, "default");
        round_trip::<JoinToken>(
            json!({ "token": "abc.def", "service": "web", "namespace": "default", "seq": 2 }),
        );
    }
}
