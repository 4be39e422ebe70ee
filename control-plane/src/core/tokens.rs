//! Join tokens: one service's sidecars' credential, created by the admin. The secret is shown
//! once; the log keeps only its hash.

use super::caller::sha256_hex;
use super::error::{Error, Result};
use super::plane::ControlPlane;
use crate::model::{kind, TokenRecord};
use crate::names::check_service;
use crate::store::AppendRequest;
use pilotfish_api::wire::{JoinToken, TokenRequest};

impl ControlPlane {
    pub async fn create_token(&self, actor: String, req: TokenRequest) -> Result<JoinToken> {
        check_service(&req.service, &req.namespace).map_err(Error::BadRequest)?;
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let record = TokenRecord {
            id: id.clone(),
            service: req.service.clone(),
            namespace: req.namespace.clone(),
            secret_sha256: sha256_hex(secret.as_bytes()),
        };
        let data = serde_json::to_value(&record).expect("records serialize");
        let event = self
            .store
            .append(
                AppendRequest::new(format!("Token/{id}"), kind::TOKEN_CREATED, data, actor).expect_version(0),
            )
            .await?;
        self.settle().await;
        Ok(JoinToken {
            token: format!("{id}.{secret}"),
            service: req.service,
            namespace: req.namespace,
            seq: event.seq,
        })
    }
}
