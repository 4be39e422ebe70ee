//! Durations written the Gateway API way (GEP-2257): one to four `<number><unit>` parts, units
//! `h`, `m`, `s`, `ms` — for example `500ms`, `2s`, `1h30m`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration with millisecond precision, parsed from and printed as `1h30m`-style text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: expected one to four parts like 500ms, 2s, 1m or 1h30m")]
pub struct ParseDurationError {
    text: String,
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError { text: text.to_owned() };
        let mut rest = text;
        let mut total_ms: u64 = 0;
        let mut parts = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 5 {
                return Err(err());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let (unit_ms, unit_len) = if rest.starts_with("ms") {
                (1, 2)
            } else if rest.starts_with('h') {
                (3_600_000, 1)
            } else if rest.starts_with('m') {
                (60_000, 1)
            } else if rest.starts_with('s') {
                (1_000, 1)
            } else {
                return Err(err());
            };
            rest = &rest[unit_len..];
            total_ms += value * unit_ms;
            parts += 1;
            if parts > 4 {
                return Err(err());
            }
        }
        if parts == 0 {
            return Err(err());
        }
        Ok(Self::from_millis(total_ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What [`Duration::from_str`] accepts, in the ECMA-262 dialect OpenAPI uses.
pub const PATTERN: &str = "^([0-9]{1,5}(ms|h|m|s)){1,4}$";

/// Written by hand: the derive would describe the inner `std::time::Duration`, not the text.
impl utoipa::PartialSchema for Duration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(PATTERN))
            .description(Some(
                "A duration: one to four parts of up to 5 digits and a unit h, m, s or ms (Gateway API GEP-2257)",
            ))
            .examples(["250ms", "2s", "1h30m"])
            .into()
    }
}

impl utoipa::ToSchema for Duration {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_api_forms() {
        assert_eq!("500ms".parse(), Ok(Duration::from_millis(500)));
        assert_eq!("2s".parse(), Ok(Duration::from_secs(2)));
        assert_eq!("1h30m".parse(), Ok(Duration::from_secs(5400)));
        assert_eq!("1m1s1ms".parse(), Ok(Duration::from_millis(61_001)));
        assert_eq!("0s".parse(), Ok(Duration::from_millis(0)));
    }

    #[test]
    fn refuses_malformed_text() {
        for bad in ["", "2", "s", "1.5s", "-1s", "2 s", "100000s", "1h1m1s1ms1h", "2d"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn the_schema_pattern_accepts_what_parsing_accepts() {
        let pattern = regex::Regex::new(PATTERN).unwrap();
        for text in ["500ms", "2s", "1h30m", "1m1s1ms", "0s", "99999h", "1s1s1s1s"] {
            assert!(pattern.is_match(text) && text.parse::<Duration>().is_ok(), "{text}");
        }
        for text in ["", "2", "s", "1.5s", "-1s", "2 s", "100000s", "1h1m1s1ms1h", "2d"] {
            assert!(!pattern.is_match(text) && text.parse::<Duration>().is_err(), "{text}");
        }
    }

    #[test]
    fn prints_what_it_parses() {
        for text in ["500ms", "2s", "1h30m", "1m1s1ms", "0s"] {
            assert_eq!(text.parse::<Duration>().unwrap().to_string(), text);
        }
    }
}
