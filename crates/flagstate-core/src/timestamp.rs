//! [`Timestamp`]: the instants the index records (when a tag was first seen at its
//! digest, when a repository appeared), in milliseconds since the Unix epoch.
//!
//! Stores keep the integer; answers carry RFC 3339 in UTC (`2026-12-03T10:56:03.123Z`).
//! Parsing accepts any RFC 3339 offset and fraction, as registries send them (the CNCF
//! distribution registry writes Go's `RFC3339Nano` with the local offset).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant, in whole milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// A text that is not an RFC 3339 date-time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 date-time ({reason})")]
pub struct TimestampError {
    text: String,
    reason: String,
}

impl Timestamp {
    /// The instant `millis` milliseconds after the epoch (negative: before it).
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// Parses an RFC 3339 date-time (any offset; fractions below a millisecond are
    /// dropped).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| TimestampError {
            text: text.chars().take(64).collect(),
            reason: e.to_string(),
        })?;
        let millis = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        Ok(Timestamp(i64::try_from(millis).unwrap_or(i64::MAX)))
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-12-03T10:56:03.123Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        let millis = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Timestamp(millis)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000_000;
        let Ok(at) = OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            // Outside years -9999..=9999: no RFC 3339 form; say the number instead.
            return write!(f, "@{}ms", self.0);
        };
        let (year, month, day) = (at.year(), u8::from(at.month()), at.day());
        let (hour, minute, second) = (at.hour(), at.minute(), at.second());
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
            at.millisecond()
        )
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds_and_round_trips() {
        let t = Timestamp::from_millis(1_796_295_363_123);
        assert_eq!(t.to_rfc3339(), "2026-12-03T10:56:03.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t));
        assert_eq!(
            Timestamp::from_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_offsets_and_nanoseconds_as_registries_send_them() {
        let go = Timestamp::parse_rfc3339("2026-12-03T02:56:03.123456789-08:00").unwrap();
        assert_eq!(go.to_rfc3339(), "2026-12-03T10:56:03.123Z");
        let plain = Timestamp::parse_rfc3339("2026-12-03T10:56:03Z").unwrap();
        assert_eq!(plain.as_millis() % 1000, 0);
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("2026-13-03T10:56:03Z").is_err());
    }

    #[test]
    fn now_is_after_the_epoch_and_serde_uses_rfc3339() {
        assert!(Timestamp::now() > Timestamp::from_millis(0));
        let t = Timestamp::from_millis(1_500);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"1970-01-01T00:00:01.500Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
