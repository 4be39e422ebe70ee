//! A workload's mesh identity: the SPIFFE ID `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`
//! that the mesh CA writes as the only URI SAN of a leaf, and that authorization matches on.
//!
//! Parsing is strict and has one spelling per identity, so two strings name the same workload
//! only if they are equal: a lowercase scheme, a trust domain of lowercase letters, digits, `.`,
//! `-` and `_` (the SPIFFE spec's characters, no port, no user info), then exactly the two
//! segment pairs with Kubernetes' name rules — a namespace is a DNS-1123 label, a service account
//! a DNS-1123 subdomain (as Kubernetes names them; a Pilotfish service name is a label, which is
//! one). No query, fragment, percent-encoding, empty or dot segment gets through, so a
//! certificate cannot smuggle a second meaning past a string comparison.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::document::validate_name;

/// The scheme every SPIFFE ID starts with.
const SCHEME: &str = "spiffe://";
/// The SPIFFE spec's limit on a trust domain.
const MAX_TRUST_DOMAIN: usize = 255;
/// Kubernetes' limit on a DNS-1123 subdomain (a service account's name).
const MAX_SUBDOMAIN: usize = 253;

/// A mesh identity; every value is valid (see the module doc), so it can be compared as is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string or its parts are not a mesh identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("{0:?} is not a SPIFFE ID: it must start with \"spiffe://\"")]
    Scheme(String),
    #[error(
        "{0:?} is not a valid trust domain: use 1-255 lowercase letters, digits, '.', '-' or '_' (no port, user or path)"
    )]
    TrustDomain(String),
    #[error("{0:?} is not a mesh identity: its path must be exactly /ns/<namespace>/sa/<service-account>")]
    Path(String),
    #[error("the namespace of a SPIFFE ID: {0}")]
    Namespace(String),
    #[error(
        "the service account {0:?} of a SPIFFE ID is not valid: use 1-253 lowercase letters, digits, '-' or '.', each dot-separated part starting and ending with a letter or digit"
    )]
    ServiceAccount(String),
}

impl SpiffeId {
    /// The identity of `service_account` in `namespace` of `trust_domain`, each checked.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(trust_domain)?;
        validate_name(namespace).map_err(SpiffeIdError::Namespace)?;
        if !is_subdomain(service_account) {
            return Err(SpiffeIdError::ServiceAccount(service_account.to_owned()));
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

/// Checks a trust domain (e.g. the control plane's `--trust-domain`) as a SPIFFE ID would.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    let ok = !trust_domain.is_empty()
        && trust_domain.len() <= MAX_TRUST_DOMAIN
        && trust_domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpiffeIdError::TrustDomain(trust_domain.to_owned()))
    }
}

/// Kubernetes' DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 bytes.
fn is_subdomain(name: &str) -> bool {
    name.len() <= MAX_SUBDOMAIN && name.split('.').all(|label| validate_name(label).is_ok())
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(SCHEME).ok_or_else(|| SpiffeIdError::Scheme(s.to_owned()))?;
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        validate_trust_domain(trust_domain)?;
        let mut segments = path.split('/');
        let parts = (segments.next(), segments.next(), segments.next(), segments.next(), segments.next());
        match parts {
            (Some("ns"), Some(namespace), Some("sa"), Some(account), None) => {
                Self::new(trust_domain, namespace, account)
            }
            _ => Err(SpiffeIdError::Path(s.to_owned())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> Self {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_parses_into_its_parts_and_prints_back_the_same() {
        let s = "spiffe://pilotfish.local/ns/shop/sa/web";
        let id: SpiffeId = s.parse().unwrap();
        assert_eq!(
            (id.trust_domain(), id.namespace(), id.service_account()),
            ("pilotfish.local", "shop", "web")
        );
        assert_eq!(id.to_string(), s);
        assert_eq!(SpiffeId::new("pilotfish.local", "shop", "web").unwrap(), id);
        let kubernetes = "spiffe://cluster_1.example-corp/ns/kube-system/sa/coredns.v2";
        assert_eq!(kubernetes.parse::<SpiffeId>().unwrap().to_string(), kubernetes);
    }

    #[test]
    fn serde_carries_it_as_its_string_and_refuses_a_bad_one() {
        let id = SpiffeId::new("td", "default", "web").unwrap();
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json, "spiffe://td/ns/default/sa/web");
        assert_eq!(serde_json::from_value::<SpiffeId>(json).unwrap(), id);
        let err = serde_json::from_value::<SpiffeId>("spiffe://td/ns/default".into()).unwrap_err();
        assert!(err.to_string().contains("/ns/<namespace>/sa/<service-account>"), "{err}");
    }

    #[test]
    fn hostile_and_malformed_strings_are_refused_with_the_reason() {
        // Each input and the variant (by name) that must refuse it.
        let cases: &[(&str, &str)] = &[
            ("", "Scheme"),
            ("https://td/ns/a/sa/b", "Scheme"),
            ("SPIFFE://td/ns/a/sa/b", "Scheme"),
            (" spiffe://td/ns/a/sa/b", "Scheme"),
            ("spiffe://", "TrustDomain"),
            ("spiffe:///ns/a/sa/b", "TrustDomain"),
            ("spiffe://TD/ns/a/sa/b", "TrustDomain"),
            ("spiffe://td:443/ns/a/sa/b", "TrustDomain"),
            ("spiffe://user@td/ns/a/sa/b", "TrustDomain"),
            ("spiffe://td?x=1/ns/a/sa/b", "TrustDomain"),
            ("spiffe://td", "Path"),
            ("spiffe://td/", "Path"),
            ("spiffe://td/ns/a", "Path"),
            ("spiffe://td/ns/a/sa/b/", "Path"),
            ("spiffe://td/ns/a/sa/b/c", "Path"),
            ("spiffe://td//ns/a/sa/b", "Path"),
            ("spiffe://td/sa/b/ns/a", "Path"),
            ("spiffe://td/NS/a/sa/b", "Path"),
            ("spiffe://td/ns//sa/b", "Namespace"),
            ("spiffe://td/ns/../sa/b", "Namespace"),
            ("spiffe://td/ns/a.b/sa/b", "Namespace"),
            ("spiffe://td/ns/Shop/sa/b", "Namespace"),
            ("spiffe://td/ns/a/sa/", "ServiceAccount"),
            ("spiffe://td/ns/a/sa/..", "ServiceAccount"),
            ("spiffe://td/ns/a/sa/b%2Fc", "ServiceAccount"),
            ("spiffe://td/ns/a/sa/b?admin", "ServiceAccount"),
            ("spiffe://td/ns/a/sa/b#frag", "ServiceAccount"),
            ("spiffe://td/ns/a/sa/b\0", "ServiceAccount"),
            ("spiffe://td/ns/a/sa/b ", "ServiceAccount"),
            ("spiffe://td/ns/a/sa/wéb", "ServiceAccount"),
            ("spiffe://td/ns/a/sa/-b", "ServiceAccount"),
            ("spiffe://td/ns/a/sa/b..c", "ServiceAccount"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<SpiffeId>().expect_err(input);
            assert!(format!("{err:?}").starts_with(&format!("{expected}(")), "{input:?}: {err:?}");
            assert!(!err.to_string().is_empty());
        }
        let long_domain = format!("spiffe://{}/ns/a/sa/b", "t".repeat(256));
        assert!(matches!(long_domain.parse::<SpiffeId>(), Err(SpiffeIdError::TrustDomain(_))));
        let long_account = format!("spiffe://td/ns/a/sa/{}", vec!["a".repeat(63); 4].join("."));
        assert!(matches!(long_account.parse::<SpiffeId>(), Err(SpiffeIdError::ServiceAccount(_))));
    }

    #[test]
    fn errors_say_what_to_write_instead() {
        let err = "spiffe://td/ns/a".parse::<SpiffeId>().unwrap_err().to_string();
        assert!(err.contains("exactly /ns/<namespace>/sa/<service-account>"), "{err}");
        let err = SpiffeId::new("td", "Bad", "web").unwrap_err().to_string();
        assert!(err.contains("lowercase letters"), "{err}");
    }
}
