//! The binary's error type and how each kind maps to an exit status: 2 for mistakes in
//! the configuration or the command line (the user must change something), 1 for
//! failures while running.

use std::net::SocketAddr;
use std::process::ExitCode;

use flagstate_core::indexer::IndexerError;
use flagstate_core::registry::RegistryError;
use flagstate_core::{QueryError, StoreError};

use crate::config::ConfigError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration or a flag is wrong.
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// The query given to `flagstate query` is malformed.
    #[error("invalid query: {0}")]
    Query(#[from] QueryError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The registry could not be read.
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// Indexing failed as a whole (not just some repositories).
    #[error("indexing failed: {0}")]
    Indexer(#[from] IndexerError),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An argument is malformed (a repository name, a `REPO:TAG` reference).
    #[error("{0}")]
    Usage(String),
    /// What was asked for is not in the index.
    #[error("{0}")]
    NotFound(String),
    /// Any other failure while running, described.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Config(_) | CliError::Query(_) | CliError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}
