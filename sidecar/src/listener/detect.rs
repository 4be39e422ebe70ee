//! Protocol detection: read the first bytes of a connection and decide HTTP/1.x, HTTP/2 (prior
//! knowledge), TLS or opaque TCP, and for TLS on the inbound port read on until the ClientHello
//! tells a sidecar's mesh mTLS from other TLS ([`read_hello`]). The bytes read are replayed to
//! whoever handles the connection through [`PrefixedIo`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::tls::sniff::{sniff, Sniff, MAX_HELLO};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A request line longer than this is not worth waiting for: the connection is opaque.
const MAX_PEEK: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tls,
    Opaque,
}

/// Reads until the protocol is known, the peer stops sending for `timeout` (→ opaque: a
/// server-speaks-first protocol, or a client that waits), or the peer closes.
pub async fn detect<I: AsyncRead + Unpin>(io: &mut I, timeout: Duration) -> io::Result<(Detected, Bytes)> {
    let (found, prefix, _closed) = peek(io, timeout).await?;
    Ok((found.unwrap_or(Detected::Opaque), prefix))
}

/// Detection on a port declared HTTP, where nothing falls back to opaque TCP (that would skip
/// routes and policies): HTTP/2 prior knowledge or HTTP/1 — bytes that are not HTTP at all, or
/// a request line longer than detection reads, go to the HTTP server, which answers 400 or 431.
/// `None`: no request line within `timeout` (→ 408); a peer that closes before sending one is an
/// `UnexpectedEof` error (a TCP health check or a port scan, owed no answer).
pub async fn detect_http<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
) -> io::Result<(Option<Detected>, Bytes)> {
    let (found, prefix, closed) = peek(io, timeout).await?;
    let found = match found {
        Some(Detected::Http2) => Some(Detected::Http2),
        Some(_) => Some(Detected::Http1),
        None if prefix.len() >= MAX_PEEK => Some(Detected::Http1),
        None if closed => return Err(io::ErrorKind::UnexpectedEof.into()),
        None => None,
    };
    Ok((found, prefix))
}

/// Reads until [`classify`] decides, [`MAX_PEEK`] bytes are in, the peer closes, or `timeout`
/// passes; `None` when still undecided, and whether the peer closed.
async fn peek<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
) -> io::Result<(Option<Detected>, Bytes, bool)> {
    let mut buf = BytesMut::with_capacity(MAX_PEEK);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_elapsed) => return Ok((None, buf.freeze(), false)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => return Ok((classify(&buf), buf.freeze(), true)),
            Ok(Ok(_)) => {
                let found = classify(&buf);
                if found.is_some() || buf.len() >= MAX_PEEK {
                    return Ok((found, buf.freeze(), false));
                }
            }
        }
    }
}

/// After [`detect`] found TLS: reads on until the ClientHello can be judged — its first record
/// complete, never more than [`MAX_HELLO`] bytes — or `deadline` passes or the peer stops
/// (then it is not a sidecar's: [`Sniff::OtherTls`]). Returns the verdict and every byte read,
/// `prefix` first, for a passthrough or the handshake to replay.
pub async fn read_hello<I: AsyncRead + Unpin>(
    io: &mut I,
    prefix: Bytes,
    deadline: Instant,
) -> io::Result<(Sniff, Bytes)> {
    let mut buf = BytesMut::from(prefix);
    loop {
        let need = match sniff(&buf) {
            Sniff::Incomplete { need } => need.min(MAX_HELLO),
            found => return Ok((found, buf.freeze())),
        };
        // Exactly what the record still needs: a peer cannot make this buffer grow past it.
        // Sniffed again only once it is all here, so a peer trickling bytes costs one parse.
        if buf.len() >= need {
            // A hello larger than any sidecar sends: not one.
            return Ok((Sniff::OtherTls, buf.freeze()));
        }
        while buf.len() < need {
            let missing = (need - buf.len()) as u64;
            match tokio::time::timeout_at(deadline, (&mut *io).take(missing).read_buf(&mut buf)).await {
                Err(_) | Ok(Ok(0)) => return Ok((Sniff::OtherTls, buf.freeze())),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// `None` while the bytes so far could still be either.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    // RFC 9112 §2.2: a server ignores empty lines before a request line.
    let buf = trim_leading_crlf(buf);
    if buf.is_empty() {
        return None;
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return None;
    }
    if buf.starts_with(H2_PREFACE) {
        return Some(Detected::Http2);
    }
    // A TLS record: handshake (0x16), protocol version 3.x.
    if buf[0] == 0x16 {
        return match buf.get(1) {
            None => None,
            Some(3) => Some(Detected::Tls),
            Some(_) => Some(Detected::Opaque),
        };
    }
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) => {
            let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
            Some(if is_http1_request_line(line) { Detected::Http1 } else { Detected::Opaque })
        }
        // Keep reading while this can still become a request line.
        None if buf.iter().all(|b| b.is_ascii_graphic() || *b == b' ') => None,
        None => Some(Detected::Opaque),
    }
}

fn trim_leading_crlf(mut buf: &[u8]) -> &[u8] {
    while let Some(rest) = buf.strip_prefix(b"\r\n").or_else(|| buf.strip_prefix(b"\n")) {
        buf = rest;
    }
    buf
}

/// `METHOD SP request-target SP HTTP/1.x` (RFC 9112 §3).
fn is_http1_request_line(line: &[u8]) -> bool {
    let Some(method_end) = line.iter().position(|b| *b == b' ') else {
        return false;
    };
    let method = &line[..method_end];
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    !method.is_empty()
        && method.iter().all(is_tchar)
        && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
        && line.len() > method_end + " HTTP/1.1".len()
}

pin_project_lite::pin_project! {
    /// An I/O stream that first yields bytes already read from it.
    pub struct PrefixedIo<I> {
        prefix: Bytes,
        #[pin]
        io: I,
    }
}

impl<I> PrefixedIo<I> {
    pub fn new(prefix: Bytes, io: I) -> Self {
        Self { prefix, io }
    }

    pub fn into_parts(self) -> (Bytes, I) {
        (self.prefix, self.io)
    }
}

impl<I: AsyncRead> AsyncRead for PrefixedIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(out.remaining());
            out.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if !this.prefix.has_remaining() {
                // Replayed: let the detection buffer (8 KiB) go now, not when the connection
                // ends — 32 open connections held 256 KiB of spent prefixes.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        this.io.poll_read(cx, out)
    }
}

impl<I: AsyncWrite> AsyncWrite for PrefixedIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod hello_tests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: x\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"PURGE /cache HTTP/1.0\r\n"), Some(Detected::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"\x16\x03\x01\x02\x00\x01"), Some(Detected::Tls));
        assert_eq!(classify(b"PING\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"GET / SPDY/3\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"\x00\x01binary"), Some(Detected::Opaque));
    }

    #[test]
    fn waits_while_undecided() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(b"GET /some/long/pa"), None);
        assert_eq!(classify(b"\x16"), None);
        assert_eq!(classify(b"\r\n"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_is_opaque_after_the_timeout() {
        let (mut client, _server) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        let (found, prefix) = detect(&mut client, Duration::from_secs(10)).await.unwrap();
        assert_eq!(found, Detected::Opaque);
        assert!(prefix.is_empty());
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_declared_http_port_never_falls_back_to_opaque() {
        use tokio::io::AsyncWriteExt;
        let timeout = Duration::from_secs(10);
        // Silent, or a request line that never ends: no request (→ 408).
        let (mut client, mut peer) = tokio::io::duplex(MAX_PEEK * 2);
        peer.write_all(b"GET /slow").await.unwrap();
        assert_eq!(detect_http(&mut client, timeout).await.unwrap().0, None);
        // A peer that closes without a request line is owed nothing.
        drop(peer);
        let err = detect_http(&mut client, timeout).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // A request line longer than detection reads is still HTTP/1 (the server's header limit
        // decides); so is garbage (the server answers 400).
        let (mut client, mut peer) = tokio::io::duplex(MAX_PEEK * 2);
        peer.write_all(&[b'a'; MAX_PEEK + 10]).await.unwrap();
        assert_eq!(detect_http(&mut client, timeout).await.unwrap().0, Some(Detected::Http1));
        let (mut client, mut peer) = tokio::io::duplex(64);
        peer.write_all(b"\x00\x01binary\r\n").await.unwrap();
        assert_eq!(detect_http(&mut client, timeout).await.unwrap().0, Some(Detected::Http1));
        let (mut client, mut peer) = tokio::io::duplex(64);
        peer.write_all(H2_PREFACE).await.unwrap();
        assert_eq!(detect_http(&mut client, timeout).await.unwrap().0, Some(Detected::Http2));
        // Undeclared, the same long line is opaque.
        let (mut client, mut peer) = tokio::io::duplex(MAX_PEEK * 2);
        peer.write_all(&[b'a'; MAX_PEEK + 10]).await.unwrap();
        assert_eq!(detect(&mut client, timeout).await.unwrap().0, Detected::Opaque);
    }

    #[tokio::test]
    async fn split_request_line_is_reassembled_and_replayed() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            server.write_all(b"GET /a HT").await.unwrap();
            tokio::task::yield_now().await;
            server.write_all(b"TP/1.1\r\n\r\n").await.unwrap();
            server
        });
        let (found, prefix) = detect(&mut client, Duration::from_secs(10)).await.unwrap();
        assert_eq!(found, Detected::Http1);
        let _server = writer.await.unwrap();
        let mut replay = PrefixedIo::new(prefix, client);
        let mut first = [0u8; 19];
        replay.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"GET /a HTTP/1.1\r\n\r\n");
    }

    /// First bytes that are mostly what a client might send: request-line pieces, the HTTP/2
    /// preface, TLS record starts, line ends, and any byte at all.
    fn first_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(b"GET ".to_vec()),
            Just(b"/path?q=1 ".to_vec()),
            Just(b"HTTP/1.1".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(H2_PREFACE.to_vec()),
            Just(H2_PREFACE[..7].to_vec()),
            Just(vec![0x16, 0x03, 0x01]),
            Just(vec![0x16]),
            Just(vec![b'a'; 9000]),
            proptest::collection::vec(any::<u8>(), 0..64),
        ];
        proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever a peer sends, in whatever chunks, detection ends with a verdict consistent
        /// with `classify` and replays a prefix of exactly what was sent; nothing panics.
        #[test]
        fn any_first_bytes_get_a_verdict_and_are_replayed(bytes in first_bytes(), chunk in 1usize..100) {
            use tokio::io::AsyncWriteExt;
            let verdict = classify(&bytes);
            if verdict == Some(Detected::Http2) {
                proptest::prop_assert!(trim_leading_crlf(&bytes).starts_with(H2_PREFACE));
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
            let (found, prefix) = runtime.block_on(async {
                let (mut client, mut server) = tokio::io::duplex(chunk);
                let sent = bytes.clone();
                // The peer sends everything and then goes quiet without closing, so detection
                // must decide from the bytes or the timeout.
                let writer = tokio::spawn(async move {
                    let _ = server.write_all(&sent).await;
                    server
                });
                let result = detect(&mut client, Duration::from_secs(10)).await.unwrap();
                drop(writer);
                result
            });
            proptest::prop_assert!(bytes.starts_with(&prefix));
            proptest::prop_assert!(prefix.len() <= bytes.len().min(MAX_PEEK + chunk));
            let expected = match classify(&prefix) {
                Some(found) => found,
                // Undecided: the peer went quiet or the peek limit was reached.
                None => Detected::Opaque,
            };
            proptest::prop_assert_eq!(found, expected);
        }
    }
}
