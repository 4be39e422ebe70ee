//! Telling mesh mTLS from everything else on the inbound port, from the bytes a connection
//! started with: a ClientHello that offers a mesh ALPN is a sidecar; other TLS (the app's own,
//! a browser) and plaintext are passed through or refused by the port's mode.
//!
//! The hello is parsed by a throw-away `rustls::server::Acceptor` fed a *copy* of the prefix
//! protocol detection buffered, never by the connection itself: a passthrough must still
//! replay every byte. (tokio-rustls' `LazyConfigAcceptor` would consume them.)

use rustls::server::Acceptor;

use super::alpn::MeshAlpn;
use super::reason::FailureReason;

/// A TLS record header: content type, version, length.
const RECORD_HEADER: usize = 5;
/// TLS record content type `handshake`.
const HANDSHAKE: u8 = 0x16;
/// The most a hello may take to be sniffed: one record of the largest plaintext size
/// (RFC 8446 §5.1, 2^14 bytes). A mesh hello is a few hundred bytes; one that needs more is not
/// a sidecar's, and waiting for it would let a peer hold a buffer open.
pub const MAX_HELLO: usize = RECORD_HEADER + (1 << 14);

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// A ClientHello offering this mesh protocol: terminate mesh mTLS.
    Mesh(MeshAlpn),
    /// TLS without a mesh ALPN (or a hello too large or malformed to be a sidecar's).
    OtherTls,
    /// Not TLS.
    Plaintext,
    /// A TLS record has started, but the hello is not complete: read until `need` bytes (in
    /// all, never more than [`MAX_HELLO`]) are buffered, then sniff again.
    Incomplete { need: usize },
}

impl Sniff {
    /// Why a port that accepts only mesh mTLS refuses this connection; `None` for mesh mTLS
    /// (and for an incomplete hello, not yet judged).
    pub fn refusal(self) -> Option<FailureReason> {
        match self {
            Sniff::Plaintext => Some(FailureReason::Plaintext),
            Sniff::OtherTls => Some(FailureReason::NonMeshTls),
            Sniff::Mesh(_) | Sniff::Incomplete { .. } => None,
        }
    }
}

/// Sniffs the bytes a connection started with; `prefix` is only read.
pub fn sniff(prefix: &[u8]) -> Sniff {
    match prefix {
        [] => return Sniff::Incomplete { need: RECORD_HEADER },
        [first, ..] if *first != HANDSHAKE => return Sniff::Plaintext,
        [_, major, ..] if *major != 3 => return Sniff::Plaintext,
        _ => {}
    }
    let mut acceptor = Acceptor::default();
    let mut copy = &prefix[..prefix.len().min(MAX_HELLO)];
    while !copy.is_empty() {
        match acceptor.read_tls(&mut copy) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Sniff::OtherTls,
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let offered = accepted.client_hello().alpn().into_iter().flatten();
            offered.filter_map(MeshAlpn::from_bytes).next().map_or(Sniff::OtherTls, Sniff::Mesh)
        }
        Ok(None) => match record_end(prefix) {
            need if need > MAX_HELLO => Sniff::OtherTls,
            need => Sniff::Incomplete { need },
        },
        Err(_) => Sniff::OtherTls,
    }
}

/// How many bytes the buffered records need in all to end the one that is still partial (a
/// hello may span records, though a sidecar's never does).
fn record_end(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + RECORD_HEADER) else {
            return at + RECORD_HEADER;
        };
        let end = at + RECORD_HEADER + usize::from(u16::from_be_bytes([header[3], header[4]]));
        if buf.len() < end {
            return end;
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_end_reads_the_length_of_the_partial_record() {
        assert_eq!(record_end(b""), RECORD_HEADER);
        assert_eq!(record_end(b"\x16\x03\x01"), RECORD_HEADER);
        assert_eq!(record_end(b"\x16\x03\x01\x01\x00"), RECORD_HEADER + 256);
        let mut two = vec![0x16, 3, 1, 0, 2, 0xaa, 0xbb, 0x16, 3, 1, 0, 9];
        assert_eq!(record_end(&two), 7 + RECORD_HEADER + 9);
        two.truncate(9);
        assert_eq!(record_end(&two), 7 + RECORD_HEADER);
    }

    #[test]
    fn a_hello_too_large_for_a_sidecar_is_not_waited_for() {
        assert_eq!(sniff(b"\x16\x03\x01\x40\x00"), Sniff::Incomplete { need: MAX_HELLO });
        assert_eq!(sniff(b"\x16\x03\x01\x40\x01"), Sniff::OtherTls);
    }
}
