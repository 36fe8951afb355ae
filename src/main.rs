//! The `flagstate` binary: `serve`, `scan`, `query`, `check` and `index`.
//!
//! This file only wires things together: flags ([`cli`]), then what the subcommand needs
//! (configuration and logging, [`commands::prepare`]), then the subcommand ([`serve`],
//! [`commands`]) on a tokio runtime. Exit status: 0 success, 1 failure while running (or
//! `scan`/`check` finding problems), 2 configuration or usage error.

mod cli;
mod commands;
mod config;
mod error;
mod logging;
mod serve;
mod setup;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::error::CliError;

fn main() -> ExitCode {
    // Usage errors exit 2 and --help/--version exit 0, as clap decides.
    let cli = Cli::parse();
    let job = match commands::prepare(&cli) {
        Ok(job) => job,
        Err(e) => return report(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(&CliError::Runtime(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(commands::run(job)) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Prints an error for a person and picks the exit status.
fn report(error: &CliError) -> ExitCode {
    eprintln!("flagstate: {error}");
    error.exit_code()
}
