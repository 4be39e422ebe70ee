//! The store's key names under its prefix (the table is in the module doc of `etcd`).

/// The store's key names under its prefix.
#[derive(Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    pub(super) fn head(&self) -> String {
        format!("{}head", self.prefix)
    }

    pub(super) fn event(&self, seq: u64) -> String {
        format!("{}events/{seq:020}", self.prefix)
    }

    /// The end (exclusive) of the range holding every event key.
    pub(super) fn events_end(&self) -> String {
        // '0' is the byte after '/'.
        format!("{}events0", self.prefix)
    }

    pub(super) fn version(&self, aggregate: &str) -> String {
        format!("{}versions/{aggregate}", self.prefix)
    }

    pub(super) fn idempotency(&self, key: &str) -> String {
        format!("{}keys/{key}", self.prefix)
    }

    pub(super) fn snapshot(&self) -> String {
        format!("{}snapshot", self.prefix)
    }

    /// A lock ([`crate::store::EventStore::hold`]), attached to its holder's lease.
    pub(super) fn lock(&self, name: &str) -> String {
        format!("{}locks/{name}", self.prefix)
    }

    pub(super) fn ca(&self) -> String {
        format!("{}ca", self.prefix)
    }
}
