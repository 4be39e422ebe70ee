//! Bounded counters for service limits (`maxRequests`, `maxPendingRequests`,
//! `maxConnections`): a claim succeeds only under the limit, and gives its slot back when dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Which service limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxRequests,
    MaxConnections,
    MaxPendingRequests,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Self::MaxRequests, Self::MaxConnections, Self::MaxPendingRequests];

    /// The limit's name in the `BackendPolicy`, the `pilotfish-limit` header and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxRequests => "maxRequests",
            Self::MaxConnections => "maxConnections",
            Self::MaxPendingRequests => "maxPendingRequests",
        }
    }
}

/// A slot in a counter borrowed for the duration of a request.
pub struct Claim<'a>(&'a AtomicUsize);

impl<'a> Claim<'a> {
    pub fn take(counter: &'a AtomicUsize, max: usize) -> Option<Self> {
        take(counter, max).then(|| Self(counter))
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A slot held by something that outlives the request, such as a connection's task.
pub struct OwnedClaim(Arc<AtomicUsize>);

impl OwnedClaim {
    pub fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        take(counter, max).then(|| Self(counter.clone()))
    }
}

impl Drop for OwnedClaim {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn take(counter: &AtomicUsize, max: usize) -> bool {
    if counter.fetch_add(1, Ordering::AcqRel) >= max {
        counter.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stop_at_the_limit_and_free_on_drop() {
        let counter = AtomicUsize::new(0);
        let a = Claim::take(&counter, 2).unwrap();
        let _b = Claim::take(&counter, 2).unwrap();
        assert!(Claim::take(&counter, 2).is_none());
        assert!(Claim::take(&counter, 2).is_none());
        assert_eq!(counter.load(Ordering::Relaxed), 2, "a refused claim changes nothing");
        drop(a);
        assert!(Claim::take(&counter, 2).is_some());

        let shared = Arc::new(AtomicUsize::new(0));
        let owned = OwnedClaim::take(&shared, 1).unwrap();
        assert!(OwnedClaim::take(&shared, 1).is_none());
        drop(owned);
        assert_eq!(shared.load(Ordering::Relaxed), 0);
    }
}
