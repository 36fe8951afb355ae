//! Configuration errors, with messages that name the offending key and where it came from.

use std::fmt::Write as _;
use std::path::PathBuf;

use figment::error::Kind;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named configuration file cannot be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A source has a syntax error, an unknown key or a value of the wrong type. The
    /// message names every problem found, one per line.
    #[error("{0}")]
    Parse(String),
    /// A value or a combination of values is not usable.
    #[error("{key}: {message}")]
    Invalid {
        /// The key (or command-line flag) at fault.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// An [`Invalid`](ConfigError::Invalid) error.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Rewrites figment's errors so each names the full key path (for an unknown key,
    /// including the key itself) and the source it came from.
    pub(crate) fn from_figment(error: figment::Error) -> Self {
        let mut out = String::new();
        for (i, e) in error.into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let mut path = e.path.clone();
            let message = match &e.kind {
                Kind::UnknownField(field, expected) => {
                    // figment usually ends the path with the field already.
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    format!("unknown key; expected one of: {}", expected.join(", "))
                }
                Kind::Message(m) => m.clone(),
                other => other.to_string(),
            };
            // figment displays a file relative to the working directory; name it as
            // the user gave it instead.
            let source = e.metadata.as_ref().map(|md| match &md.source {
                Some(figment::Source::File(path)) => path.display().to_string(),
                Some(source) => source.to_string(),
                None => md.name.to_string(),
            });
            if path.is_empty() {
                let _ = write!(out, "{message}");
            } else {
                let _ = write!(out, "{}: {message}", path.join("."));
            }
            if let Some(source) = source {
                let _ = write!(out, " (in {source})");
            }
        }
        ConfigError::Parse(out)
    }
}
