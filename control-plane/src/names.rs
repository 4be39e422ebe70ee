//! A service and namespace as requests name them (registrations, join tokens, push streams):
//! each a DNS label, and the namespace `default` when left out.

use pilotfish_api::document::validate_name;
use pilotfish_api::wire::DEFAULT_NAMESPACE;

/// The namespace a request means when it names none.
pub fn namespace_or_default(namespace: Option<String>) -> String {
    namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// Checks `service` and `namespace` are DNS labels; the error names the one that is not.
pub fn check_service(service: &str, namespace: &str) -> Result<(), String> {
    for (field, value) in [("service", service), ("namespace", namespace)] {
        validate_name(value).map_err(|e| format!("{field}: {e}"))?;
    }
    Ok(())
}
