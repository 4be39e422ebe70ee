//! The wire protocol's version: what each message carries in `protocol`, which versions a
//! receiver accepts, the error for one it does not, and the defaults of fields older peers
//! leave out.
//!
//! Protocol `N + 1` only adds to protocol `N` (new fields, new optional behaviour), and every
//! receiver ignores fields it does not know, so two peers whose protocols differ by one read
//! each other's messages. A peer further apart may have changed what a field means: it is
//! refused with [`UnsupportedProtocol`] rather than misread.

use std::ops::RangeInclusive;

/// The protocol this build speaks, sent in every push line, ACK/NACK and registration.
///
/// - 1: configuration snapshots on the push stream; ACK/NACK; registration; telemetry reports.
/// - 2: tap lines on the push stream (`{"protocol":2,"tap":{"filters":[..]}}`) and tap reports.
///   A line unlike a snapshot would break a protocol-1 sidecar's stream (it reconnects), so the
///   control plane sends tap lines only to sidecars whose push query says 2 or later.
pub const PROTOCOL_VERSION: u32 = 2;

/// The protocol of a message without the field: peers from before the field existed, whose
/// messages are otherwise exactly protocol 1's.
pub const UNVERSIONED_PROTOCOL: u32 = 1;

/// The protocols this build accepts: one behind (there is none before the first) and one ahead
/// of its own.
pub const SUPPORTED_PROTOCOLS: RangeInclusive<u32> = oldest_supported()..=PROTOCOL_VERSION + 1;

const fn oldest_supported() -> u32 {
    if PROTOCOL_VERSION > UNVERSIONED_PROTOCOL {
        PROTOCOL_VERSION - 1
    } else {
        UNVERSIONED_PROTOCOL
    }
}

/// A message from a peer whose protocol is more than one version from this build's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "protocol version {got} is not supported (this side speaks {PROTOCOL_VERSION} and accepts {} to {}): \
     run sidecars within one minor release of the control plane",
    SUPPORTED_PROTOCOLS.start(),
    SUPPORTED_PROTOCOLS.end()
)]
pub struct UnsupportedProtocol {
    pub got: u32,
}

/// Whether a message of protocol `got` may be read by this build.
pub fn check(got: u32) -> Result<(), UnsupportedProtocol> {
    if SUPPORTED_PROTOCOLS.contains(&got) {
        Ok(())
    } else {
        Err(UnsupportedProtocol { got })
    }
}

/// A message that carries the protocol version of its sender.
pub trait Versioned {
    fn protocol(&self) -> u32;

    /// [`check`] on this message's protocol.
    fn check_protocol(&self) -> Result<(), UnsupportedProtocol> {
        check(self.protocol())
    }
}

/// The serde default of `protocol`, for messages from peers that predate the field.
pub(crate) fn unversioned() -> u32 {
    UNVERSIONED_PROTOCOL
}

/// The namespace of a message (or document) that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The serde default of a namespace left out.
pub(crate) fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_version_either_side_is_accepted_and_further_is_refused() {
        for got in [PROTOCOL_VERSION, PROTOCOL_VERSION + 1, *SUPPORTED_PROTOCOLS.start()] {
            assert_eq!(check(got), Ok(()), "{got}");
        }
        let far = PROTOCOL_VERSION + 2;
        let err = check(far).unwrap_err();
        assert_eq!(err, UnsupportedProtocol { got: far });
        assert!(err.to_string().contains("within one minor release"), "{err}");
        assert_eq!(check(UNVERSIONED_PROTOCOL), Ok(()), "today's peers without the field");
        assert!(check(0).is_err(), "there is no protocol before the first");
    }
}
