//! The one-shot subcommands. `serve` lives in its own module ([`crate::serve`]).

pub mod check;
pub mod index;
pub mod query;
pub mod scan;

use std::process::ExitCode;

use crate::cli::Command;
use crate::config::Config;
use crate::error::CliError;

/// Runs a subcommand to completion.
pub async fn run(command: &Command, config: &Config) -> Result<ExitCode, CliError> {
    match command {
        Command::Serve(_) => crate::serve::run(config).await,
        Command::Scan => scan::run(config).await,
        Command::Query(args) => query::run(args, config).await,
        Command::Check => check::run(config).await,
        Command::Index(_) => Err(CliError::Runtime(
            "`index` reads a regindexer configuration, not flagstate's".to_owned(),
        )),
    }
}
