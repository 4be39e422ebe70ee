//! The transport header a sidecar sends first on a `pilotfish.io/tcp` mesh connection, inside
//! the mTLS: what follows (opaque bytes, or raw HTTP/1.1 for a protocol upgrade) and which app
//! port it is for. Fixed size, so the receiving side reads it with one bounded `read_exact`
//! (linkerd's transport header does the same job with a length-prefixed message).
//!
//! Layout: `b"PF"`, version `1`, the kind, the port (big-endian; 0: the port the connection
//! itself is for).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

const MAGIC: [u8; 2] = *b"PF";
const VERSION: u8 = 1;
pub const LEN: usize = 6;

/// What the rest of a `pilotfish.io/tcp` connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// Opaque TCP, forwarded byte for byte.
    Opaque,
    /// Raw HTTP/1.1 (a WebSocket or other upgrade): served as HTTP, then tunnelled.
    Http1,
}

/// The header of one `pilotfish.io/tcp` connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportHeader {
    pub carried: Carried,
    /// The app port the connection is for; 0 when it is the port the connection reached.
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("reading the mesh transport header: {0}")]
    Io(#[from] io::Error),
    #[error("not a mesh transport header (bad magic or version {0})")]
    Unknown(u8),
    #[error("unknown kind {0} in the mesh transport header")]
    Kind(u8),
}

impl TransportHeader {
    pub fn encode(self) -> [u8; LEN] {
        let kind = match self.carried {
            Carried::Opaque => 0,
            Carried::Http1 => 1,
        };
        let [hi, lo] = self.port.to_be_bytes();
        [MAGIC[0], MAGIC[1], VERSION, kind, hi, lo]
    }

    pub fn decode(bytes: [u8; LEN]) -> Result<TransportHeader, HeaderError> {
        if bytes[..2] != MAGIC || bytes[2] != VERSION {
            return Err(HeaderError::Unknown(bytes[2]));
        }
        let carried = match bytes[3] {
            0 => Carried::Opaque,
            1 => Carried::Http1,
            other => return Err(HeaderError::Kind(other)),
        };
        Ok(TransportHeader { carried, port: u16::from_be_bytes([bytes[4], bytes[5]]) })
    }

    /// Reads a header from the start of `io` (the caller bounds the wait).
    pub async fn read<I: AsyncRead + Unpin>(io: &mut I) -> Result<TransportHeader, HeaderError> {
        let mut bytes = [0u8; LEN];
        io.read_exact(&mut bytes).await?;
        TransportHeader::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_refuses_what_is_not_a_header() {
        for carried in [Carried::Opaque, Carried::Http1] {
            let header = TransportHeader { carried, port: 8080 };
            let bytes = header.encode();
            assert_eq!(TransportHeader::read(&mut &bytes[..]).await.unwrap(), header);
        }
        assert!(matches!(TransportHeader::decode(*b"GET / "), Err(HeaderError::Unknown(_))));
        assert!(matches!(TransportHeader::decode([b'P', b'F', 1, 7, 0, 0]), Err(HeaderError::Kind(7))));
        assert!(matches!(TransportHeader::read(&mut &b"PF"[..]).await, Err(HeaderError::Io(_))));
    }
}
