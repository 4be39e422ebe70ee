//! Correlation headers: `x-request-id` is generated when missing (UUID v4) and propagated; W3C
//! `traceparent` is continued with a new span id per hop (an invalid or missing one is replaced
//! by a new trace, sampled unless the sidecar exports traces and its ratio says otherwise), and
//! `tracestate` passes through untouched.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::telemetry::trace::{Hop, Sampling};

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
///
/// With `sampling` (the sidecar exports traces), a new trace's sampled flag is the ratio's
/// decision, and the hop's ids come back when it is sampled (by that flag, or by the one that
/// arrived) so that its span can be exported. Without, a new trace is flagged sampled, for
/// whatever records traces further on, and nothing comes back.
pub fn next_hop(headers: &mut HeaderMap, sampling: Option<Sampling>) -> Option<Hop> {
    // `00-` trace (32 hex) `-` span (16 hex) `-` flags (2 hex), written in place: `format!`
    // of a u128 in hex and a `String` then copied into the value cost more than the rest of
    // this function (measured with `benches/instructions.sh`).
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let span = span_id();
    let hop = match headers.get(&TRACEPARENT).and_then(|v| parse(v.as_bytes())) {
        Some(Parsed { trace, parent, flags }) => {
            out[3..35].copy_from_slice(trace.as_bytes());
            out[53..55].copy_from_slice(flags.as_bytes());
            // The sampled flag is the lowest bit of the flags; parse has checked the hex.
            let sampled = u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1);
            sampling.filter(|_| sampled).map(|_| Hop {
                trace: u128::from_str_radix(trace, 16).expect("checked hex"),
                parent: Some(u64::from_str_radix(parent, 16).expect("checked hex")),
                span,
            })
        }
        None => {
            let trace = trace_id();
            hex(trace, &mut out[3..35]);
            match sampling {
                Some(ratio) if !ratio.samples(trace) => {
                    out[54] = b'0';
                    None
                }
                Some(_) => Some(Hop { trace, parent: None, span }),
                None => None,
            }
        }
    };
    hex(u128::from(span), &mut out[36..52]);
    headers.insert(&TRACEPARENT, HeaderValue::from_bytes(&out).expect("hex is a header value"));
    hop
}

/// Writes the low `out.len()` hex digits of `n` into `out`, lowercase.
fn hex(mut n: u128, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The fields of a valid `traceparent` that a hop reads.
struct Parsed<'a> {
    trace: &'a str,
    parent: &'a str,
    flags: &'a str,
}

/// `version-traceid-parentid-flags` (W3C Trace Context §3.2), when valid.
fn parse(value: &[u8]) -> Option<Parsed<'_>> {
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
    .then_some(Parsed { trace, parent, flags })
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
        next_hop(&mut h, None);
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
        next_hop(&mut h, None);
        let new = h[&TRACEPARENT].to_str().unwrap();
        assert_eq!(new.len(), 55);
        assert!(parse(new.as_bytes()).is_some_and(|p| p.flags == "01"), "{new}");
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
            next_hop(&mut h, None);
            let out = h[&TRACEPARENT].to_str().unwrap().to_owned();
            assert!(parse(out.as_bytes()).is_some(), "{out}");
            assert_ne!(&out[3..35], bad.get(3..35).unwrap_or(""), "{bad} was continued");
        }
    }

    #[test]
    fn a_sampled_traceparent_gives_the_hop_its_ids() {
        let mut h = HeaderMap::new();
        h.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let none = Sampling::ratio(0.0);
        let hop = next_hop(&mut h, none).expect("the sampled flag that arrived decides");
        assert_eq!(hop.trace, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(hop.parent, Some(0xb7ad6b7169203331));
        let out = h[&TRACEPARENT].to_str().unwrap();
        assert_eq!(out, format!("00-0af7651916cd43dd8448eb211c80319c-{:016x}-01", hop.span));
    }

    #[test]
    fn an_unsampled_traceparent_stays_unsampled() {
        for flags in ["00", "02"] {
            let mut h = HeaderMap::new();
            let incoming = format!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}");
            h.insert(&TRACEPARENT, HeaderValue::from_str(&incoming).unwrap());
            assert_eq!(next_hop(&mut h, Some(Sampling::ALL)), None);
            assert!(h[&TRACEPARENT].to_str().unwrap().ends_with(&format!("-{flags}")));
        }
    }

    #[test]
    fn a_new_trace_is_flagged_as_the_ratio_decides() {
        let mut h = HeaderMap::new();
        let hop = next_hop(&mut h, Some(Sampling::ALL)).expect("sampled");
        assert_eq!(hop.parent, None);
        let out = h[&TRACEPARENT].to_str().unwrap();
        assert_eq!(out, format!("00-{:032x}-{:016x}-01", hop.trace, hop.span));
        let mut h = HeaderMap::new();
        assert_eq!(next_hop(&mut h, Sampling::ratio(0.0)), None);
        assert!(h[&TRACEPARENT].to_str().unwrap().ends_with("-00"));
        // Not exporting: new traces are flagged sampled for whoever records them further on.
        let mut h = HeaderMap::new();
        assert_eq!(next_hop(&mut h, None), None);
        assert!(h[&TRACEPARENT].to_str().unwrap().ends_with("-01"));
    }
}
