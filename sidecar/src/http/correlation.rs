//! Correlation headers: `x-request-id` is generated when missing (UUID v4) and propagated; W3C
//! `traceparent` is continued with a new span id per hop (an invalid or missing one is replaced
//! by a new trace), and `tracestate` passes through untouched.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Ensures the request carries an `x-request-id` and returns it (to echo on the response).
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&REQUEST_ID) {
        return id.clone();
    }
    // A version-4 UUID from the thread's fast generator: ids must be unique, not secret, and a
    // getrandom syscall per request would cost more than the rest of the request path.
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id =
        HeaderValue::from_str(uuid.hyphenated().encode_lower(&mut text)).expect("a UUID is a header value");
    headers.insert(&REQUEST_ID, id.clone());
    id
}

/// Rewrites `traceparent` for the next hop: same trace and flags, this hop's new span id.
pub fn next_hop(headers: &mut HeaderMap) {
    // `00-` trace (32 hex) `-` span (16 hex) `-` flags (2 hex), written in place: `format!`
    // of a u128 in hex and a `String` then copied into the value cost more than the rest of
    // this function (measured with `benches/instructions.sh`).
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    match headers.get(&TRACEPARENT).and_then(|v| parse(v.as_bytes())) {
        Some((trace, flags)) => {
            out[3..35].copy_from_slice(trace.as_bytes());
            out[53..55].copy_from_slice(flags.as_bytes());
        }
        None => hex(trace_id(), &mut out[3..35]),
    }
    hex(u128::from(span_id()), &mut out[36..52]);
    headers.insert(&TRACEPARENT, HeaderValue::from_bytes(&out).expect("hex is a header value"));
}

/// Writes the low `out.len()` hex digits of `n` into `out`, lowercase.
fn hex(mut n: u128, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// `version-traceid-parentid-flags` (W3C Trace Context §3.2): the trace id and flags of a valid
/// value.
fn parse(value: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    // Version 00 has exactly four fields; later versions may append more. ff is invalid.
    let fields_ok = version != "00" || parts.next().is_none();
    (hex(version, 2)
        && version != "ff"
        && fields_ok
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2))
    .then_some((trace, flags))
}

fn span_id() -> u64 {
    fastrand::u64(1..)
}

fn trace_id() -> u128 {
    fastrand::u128(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_generated_once_and_kept() {
        let mut h = HeaderMap::new();
        let id = request_id(&mut h);
        assert_eq!(id.len(), 36);
        let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(request_id(&mut h), id);
        let mut given = HeaderMap::new();
        given.insert(&REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(request_id(&mut given), "abc");
    }

    #[test]
    fn valid_traceparent_continues_with_a_new_span() {
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(incoming));
        h.insert("tracestate", HeaderValue::from_static("vendor=1"));
        next_hop(&mut h);
        let out = h[&TRACEPARENT].to_str().unwrap();
        assert!(out.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{out}");
        assert!(out.ends_with("-01"));
        assert_ne!(out, incoming);
        assert_eq!(h["tracestate"], "vendor=1");
    }

    #[test]
    fn ids_are_written_as_fixed_width_lowercase_hex() {
        let mut out = [0u8; 16];
        hex(0xab, &mut out);
        assert_eq!(&out, b"00000000000000ab");
        let mut out = [0u8; 32];
        hex(u128::MAX - 1, &mut out);
        assert_eq!(&out, b"fffffffffffffffffffffffffffffffe");
        let mut h = HeaderMap::new();
        next_hop(&mut h);
        let new = h[&TRACEPARENT].to_str().unwrap();
        assert_eq!(new.len(), 55);
        assert!(parse(new.as_bytes()).is_some_and(|(_, flags)| flags == "01"), "{new}");
    }

    #[test]
    fn invalid_traceparent_is_replaced() {
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "garbage",
        ] {
            let mut h = HeaderMap::new();
            h.insert(&TRACEPARENT, HeaderValue::from_str(bad).unwrap());
            next_hop(&mut h);
            let out = h[&TRACEPARENT].to_str().unwrap().to_owned();
            assert!(parse(out.as_bytes()).is_some(), "{out}");
            assert_ne!(&out[3..35], bad.get(3..35).unwrap_or(""), "{bad} was continued");
        }
    }
}
