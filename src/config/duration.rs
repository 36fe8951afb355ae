//! Durations in configuration: Go-style strings (`5s`, `1h30m`, `250ms`) as the original
//! accepted, parsed by `humantime`, plus a bare `0` meaning "zero" (for intervals: never).

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Deserialises a duration from a string with units or the number `0`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Like [`deserialize`], for an optional key whose absence means "the component's own
/// default" (use with `#[serde(default)]`).
pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    deserialize(deserializer).map(Some)
}

/// Parses a duration string; `"0"` is zero.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid duration {text:?} ({e}); write a number with a unit, e.g. 30s, 5m, 1h30m")
    })
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30s\", \"5m\" or \"1h\", or 0")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        if v == 0 {
            Ok(Duration::ZERO)
        } else {
            // A bare number is ambiguous (seconds? milliseconds?); the original rejected
            // it too.
            Err(E::custom(format!(
                "duration {v} has no unit; write e.g. \"{v}s\" or \"{v}m\""
            )))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("duration {v} is negative"))),
        }
    }
}
