//! Logging to standard error through `tracing`, as text or JSON lines. Standard output is
//! kept for command results (`query` prints JSON there).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, LogFormat, LogSettings};

/// Installs the global subscriber. The filter is `RUST_LOG` when set, else `log.filter`,
/// else `info`.
pub fn init(settings: &LogSettings) -> Result<(), ConfigError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(&value)
            .map_err(|e| ConfigError::invalid("RUST_LOG", e.to_string()))?,
        _ => EnvFilter::try_new(settings.filter.as_deref().unwrap_or("info"))
            .map_err(|e| ConfigError::invalid("log.filter", e.to_string()))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (only possible in tests) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    Ok(())
}
