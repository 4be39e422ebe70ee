//! The mesh's ALPN protocol names: what a sidecar offers when it dials another sidecar, and
//! what marks a ClientHello on the inbound port as mesh mTLS rather than the app's own TLS.
//!
//! Not `h2`: browsers and gRPC clients offer it too, so it cannot tell a sidecar from an app.

/// What runs inside a mesh mTLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeshAlpn {
    /// HTTP over HTTP/2 between two sidecars (`pilotfish.io/h2`).
    Http2,
    /// Opaque bytes after a transport header (`pilotfish.io/tcp`).
    Tcp,
}

impl MeshAlpn {
    /// Every mesh protocol, in the inbound server's order of preference.
    pub const ALL: [MeshAlpn; 2] = [MeshAlpn::Http2, MeshAlpn::Tcp];

    /// The protocol name on the wire.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            MeshAlpn::Http2 => b"pilotfish.io/h2",
            MeshAlpn::Tcp => b"pilotfish.io/tcp",
        }
    }

    /// The mesh protocol this wire name stands for, if it is one.
    pub fn from_bytes(name: &[u8]) -> Option<MeshAlpn> {
        MeshAlpn::ALL.into_iter().find(|alpn| alpn.as_bytes() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_plain_h2_is_not_mesh() {
        for alpn in MeshAlpn::ALL {
            assert_eq!(MeshAlpn::from_bytes(alpn.as_bytes()), Some(alpn));
        }
        assert_eq!(MeshAlpn::from_bytes(b"h2"), None);
        assert_eq!(MeshAlpn::from_bytes(b"pilotfish.io/h2x"), None);
    }
}
