//! Repository names and tags: strings that follow the distribution grammar, checked once
//! when they are parsed and carried as [`RepositoryName`] and [`Tag`] from then on.
//!
//! Everything that takes a name from outside (a registry's catalog, a notification, a URL,
//! the configuration) parses it here; stores, the indexer and the HTTP layer receive the
//! typed value and never check it again.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest repository name the index accepts, in bytes (the distribution spec's limit on
/// the whole name as registries apply it).
pub const MAX_REPOSITORY_NAME_LEN: usize = 255;
/// Longest tag, in bytes (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub const MAX_TAG_LEN: usize = 128;

/// Why a string is not a repository name or a tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a repository name.
    #[error("repository {value:?}: {problem}")]
    Repository {
        /// The rejected input (truncated to 300 characters).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Not a tag.
    #[error("tag {value:?}: {problem}")]
    Tag {
        /// The rejected input (truncated to 300 characters).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl NameError {
    /// What is wrong with the input, without the input.
    pub fn problem(&self) -> &'static str {
        match self {
            NameError::Repository { problem, .. } | NameError::Tag { problem, .. } => problem,
        }
    }
}

fn shown(value: &str) -> String {
    value.chars().take(300).collect()
}

/// Checks a repository name against the distribution grammar
/// (`[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*`, separators `.`, `_`,
/// `__`, `-`+, at most [`MAX_REPOSITORY_NAME_LEN`] bytes). Returns what is wrong.
pub fn validate_repository_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("repository name is empty");
    }
    if name.len() > MAX_REPOSITORY_NAME_LEN {
        return Err("repository name is longer than 255 characters");
    }
    for component in name.split('/') {
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
            return Err("each path component must start and end with [a-z0-9]");
        }
        if !bytes.iter().all(|b| alnum(b) || b"._-".contains(b)) {
            return Err("repository names use only [a-z0-9._-/]");
        }
        let separators_ok = component
            .split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .all(|s| s == "." || s == "_" || s == "__" || s.bytes().all(|b| b == b'-'));
        if !separators_ok {
            return Err("separators inside a component are '.', '_', '__' or dashes");
        }
    }
    Ok(())
}

/// Checks a tag against the distribution grammar `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
/// Returns what is wrong.
pub fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let bytes = tag.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_TAG_LEN {
        return Err("tag must be 1 to 128 characters");
    }
    if !(bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_') {
        return Err("tag must start with [A-Za-z0-9_]");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
    {
        return Err("tag uses only [A-Za-z0-9._-]");
    }
    Ok(())
}

/// Defines a validated string newtype: parsing is validation, and the value derefs,
/// borrows, displays and serializes as the string it wraps.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $check:path, $variant:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses (= validates) a value.
            pub fn parse(value: impl AsRef<str> + Into<String>) -> Result<Self, NameError> {
                match $check(value.as_ref()) {
                    Ok(()) => Ok($name(value.into())),
                    Err(problem) => Err(NameError::$variant {
                        value: shown(value.as_ref()),
                        problem,
                    }),
                }
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(value: &str) -> Result<Self, NameError> {
                $name::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                $name::parse(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(value: &str) -> Result<Self, NameError> {
                $name::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// A repository name that follows the distribution grammar, e.g.
    /// `fedora/flatpak-runtime` (see [`validate_repository_name`]).
    ///
    /// Ordering is bytewise, the order the index format lists repositories in.
    RepositoryName,
    validate_repository_name,
    Repository
);

name_type!(
    /// A tag that follows the distribution grammar, e.g. `latest` (see [`validate_tag`]).
    ///
    /// Ordering is bytewise, the order the index format lists tags in.
    Tag,
    validate_tag,
    Tag
);

impl RepositoryName {
    /// The namespace the repository is under: everything before the last `/`, or `None`
    /// for a top-level repository.
    pub fn namespace(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(namespace, _)| namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in [
            "a",
            "a/b",
            "a-c",
            "a.z",
            "a0",
            "fedora/flatpak__x",
            "a--b/c_d",
        ] {
            assert_eq!(validate_repository_name(ok), Ok(()), "{ok}");
            assert_eq!(
                RepositoryName::parse(ok).map(String::from),
                Ok(ok.to_owned())
            );
        }
        // Including the names the store conformance suite used to reject.
        for bad in [
            "", "A", "a/", "/a", "a//b", "-a", "a-", "a..b", "a___b", "a b", "Upper", "Bad Name",
        ] {
            assert!(validate_repository_name(bad).is_err(), "{bad}");
            let err = RepositoryName::parse(bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("repository {bad:?}: ")),
                "{err}"
            );
        }
        assert!(RepositoryName::parse("a".repeat(256)).is_err());
        assert_eq!(
            RepositoryName::parse("App").unwrap_err().to_string(),
            "repository \"App\": each path component must start and end with [a-z0-9]"
        );
    }

    #[test]
    fn tags() {
        assert!(validate_tag("latest").is_ok());
        assert!(validate_tag("_x.Y-1").is_ok());
        assert!(validate_tag(".x").is_err());
        assert!(validate_tag(&"a".repeat(129)).is_err());
        assert_eq!(
            Tag::parse(".x").unwrap_err().to_string(),
            "tag \".x\": tag must start with [A-Za-z0-9_]"
        );
        // Including the tags the store conformance suite used to reject.
        for bad in [".hidden", "a b", "", "x/y", "-x/", ".x"] {
            assert!(validate_tag(bad).is_err(), "{bad}");
            let err = Tag::parse(bad).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("tag {bad:?}: ")),
                "{err}"
            );
        }
        for ok in ["latest", "_x.Y-1", "1.0", "Z", &"a".repeat(128)] {
            assert_eq!(Tag::parse(ok).map(String::from), Ok(ok.to_owned()));
        }
    }

    #[test]
    fn serde_validates_and_round_trips() {
        let name: RepositoryName = serde_json::from_str("\"fedora/app\"").unwrap();
        assert_eq!(name, "fedora/app");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"fedora/app\"");
        assert!(serde_json::from_str::<RepositoryName>("\"Fedora\"").is_err());
        assert!(serde_json::from_str::<Tag>("\"-x\"").is_err());
    }

    #[test]
    fn borrows_as_str_in_maps() {
        let mut tags = std::collections::BTreeMap::new();
        tags.insert(Tag::parse("latest").unwrap(), 1);
        assert_eq!(tags.get("latest"), Some(&1));
        let name = RepositoryName::parse("fedora/flatpak/app").unwrap();
        assert_eq!(name.namespace(), Some("fedora/flatpak"));
        assert_eq!(RepositoryName::parse("app").unwrap().namespace(), None);
    }
}
