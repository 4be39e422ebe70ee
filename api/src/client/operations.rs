//! One method per control-plane API operation, each taking and answering `wire` types. A new
//! API call is a method here: its path, its [`Call`], and the `wire` type it answers.

use http::{HeaderName, HeaderValue, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::error::ClientError;
use super::push_stream::PushStream;
use super::tap_stream::TapStream;
use super::transport::{Call, Client};
use crate::wire::{
    Ack, AckQuery, ApplyResult, CaStatus, CertifyRequest, CertifyResponse, Deleted, Deregistered, Diff,
    DiffQuery, EndpointList, EndpointQuery, EventPage, EventsQuery, Heartbeat, JoinToken, ListQuery,
    ProxyList, PushQuery, Registered, Registration, ResourceItem, ResourceList, RollbackRequest,
    RollbackResult, RolloutAction, RolloutList, RolloutStatus, RotateRequest, StatsList, StatsQuery,
    StatsReport, TapQuery, TapReport, TokenRequest,
};

/// What an apply asks of the store besides the documents.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    /// `If-Match`: the resource's version the write expects (a single document only); another
    /// version is [`ClientError::Conflict`].
    pub if_match: Option<u64>,
    /// `Idempotency-Key`: the same key again answers what the first call did, writing nothing.
    pub idempotency_key: Option<String>,
}

/// What may stand unencoded in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn query(q: &impl serde::Serialize) -> String {
    let encoded = serde_urlencoded::to_string(q).expect("wire queries are flat");
    if encoded.is_empty() {
        encoded
    } else {
        format!("?{encoded}")
    }
}

impl Client {
    /// `POST /v1/resources`: a YAML/JSON document stream, validated whole and applied as one
    /// batch.
    pub async fn apply(&self, documents: &str) -> Result<ApplyResult, ClientError> {
        self.apply_with(documents, &Preconditions::default()).await
    }

    /// [`Client::apply`] with `If-Match` and/or `Idempotency-Key`.
    pub async fn apply_with(&self, documents: &str, pre: &Preconditions) -> Result<ApplyResult, ClientError> {
        let mut call = Call::new(Method::POST, "/v1/resources".into());
        call.body = Some(("application/yaml", documents.to_owned().into()));
        if let Some(version) = pre.if_match {
            call.headers.push((http::header::IF_MATCH, HeaderValue::from(version)));
        }
        if let Some(key) = &pre.idempotency_key {
            let value = HeaderValue::try_from(key.as_str()).map_err(|e| ClientError::Request {
                url: format!("{}/v1/resources", self.base()),
                source: e.into(),
            })?;
            call.headers.push((HeaderName::from_static("idempotency-key"), value));
        }
        self.json(call).await
    }

    /// `GET /v1/resources`.
    pub async fn list(&self, q: &ListQuery) -> Result<ResourceList, ClientError> {
        self.json(Call::new(Method::GET, format!("/v1/resources{}", query(q)))).await
    }

    /// `GET /v1/resources/{kind}/{namespace}/{name}`; [`ClientError::NotFound`] when there is none.
    pub async fn get(&self, kind: &str, namespace: &str, name: &str) -> Result<ResourceItem, ClientError> {
        let path = format!("/v1/resources/{}/{}/{}", segment(kind), segment(namespace), segment(name));
        self.json(Call::new(Method::GET, path)).await
    }

    /// `DELETE /v1/resources/{kind}/{namespace}/{name}`.
    pub async fn delete(&self, kind: &str, namespace: &str, name: &str) -> Result<Deleted, ClientError> {
        let path = format!("/v1/resources/{}/{}/{}", segment(kind), segment(namespace), segment(name));
        self.json(Call::new(Method::DELETE, path)).await
    }

    /// `GET /v1/events`: one page of the log.
    pub async fn events(&self, q: &EventsQuery) -> Result<EventPage, ClientError> {
        self.json(Call::new(Method::GET, format!("/v1/events{}", query(q)))).await
    }

    /// `GET /v1/diff`.
    pub async fn diff(&self, q: &DiffQuery) -> Result<Diff, ClientError> {
        self.json(Call::new(Method::GET, format!("/v1/diff{}", query(q)))).await
    }

    /// `POST /v1/rollback`.
    pub async fn rollback(&self, req: &RollbackRequest) -> Result<RollbackResult, ClientError> {
        self.json(Call::new(Method::POST, "/v1/rollback".into()).json(req)).await
    }

    /// `POST /v1/tokens`: a join token for one service's sidecars.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<JoinToken, ClientError> {
        self.json(Call::new(Method::POST, "/v1/tokens".into()).json(req)).await
    }

    /// `POST /v1/ca/certify`: a leaf for the caller's own identity, from a CSR of its key.
    pub async fn certify(&self, req: &CertifyRequest) -> Result<CertifyResponse, ClientError> {
        self.json(Call::new(Method::POST, "/v1/ca/certify".into()).json(req)).await
    }

    /// `GET /v1/ca`: the trust domain, the leaves' lifetime, the roots and the issuer's expiry.
    pub async fn ca_status(&self) -> Result<CaStatus, ClientError> {
        self.json(Call::new(Method::GET, "/v1/ca".into())).await
    }

    /// `POST /v1/ca/rotate`: starts a root rotation; the CA's status as it begins.
    pub async fn ca_rotate(&self, req: &RotateRequest) -> Result<CaStatus, ClientError> {
        self.json(Call::new(Method::POST, "/v1/ca/rotate".into()).json(req)).await
    }

    /// `GET /v1/ca/bundle`: the PEM certificates of every root the mesh trusts.
    pub async fn ca_bundle(&self) -> Result<String, ClientError> {
        self.text(Call::new(Method::GET, "/v1/ca/bundle".into())).await
    }

    /// `GET /v1/proxies`.
    pub async fn proxies(&self) -> Result<ProxyList, ClientError> {
        self.json(Call::new(Method::GET, "/v1/proxies".into())).await
    }

    /// `GET /v1/endpoints`.
    pub async fn endpoints(&self, q: &EndpointQuery) -> Result<EndpointList, ClientError> {
        self.json(Call::new(Method::GET, format!("/v1/endpoints{}", query(q)))).await
    }

    /// `POST /v1/endpoints`.
    pub async fn register(&self, reg: &Registration) -> Result<Registered, ClientError> {
        self.json(Call::new(Method::POST, "/v1/endpoints".into()).json(reg)).await
    }

    /// `PUT /v1/endpoints/{id}/heartbeat`; [`ClientError::NotFound`] once the lease lapsed.
    pub async fn heartbeat(&self, id: &str) -> Result<Heartbeat, ClientError> {
        self.json(Call::new(Method::PUT, format!("/v1/endpoints/{}/heartbeat", segment(id)))).await
    }

    /// `DELETE /v1/endpoints/{id}`.
    pub async fn deregister(&self, id: &str) -> Result<Deregistered, ClientError> {
        self.json(Call::new(Method::DELETE, format!("/v1/endpoints/{}", segment(id)))).await
    }

    /// `GET /v1/push`: the sidecar's configuration stream. Answers once the stream's headers
    /// came; not bounded by the client's timeout (bound it where it is awaited).
    pub async fn push(&self, q: &PushQuery) -> Result<PushStream, ClientError> {
        let res = self.send(Call::new(Method::GET, format!("/v1/push{}", query(q)))).await?;
        Ok(PushStream::new(res.into_body()))
    }

    /// `POST /v1/proxies/{id}/ack`: an ACK or NACK of a pushed version.
    pub async fn ack(&self, id: &str, q: &AckQuery, ack: &Ack) -> Result<(), ClientError> {
        let path = format!("/v1/proxies/{}/ack{}", segment(id), query(q));
        self.empty(Call::new(Method::POST, path).json(ack)).await
    }

    /// `POST /v1/proxies/{id}/stats`: a sidecar's telemetry since its previous report.
    pub async fn report_stats(
        &self,
        id: &str,
        q: &AckQuery,
        report: &StatsReport,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/proxies/{}/stats{}", segment(id), query(q));
        self.empty(Call::new(Method::POST, path).json(report)).await
    }

    /// `GET /v1/stats`: the mesh's golden metrics over a window.
    pub async fn stats(&self, q: &StatsQuery) -> Result<StatsList, ClientError> {
        self.json(Call::new(Method::GET, format!("/v1/stats{}", query(q)))).await
    }

    /// `GET /v1/tap`: a live stream of the requests a service's sidecars record. Answers once
    /// the stream's headers came; not bounded by the client's timeout.
    pub async fn tap(&self, q: &TapQuery) -> Result<TapStream, ClientError> {
        let res = self.send(Call::new(Method::GET, format!("/v1/tap{}", query(q)))).await?;
        Ok(TapStream::new(res.into_body()))
    }

    /// `POST /v1/proxies/{id}/tap`: events a sidecar recorded for the taps open on its service.
    pub async fn report_tap(&self, id: &str, q: &AckQuery, report: &TapReport) -> Result<(), ClientError> {
        let path = format!("/v1/proxies/{}/tap{}", segment(id), query(q));
        self.empty(Call::new(Method::POST, path).json(report)).await
    }

    /// `GET /v1/rollouts`: every rollout's status.
    pub async fn rollouts(&self) -> Result<RolloutList, ClientError> {
        self.json(Call::new(Method::GET, "/v1/rollouts".into())).await
    }

    /// `GET /v1/rollouts/{namespace}/{name}`; [`ClientError::NotFound`] when there is none.
    pub async fn rollout(&self, namespace: &str, name: &str) -> Result<RolloutStatus, ClientError> {
        let path = format!("/v1/rollouts/{}/{}", segment(namespace), segment(name));
        self.json(Call::new(Method::GET, path)).await
    }

    /// `POST /v1/rollouts/{namespace}/{name}/{action}`: pause, resume, abort or promote.
    pub async fn rollout_action(
        &self,
        namespace: &str,
        name: &str,
        action: RolloutAction,
    ) -> Result<RolloutStatus, ClientError> {
        let path = format!("/v1/rollouts/{}/{}/{}", segment(namespace), segment(name), action.as_str());
        self.json(Call::new(Method::POST, path)).await
    }

    /// `GET /readyz`: whether the control plane can serve (its event store answers).
    pub async fn readyz(&self) -> Result<(), ClientError> {
        self.empty(Call::new(Method::GET, "/readyz".into())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_queries_are_encoded() {
        assert_eq!(segment("web.default-127.0.0.1-80"), "web.default-127.0.0.1-80");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(query(&ListQuery::default()), "");
        let q = ListQuery { kind: Some("httproute".into()), namespace: Some("a&b".into()) };
        assert_eq!(query(&q), "?kind=httproute&namespace=a%26b");
    }
}
