//! The `flagstate` binary: `serve`, `scan`, `query`, `check`, `index` and `config check`,
//! plus `completions` and `man`.
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

use crate::error::CliError;

fn main() -> ExitCode {
    limit_malloc_arenas();
    // Usage errors exit 2 and --help/--version exit 0, as clap decides.
    let cli = cli::parse();
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

/// Caps glibc's allocator at two arenas (unless `MALLOC_ARENA_MAX` says otherwise).
///
/// glibc gives threads that allocate under contention arenas of their own, up to eight
/// per core, and returns freed memory to the system only from the top of each; a server
/// whose worker threads build and compress multi-megabyte answers keeps the high-water
/// mark of every arena. In the 10,000-image soak (docs/performance.md) RSS grew from 378
/// to 416 MiB in three minutes with the default and stayed at 145–146 MiB with two
/// arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; it runs before any other thread
        // exists, and M_ARENA_MAX with a positive value is always accepted.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Prints an error for a person and picks the exit status.
fn report(error: &CliError) -> ExitCode {
    eprintln!("flagstate: {error}");
    error.exit_code()
}
