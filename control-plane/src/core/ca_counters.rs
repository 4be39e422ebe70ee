//! What the mesh CA issued and refused since the control plane started, by reason: kept by the
//! control plane, counted by the CA operations, shown on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a certify request was refused, as `pilotfish_ca_certify_refused_total{reason}` labels it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    /// No valid token (401).
    Unauthenticated,
    /// A token with no mesh identity: the admin's (403).
    NoIdentity,
    /// A malformed CSR or request (400).
    BadRequest,
    /// The CA could not sign (its issuer expired).
    CaError,
}

impl Refusal {
    const ALL: [Self; 4] = [Self::Unauthenticated, Self::NoIdentity, Self::BadRequest, Self::CaError];

    fn label(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::NoIdentity => "no_identity",
            Self::BadRequest => "bad_request",
            Self::CaError => "ca_error",
        }
    }
}

/// What the CA issued and refused since the control plane started.
#[derive(Debug, Default)]
pub struct CaCounters {
    issued: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl CaCounters {
    pub(super) fn count_issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_refused(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Each reason's label and count, every reason listed (at 0 until it happens).
    pub(super) fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL.into_iter().map(|r| (r.label(), self.refused[r as usize].load(Ordering::Relaxed)))
    }
}
