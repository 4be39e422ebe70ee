//! The push stream's mesh settings on their way to the renew loop, and the word back that a
//! pushed trust bundle is in force. The push client ACKs a version only once the renew loop has
//! acted on that version's bundle — put it in force for handshakes, or refused it as unusable —
//! so the roots every ACK reports already include those the version brings (a root rotation
//! goes by those roots, not by the ACK itself; without the wait the new roots would reach the
//! control plane in a second ACK a moment later). The wait is bounded ([`IN_FORCE_WITHIN`]): a
//! stuck renew loop must not stop every ACK for good.
//!
//! Both directions are `watch` channels: only the latest settings count, and only the latest
//! bundle acted on.

use std::time::Duration;

use pilotfish_api::wire::MeshSettings;
use tokio::sync::watch;

/// How long an ACK waits for its version's bundle to be in force. Installing a bundle takes
/// microseconds and the renew loop follows pushes even while it waits for the CA, so this is
/// reached only when the loop is stuck or gone.
pub const IN_FORCE_WITHIN: Duration = Duration::from_secs(5);

/// The push client's end.
pub struct MeshSender {
    settings: watch::Sender<Option<MeshSettings>>,
    settled: watch::Receiver<Option<String>>,
}

/// The renew loop's end.
pub struct MeshReceiver {
    /// The latest mesh settings pushed (`None` until a control plane with a CA sends some).
    pub settings: watch::Receiver<Option<MeshSettings>>,
    settled: watch::Sender<Option<String>>,
}

/// A connected pair of ends.
pub fn channel() -> (MeshSender, MeshReceiver) {
    let (settings, settings_rx) = watch::channel(None);
    let (settled, settled_rx) = watch::channel(None);
    (MeshSender { settings, settled: settled_rx }, MeshReceiver { settings: settings_rx, settled })
}

impl MeshSender {
    /// Hands `mesh` to the renew loop, waking it only when the settings changed.
    pub fn publish(&self, mesh: MeshSettings) {
        self.settings.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&mesh);
            *current = Some(mesh);
            changed
        });
    }

    /// Waits until the renew loop has acted on `bundle_pem`; `false` when it did not within
    /// [`IN_FORCE_WITHIN`], or is gone.
    pub async fn in_force(&self, bundle_pem: &str) -> bool {
        let mut settled = self.settled.clone();
        let acted = settled.wait_for(|bundle| bundle.as_deref() == Some(bundle_pem));
        let in_force = matches!(tokio::time::timeout(IN_FORCE_WITHIN, acted).await, Ok(Ok(_)));
        in_force
    }
}

impl MeshReceiver {
    /// The renew loop has acted on `bundle_pem`: it is in force, or was refused as unusable,
    /// or there is no certificate yet (the first one goes in force with it).
    pub fn settled(&self, bundle_pem: &str) {
        self.settled.send_if_modified(|current| {
            let changed = current.as_deref() != Some(bundle_pem);
            if changed {
                *current = Some(bundle_pem.to_owned());
            }
            changed
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use pilotfish_api::authz::MeshDefault;
    use tokio::time::Instant;

    use super::*;

    /// Settings pushing `bundle`.
    pub fn settings(bundle: &str) -> MeshSettings {
        MeshSettings {
            trust_domain: "pilotfish.local".into(),
            trust_bundle_pem: bundle.into(),
            authz_default: MeshDefault::Authenticated,
            renew_before: None,
        }
    }

    #[test]
    fn only_changed_settings_wake_the_renew_loop() {
        let (tx, mut rx) = channel();
        tx.publish(settings("ROOT"));
        assert!(rx.settings.has_changed().unwrap());
        rx.settings.borrow_and_update();
        tx.publish(settings("ROOT"));
        assert!(!rx.settings.has_changed().unwrap());
        tx.publish(settings("NEXT"));
        assert!(rx.settings.has_changed().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn in_force_waits_for_that_bundle_and_no_other() {
        let (tx, rx) = channel();
        let waiting = tokio::spawn(async move {
            let start = Instant::now();
            (tx.in_force("NEXT").await, start.elapsed())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        rx.settled("OLD");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        rx.settled("NEXT");
        let (in_force, waited) = waiting.await.unwrap();
        assert!(in_force);
        assert_eq!(waited, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_renew_loop_holds_an_ack_back_only_so_long() {
        let (tx, rx) = channel();
        rx.settled("OLD");
        let start = Instant::now();
        assert!(!tx.in_force("NEXT").await);
        assert_eq!(start.elapsed(), IN_FORCE_WITHIN);
        // Acted on already: at once.
        assert!(tx.in_force("OLD").await);
        assert_eq!(start.elapsed(), IN_FORCE_WITHIN);
        // A renew loop that is gone holds nothing back.
        drop(rx);
        assert!(!tx.in_force("NEXT").await);
        assert_eq!(start.elapsed(), IN_FORCE_WITHIN);
    }
}
