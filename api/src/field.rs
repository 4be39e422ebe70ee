//! A field that failed validation: what every check in this crate returns, and what
//! `ConfigError` places in its document.

/// A field that failed validation, with the path from the document root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}
