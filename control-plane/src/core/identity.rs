//! A caller's mesh identity: what its credential says it is, never what its request asks for.
//! A join token of service `S` in namespace `N` is `spiffe://<trust domain>/ns/N/sa/S` (in local
//! mode the service name is the account); a reviewed Kubernetes ServiceAccount token of account
//! `A` in `N` is `spiffe://<trust domain>/ns/N/sa/A`, whatever service it acts for; the admin token is no workload and has none. The CA
//! issues this identity, and the registry records it for the instances the token registers.

use pilotfish_api::SpiffeId;

use super::caller::{read_only_sidecar, Caller};
use super::error::{Error, Result};

/// The identity `caller`'s credential gives; the admin token has none (403).
pub(super) fn workload_identity(caller: &Caller, trust_domain: &str) -> Result<SpiffeId> {
    match caller {
        Caller::Admin => Err(Error::Forbidden(
            "the admin token has no mesh identity: a sidecar certifies with its own service's join \
             token (`pilotfish token create --service NAME`)"
                .into(),
        )),
        Caller::ReadOnly(_) => Err(read_only_sidecar()),
        Caller::Service(t) => SpiffeId::new(trust_domain, &t.namespace, &t.service)
            .map_err(|e| Error::BadRequest(e.to_string())),
        Caller::Account(a) => {
            SpiffeId::new(trust_domain, &a.namespace, &a.name).map_err(|e| Error::BadRequest(e.to_string()))
        }
    }
}

/// The identity an instance registered by `caller` is recorded with: a join token's own, whether
/// or not the registration names it (naming another is refused, 403); whatever the admin names
/// (the operator vouches for it, but it must be a SPIFFE ID: every sidecar checks the pushed
/// identities, and one it cannot read would make all of them refuse the configuration), or none.
pub(super) fn registered_identity(
    caller: &Caller,
    trust_domain: &str,
    asked: Option<String>,
) -> Result<Option<String>> {
    match caller {
        Caller::Admin => match asked {
            Some(asked) => match asked.parse::<SpiffeId>() {
                Ok(id) => Ok(Some(id.to_string())),
                Err(e) => Err(Error::BadRequest(format!("identity: {e}"))),
            },
            None => Ok(None),
        },
        Caller::ReadOnly(_) => Err(read_only_sidecar()),
        Caller::Service(_) | Caller::Account(_) => {
            let own = workload_identity(caller, trust_domain)?.to_string();
            match asked {
                Some(asked) if asked != own => Err(Error::Forbidden(format!(
                    "its instances have the identity {own}, not {asked}: leave `identity` out and the \
                     control plane records the token's own"
                ))),
                _ => Ok(Some(own)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TokenRecord;

    fn web_in(namespace: &str) -> Caller {
        Caller::Service(TokenRecord {
            id: "t1".into(),
            service: "web".into(),
            namespace: namespace.into(),
            secret_sha256: String::new(),
            kind: crate::model::TokenKind::Join,
            expires_at: None,
        })
    }

    #[test]
    fn a_join_token_is_its_service_in_its_namespace_and_the_admin_is_no_workload() {
        let id = workload_identity(&web_in("shop"), "example.org").unwrap();
        assert_eq!(id.to_string(), "spiffe://example.org/ns/shop/sa/web");
        let err = workload_identity(&Caller::Admin, "example.org").unwrap_err();
        assert!(matches!(err, Error::Forbidden(ref m) if m.contains("join token")), "{err}");
    }

    #[test]
    fn a_join_token_registers_its_own_identity_only_and_the_admin_any() {
        let web = web_in("default");
        let own = "spiffe://pilotfish.local/ns/default/sa/web";
        assert_eq!(registered_identity(&web, "pilotfish.local", None).unwrap().as_deref(), Some(own));
        assert_eq!(
            registered_identity(&web, "pilotfish.local", Some(own.into())).unwrap().as_deref(),
            Some(own)
        );
        let foreign = "spiffe://pilotfish.local/ns/default/sa/payments";
        let err = registered_identity(&web, "pilotfish.local", Some(foreign.into())).unwrap_err();
        assert!(matches!(err, Error::Forbidden(ref m) if m.contains(own) && m.contains(foreign)), "{err}");

        let admin = registered_identity(&Caller::Admin, "pilotfish.local", Some(foreign.into())).unwrap();
        assert_eq!(admin.as_deref(), Some(foreign));
        assert_eq!(registered_identity(&Caller::Admin, "pilotfish.local", None).unwrap(), None);
    }
}
