//! Content digests (`algorithm:hex`), the identity of every manifest and blob.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A validated content digest such as `sha256:0123…`.
///
/// Ordering is bytewise on the string form, which is the order the index format uses.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {value:?}: {reason}")]
pub struct DigestError {
    /// The rejected input (truncated to 100 characters).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Digest {
    /// Parses `algorithm:encoded` following the OCI grammar: the algorithm is lowercase
    /// alphanumerics with `+._-` separators, the encoded part `[a-zA-Z0-9=_-]+`; `sha256`
    /// and `sha512` must be lowercase hex of the right length.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let err = |reason| DigestError {
            value: value.chars().take(100).collect(),
            reason,
        };
        let (algorithm, encoded) = value.split_once(':').ok_or_else(|| err("missing ':'"))?;
        if algorithm.is_empty() || encoded.is_empty() {
            return Err(err("empty algorithm or encoded part"));
        }
        // `component (separator component)*`: splitting on the separators leaves no
        // empty component exactly when none leads, trails or follows another.
        if !algorithm.split(['+', '.', '_', '-']).all(|component| {
            !component.is_empty()
                && component
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }) {
            return Err(err(
                "algorithm must be lowercase alphanumerics joined by single +._- separators",
            ));
        }
        if !encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
        {
            return Err(err("encoded part has characters outside [a-zA-Z0-9=_-]"));
        }
        let hex_len = match algorithm {
            "sha256" => Some(64),
            "sha512" => Some(128),
            _ => None,
        };
        if let Some(len) = hex_len
            && (encoded.len() != len
                || !encoded
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(err(
                "sha256/sha512 digests must be lowercase hex of the right length",
            ));
        }
        Ok(Digest(value.to_owned()))
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// Whether `bytes` hash to this digest. Digests of algorithms other than sha256 and
    /// sha512 cannot be checked and are reported as `None`.
    pub fn verify(&self, bytes: &[u8]) -> Option<bool> {
        match self.algorithm() {
            "sha256" => Some(hex::encode(Sha256::digest(bytes)) == self.encoded()),
            "sha512" => Some(hex::encode(sha2::Sha512::digest(bytes)) == self.encoded()),
            _ => None,
        }
    }

    /// The algorithm part (`sha256`).
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or_default()
    }

    /// The encoded part (the hex string for sha256).
    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map(|(_, e)| e).unwrap_or_default()
    }

    /// The full string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_verifies_sha256() {
        let d = Digest::sha256_of(b"hello");
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(Digest::parse(d.as_str()), Ok(d.clone()));
        assert_eq!(d.verify(b"hello"), Some(true));
        assert_eq!(d.verify(b"hellO"), Some(false));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "sha256",
            ":abc",
            "sha256:",
            "SHA256:ab",
            "sha256:xyz",
            "sha256:ABCDEF",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        assert!(Digest::parse("sha256:abc").is_err(), "short sha256");
        assert!(Digest::parse("blake3:abc").is_ok());
    }

    /// The OCI grammar joins algorithm components with single separators; found by the
    /// `names` fuzz target, which checks the parser against that grammar.
    #[test]
    fn algorithm_separators_join_components() {
        for good in ["sha256+b64u:abc", "multihash+base58:Qm1", "a.b_c-d:x"] {
            assert!(Digest::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "a__b:abc",
            "+sha256:abc",
            "sha256+:abc",
            "a.-b:abc",
            "-:abc",
        ] {
            let err = Digest::parse(bad).unwrap_err();
            assert!(err.reason.contains("separators"), "{bad}: {err}");
        }
    }
}
