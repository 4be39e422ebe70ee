//! The push protocol's messages: the query a sidecar opens its stream with, each line of the
//! stream (one configuration snapshot), and the ACK or NACK it answers every version with.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::identity::{trusted_roots_schema, CertificateReport};
use crate::authz::MeshDefault;

use super::protocol::{default_namespace, unversioned, Versioned, PROTOCOL_VERSION, UNVERSIONED_PROTOCOL};

/// `GET /v1/push` query: who the sidecar is and what it already has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    /// The sidecar's id (its name in the proxies API): 1-253 visible ASCII characters.
    #[param(min_length = 1, max_length = 253, pattern = r"^[!-~]+$")]
    pub id: String,
    /// The service it is an instance of.
    pub service: String,
    /// Its namespace (default: `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The version it already has (0: none): an unchanged configuration is not sent again.
    #[serde(default)]
    pub version: u64,
    /// The sidecar's protocol version (left out by sidecars that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
}

impl Versioned for PushQuery {
    fn protocol(&self) -> u32 {
        self.protocol.unwrap_or(UNVERSIONED_PROTOCOL)
    }
}

/// One line of the push stream (newline-delimited JSON; an empty line is a keepalive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PushLine {
    /// The sender's protocol version.
    #[serde(default = "unversioned")]
    pub protocol: u32,
    /// The configuration's version: the seq of the last event it includes.
    pub version: u64,
    /// The configuration: a YAML/JSON document stream, parsed exactly like a static file.
    pub config: String,
    /// The mesh's security settings (left out by control planes without a CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshSettings>,
}

impl PushLine {
    pub fn new(version: u64, config: String) -> Self {
        Self { protocol: PROTOCOL_VERSION, version, config, mesh: None }
    }
}

/// What every sidecar of the mesh shares besides its configuration: whom to trust and what a
/// call no policy decides gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshSettings {
    /// The trust domain of every mesh identity (`spiffe://<trustDomain>/ns/../sa/..`).
    pub trust_domain: String,
    /// PEM certificates of every root the mesh trusts now (two during a root rotation).
    pub trust_bundle_pem: String,
    /// What applies to a call to a service no ALLOW policy targets.
    pub authz_default: MeshDefault,
    /// A sidecar whose certificate was issued before this time (RFC 3339) renews it now: set
    /// when the CA switches to a new issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before: Option<String>,
}

impl Versioned for PushLine {
    fn protocol(&self) -> u32 {
        self.protocol
    }
}

/// `POST /v1/proxies/{id}/ack` body: the sidecar's verdict on a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    /// The sender's protocol version.
    #[serde(default = "unversioned")]
    pub protocol: u32,
    pub version: u64,
    /// Why the version was refused (a NACK); `null` or absent: an ACK.
    #[serde(default)]
    pub error: Option<String>,
    /// The mesh certificate the sidecar holds now (absent: none, or a sidecar that predates
    /// the report). A sidecar ACKs its current version again after every renewal to report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateReport>,
    /// SHA-256 fingerprints (lowercase hex of the DER) of the roots in force for mesh
    /// handshakes now, whatever version this answers (absent: the sidecar has no mesh identity,
    /// or predates the report). A sidecar ACKs its current version again whenever they change;
    /// a root rotation waits until every sidecar names the new root here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = trusted_roots_schema)]
    pub trusted_roots: Option<Vec<String>>,
}

impl Ack {
    /// The version was swapped in.
    pub fn accepted(version: u64) -> Self {
        Self { protocol: PROTOCOL_VERSION, version, error: None, certificate: None, trusted_roots: None }
    }

    /// The version was refused; the sidecar keeps its last good one.
    pub fn refused(version: u64, error: String) -> Self {
        Self { error: Some(error), ..Self::accepted(version) }
    }

    /// With the certificate the sidecar holds.
    pub fn with_certificate(self, certificate: Option<CertificateReport>) -> Self {
        Self { certificate, ..self }
    }

    /// With the fingerprints of the roots the sidecar trusts now.
    pub fn with_trusted_roots(self, trusted_roots: Option<Vec<String>>) -> Self {
        Self { trusted_roots, ..self }
    }
}

impl Versioned for Ack {
    fn protocol(&self) -> u32 {
        self.protocol
    }
}

/// `POST /v1/proxies/{id}/ack` query: which service's proxy the ACK is for (the one its push
/// stream named). A join token's own service when left out, as sidecars before it did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AckQuery {
    /// The service the proxy connected as (sidecars one release back leave it out and get
    /// their join token's; the admin token must name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Its namespace (default: the join token's, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_push_line_is_what_the_control_plane_sends_plus_its_protocol() {
        let line = PushLine::new(7, "kind: Service".into());
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            json!({ "protocol": PROTOCOL_VERSION, "version": 7, "config": "kind: Service" })
        );
        // A control plane from before the field sends none: protocol 1.
        let before: PushLine = serde_json::from_str(r#"{"version":7,"config":"kind: Service"}"#).unwrap();
        assert_eq!(before, PushLine { protocol: UNVERSIONED_PROTOCOL, ..line });
    }

    #[test]
    fn a_push_line_and_an_ack_from_the_future_parse() {
        let line: PushLine = serde_json::from_value(json!({
            "protocol": PROTOCOL_VERSION + 1, "version": 9, "config": "", "delta": { "added": [] }, "trust": "PEM"
        }))
        .unwrap();
        assert_eq!((line.version, line.check_protocol()), (9, Ok(())));
        let ack: Ack = serde_json::from_value(json!({
            "protocol": PROTOCOL_VERSION + 1, "version": 9, "error": null, "appliedInMs": 3
        }))
        .unwrap();
        assert_eq!(ack, Ack { protocol: PROTOCOL_VERSION + 1, ..Ack::accepted(9) });
    }

    #[test]
    fn acks_and_nacks_are_what_sidecars_send_plus_their_protocol() {
        let p = PROTOCOL_VERSION;
        assert_eq!(
            serde_json::to_value(Ack::accepted(3)).unwrap(),
            json!({ "protocol": p, "version": 3, "error": null })
        );
        assert_eq!(
            serde_json::to_value(Ack::refused(4, "bad".into())).unwrap(),
            json!({ "protocol": p, "version": 4, "error": "bad" })
        );
        // Sidecars from before the field: no protocol (1); an ACK with `error: null`, or none at
        // all.
        for before in [json!({ "version": 3, "error": null }), json!({ "version": 3 })] {
            let ack = serde_json::from_value::<Ack>(before).unwrap();
            assert_eq!(ack, Ack { protocol: UNVERSIONED_PROTOCOL, ..Ack::accepted(3) });
        }
    }

    #[test]
    fn an_ack_names_the_roots_in_force_when_there_are_any() {
        let roots = vec!["ab".repeat(32), "cd".repeat(32)];
        let ack = Ack::refused(5, "bad".into()).with_trusted_roots(Some(roots.clone()));
        let json = serde_json::to_value(&ack).unwrap();
        assert_eq!(json["trustedRoots"], json!(roots));
        assert_eq!(serde_json::from_value::<Ack>(json).unwrap(), ack);
        assert!(serde_json::to_value(Ack::accepted(5)).unwrap().get("trustedRoots").is_none());
    }

    #[test]
    fn the_schema_bounds_trusted_roots() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(Ack::schema()).unwrap();
        let roots = &schema["properties"]["trustedRoots"];
        assert_eq!(
            (roots["type"].as_str(), roots["maxItems"].as_u64()),
            (Some("array"), Some(16)),
            "{schema}"
        );
        assert_eq!(roots["items"]["pattern"], "^[0-9a-f]{64}$", "{schema}");
        assert!(!schema["required"].as_array().unwrap().contains(&json!("trustedRoots")), "{schema}");
    }

    #[test]
    fn queries_are_the_parameters_sidecars_send() {
        let q = PushQuery {
            id: "web.default-1".into(),
            service: "web".into(),
            namespace: "default".into(),
            version: 5,
            protocol: Some(PROTOCOL_VERSION),
        };
        let back: PushQuery = serde_json::from_value(serde_json::to_value(&q).unwrap()).unwrap();
        assert_eq!(back, q);
        let today: PushQuery = serde_json::from_value(json!({ "id": "x", "service": "web" })).unwrap();
        assert_eq!((today.namespace.as_str(), today.version, today.protocol), ("default", 0, None));
        assert_eq!(today.protocol(), UNVERSIONED_PROTOCOL);
        let ack = AckQuery { service: Some("web".into()), namespace: None };
        assert_eq!(serde_json::to_value(&ack).unwrap(), json!({ "service": "web" }));
    }
}
