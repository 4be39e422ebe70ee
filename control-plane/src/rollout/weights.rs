//! A step's weights written into the HTTPRoute: every rule that sends traffic to the stable
//! Service gets the canary beside it (a copy of the stable `backendRef` under the canary's
//! name), and the two share 100 as the step says. Rules to other backends, and other backends
//! of the same rule, are left as they are. The result is validated as any applied route is.

use serde_json::Value;

/// Why the route cannot take the weights.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    #[error("HTTPRoute {route} has no rule with a backendRef to the stable Service {stable}: add one (or fix the rollout's `stable`)")]
    NoStableBackend { route: String, stable: String },
    #[error("HTTPRoute {route} with the new weights is invalid: {reason}")]
    Invalid { route: String, reason: String },
}

/// `route` (a stored HTTPRoute document, in `namespace`) with `stable` at `stable_weight` and
/// `canary` at `canary_weight` in every rule that routes to `stable`.
pub fn shifted(
    route: &Value,
    namespace: &str,
    (stable, canary): (&str, &str),
    (stable_weight, canary_weight): (u32, u32),
) -> Result<Value, WeightsError> {
    let name = format!("{namespace}/{}", route["metadata"]["name"].as_str().unwrap_or_default());
    let mut route = route.clone();
    let mut found = false;
    let is = |backend: &Value, service: &str| {
        backend["name"] == service && backend["namespace"].as_str().is_none_or(|ns| ns == namespace)
    };
    let rules = route["spec"]["rules"].as_array_mut().into_iter().flatten();
    for rule in rules {
        let Some(backends) = rule["backendRefs"].as_array_mut() else { continue };
        let Some(at) = backends.iter().position(|b| is(b, stable)) else { continue };
        found = true;
        backends[at]["weight"] = stable_weight.into();
        match backends.iter().position(|b| is(b, canary)) {
            Some(c) => backends[c]["weight"] = canary_weight.into(),
            None => {
                let mut copy = backends[at].clone();
                copy["name"] = canary.into();
                copy["weight"] = canary_weight.into();
                backends.insert(at + 1, copy);
            }
        }
    }
    if !found {
        return Err(WeightsError::NoStableBackend { route: name, stable: stable.to_owned() });
    }
    pilotfish_api::parse("rollout", &route.to_string())
        .map_err(|e| WeightsError::Invalid { route: name, reason: e.to_string() })?;
    Ok(route)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(rules: Value) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": { "name": "web", "namespace": "default" },
            "spec": { "parentRefs": [{ "name": "web" }], "rules": rules }
        })
    }

    #[test]
    fn the_canary_joins_each_rule_of_the_stable_and_they_share_100() {
        let before = route(json!([
            { "backendRefs": [{ "name": "web-v1", "port": 80, "weight": 1 }] },
            { "matches": [{ "path": { "type": "PathPrefix", "value": "/admin" } }],
              "backendRefs": [{ "name": "admin", "weight": 1 }] },
            { "backendRefs": [{ "name": "web-v1", "weight": 3 }, { "name": "legacy", "weight": 1 }] }
        ]));
        let after = shifted(&before, "default", ("web-v1", "web-v2"), (90, 10)).unwrap();
        let rules = &after["spec"]["rules"];
        assert_eq!(
            rules[0]["backendRefs"],
            json!([
                { "name": "web-v1", "port": 80, "weight": 90 }, { "name": "web-v2", "port": 80, "weight": 10 }
            ])
        );
        assert_eq!(rules[1], before["spec"]["rules"][1], "a rule to another backend is left alone");
        assert_eq!(rules[2]["backendRefs"][2], json!({ "name": "legacy", "weight": 1 }));

        // The next step rewrites the same refs rather than adding more.
        let later = shifted(&after, "default", ("web-v1", "web-v2"), (0, 100)).unwrap();
        assert_eq!(
            later["spec"]["rules"][0]["backendRefs"],
            json!([
                { "name": "web-v1", "port": 80, "weight": 0 }, { "name": "web-v2", "port": 80, "weight": 100 }
            ])
        );
    }

    #[test]
    fn a_route_without_the_stable_backend_is_refused_with_what_to_do() {
        let other = route(json!([{ "backendRefs": [{ "name": "api" }] }]));
        let err = shifted(&other, "default", ("web-v1", "web-v2"), (90, 10)).unwrap_err();
        assert!(err.to_string().contains("no rule with a backendRef to the stable Service web-v1"), "{err}");
        let elsewhere = route(json!([{ "backendRefs": [{ "name": "web-v1", "namespace": "other" }] }]));
        assert!(shifted(&elsewhere, "default", ("web-v1", "web-v2"), (90, 10)).is_err());
    }
}
