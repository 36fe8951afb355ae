//! The `flagstate` binary: `serve`, `scan`, `query`, `check` and `index`.
//!
//! This file only wires things together: flags and configuration ([`cli`], [`config`]),
//! logging, then the subcommand ([`serve`], [`commands`]) on a tokio runtime. Exit
//! status: 0 success, 1 failure while running (or `scan`/`check` finding problems),
//! 2 configuration or usage error.

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
    if let cli::Command::Index(args) = &cli.command {
        return index(&cli, args);
    }
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(e) => return report(&CliError::Config(e)),
    };
    if let Err(e) = logging::init(&config.log) {
        return report(&CliError::Config(e));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(&CliError::Runtime(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(commands::run(&cli.command, &config)) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// `flagstate index`: its `--config` is a regindexer file, not flagstate's configuration.
fn index(cli: &Cli, args: &cli::IndexArgs) -> ExitCode {
    let Some(path) = cli.config.as_deref() else {
        return report(&CliError::Config(config::ConfigError::invalid(
            "--config",
            "`index` needs the regindexer configuration file",
        )));
    };
    let mut log = config::Config::default().log;
    if cli.json_logs {
        log.format = config::LogFormat::Json;
    }
    if let Err(e) = logging::init(&log) {
        return report(&CliError::Config(e));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(&CliError::Runtime(format!("cannot start the runtime: {e}"))),
    };
    let progress = commands::scan::Bar::new(args.progress);
    let result = runtime.block_on(async {
        if args.watch {
            let interval: std::time::Duration = args.rescan_interval.into();
            let options = commands::index::WatchOptions {
                listen: args.listen,
                events_token: args.events_token.clone(),
                allow_anonymous_events: args.allow_anonymous_events,
                rescan_interval: (!interval.is_zero()).then_some(interval),
            };
            commands::index::run_watch(path, &options, &progress).await
        } else {
            commands::index::run_once(path, &progress).await
        }
    });
    progress.finish();
    match result {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Prints an error for a person and picks the exit status.
fn report(error: &CliError) -> ExitCode {
    eprintln!("flagstate: {error}");
    error.exit_code()
}
