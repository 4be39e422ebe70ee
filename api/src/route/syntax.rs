//! HTTP syntax as the sidecar reads it, shared by route and policy validation and the sidecar:
//! header names (RFC 9110), methods, and regular expressions that match a whole value.

/// RFC 9110 field-name: one or more tchars.
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Methods as the Gateway API lists them.
pub fn http_method(method: &str) -> Option<&'static str> {
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
        .into_iter()
        .find(|m| *m == method)
}

/// A regular expression that must match a whole value, as the sidecar compiles it: checking the
/// anchored form matters, since a pattern can be valid alone and not once wrapped (`(?x)a#`
/// comments out the closing parenthesis).
pub fn full_match_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}
