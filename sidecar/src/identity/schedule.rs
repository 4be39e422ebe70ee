//! When a managed sidecar asks the CA again.
//!
//! - **Renewal** at `lifetime × U(0.65, 0.75)` after the certificate arrived: about 70 % of its
//!   life, as linkerd renews, with jitter so that sidecars started together (or a CA that just
//!   switched issuers) do not all come back in the same second. The lifetime counts from
//!   arrival, not from NotBefore: the CA backdates NotBefore a minute against clock skew, which
//!   would otherwise eat most of a short test lifetime.
//! - **Retry** after a failure: exponential backoff with full jitter from 1 s, capped at
//!   `min(30 s, remaining / 4)`, so that several attempts fit before the certificate in force
//!   expires; once it has expired, the 30 s cap alone.
//! - Any two attempts are at least [`MIN_SPACING`] apart.

use std::time::Duration;

/// No two attempts closer together than this, whatever the certificate's lifetime.
pub const MIN_SPACING: Duration = Duration::from_secs(1);
/// The first retry's ceiling; it doubles with every failure in a row.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long after its arrival a certificate valid for `lifetime` more is renewed.
pub fn renew_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.65 + 0.10 * fastrand::f64()).max(MIN_SPACING)
}

/// How long to wait after the `failures`-th failure in a row (1 for the first), when the
/// certificate in force has `remaining` validity left (`None`: none is, or it has expired).
pub fn retry_after(failures: u32, remaining: Option<Duration>) -> Duration {
    let cap = remaining.filter(|r| !r.is_zero()).map_or(RETRY_MAX, |r| (r / 4).min(RETRY_MAX));
    crate::resilience::retry::backoff(failures.saturating_sub(1), RETRY_BASE, cap).max(MIN_SPACING)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn renewal_comes_at_65_to_75_percent_of_the_lifetime_and_is_jittered() {
        let day = Duration::from_secs(86_400);
        let picks: Vec<Duration> = (0..1000).map(|_| renew_after(day)).collect();
        assert!(picks.iter().all(|p| *p >= day.mul_f64(0.65) && *p <= day.mul_f64(0.75)), "{picks:?}");
        let (min, max) = (picks.iter().min().unwrap(), picks.iter().max().unwrap());
        assert!(*max - *min > day.mul_f64(0.08), "jitter spreads renewals: {min:?}..{max:?}");
    }

    #[test]
    fn a_tiny_lifetime_still_renews_at_most_once_a_second() {
        assert_eq!(renew_after(Duration::from_millis(500)), MIN_SPACING);
        assert_eq!(renew_after(Duration::ZERO), MIN_SPACING);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_30_seconds() {
        let hour = Some(Duration::from_secs(3600));
        for failures in 1..=20 {
            let ceiling = (SECOND * 2u32.pow(failures.min(10) - 1)).min(30 * SECOND);
            let picks: Vec<Duration> = (0..300).map(|_| retry_after(failures, hour)).collect();
            assert!(picks.iter().all(|p| *p >= MIN_SPACING && *p <= ceiling), "{failures}: {picks:?}");
            if ceiling >= 4 * SECOND {
                // Full jitter: spread over the whole range, not bunched at the ceiling.
                assert!(picks.iter().any(|p| *p < ceiling / 2), "{failures}: {picks:?}");
                assert!(picks.iter().any(|p| *p > ceiling / 2), "{failures}: {picks:?}");
            }
        }
    }

    #[test]
    fn retries_fit_several_times_into_what_is_left_of_the_certificate() {
        let left = Some(Duration::from_secs(20));
        assert!((0..300).all(|_| retry_after(12, left) <= 5 * SECOND));
        // Very little left: still one second apart, never a busy loop.
        assert!((0..300).all(|_| retry_after(12, Some(Duration::from_millis(800))) == MIN_SPACING));
        // Expired, or never had one: the 30 s cap alone.
        assert!((0..300).any(|_| retry_after(12, None) > 20 * SECOND));
        assert!((0..300).all(|_| retry_after(12, Some(Duration::ZERO)) <= 30 * SECOND));
    }
}
