//! The subcommands: [`prepare`] loads what one needs and starts logging, [`run`] runs it.
//! `serve` lives in its own module ([`crate::serve`]).

pub mod check;
pub mod config;
pub mod discovery;
pub mod index;
pub mod query;
pub mod scan;

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory as _;

use crate::cli::{Cli, Command, ConfigCommand, HistoryArgs, IndexArgs, LsArgs, QueryArgs};
use crate::config::{Config, ConfigError, LogFormat};
use crate::error::CliError;
use crate::logging;

/// A subcommand with what it runs on.
pub enum Job<'a> {
    /// `serve`.
    Serve(Config),
    /// `scan`.
    Scan(Config),
    /// `query`.
    Query(&'a QueryArgs, Config),
    /// `ls`.
    Ls(&'a LsArgs, Config),
    /// `history`.
    History(&'a HistoryArgs, Config),
    /// `check`.
    Check(Config),
    /// `index`: its `--config` is a regindexer file, not flagstate's configuration.
    Index {
        /// The regindexer configuration file.
        config: &'a Path,
        /// The command's flags.
        args: &'a IndexArgs,
    },
    /// `config check`: flagstate's configuration, checked, and the file it came from.
    ConfigCheck(Config, Option<&'a Path>),
    /// `config check --index`: the regindexer file to check.
    ConfigCheckIndex(&'a Path),
    /// `completions`: the script for this shell.
    Completions(clap_complete::Shell),
    /// `man`: the page of the subcommand named, or the main page.
    Man(Option<&'a str>),
}

/// Loads what the command of `cli` needs (flagstate's configuration, or for `index` the
/// path of its regindexer file) and starts logging as that configuration says.
pub fn prepare(cli: &Cli) -> Result<Job<'_>, CliError> {
    let load = || -> Result<Config, CliError> {
        let config = cli.load_config()?;
        logging::init(&config.log)?;
        Ok(config)
    };
    Ok(match &cli.command {
        Command::Serve(_) => Job::Serve(load()?),
        Command::Scan => Job::Scan(load()?),
        Command::Query(args) => Job::Query(args, load()?),
        Command::Ls(args) => Job::Ls(args, load()?),
        Command::History(args) => Job::History(args, load()?),
        Command::Check => Job::Check(load()?),
        Command::Index(args) => {
            let config = cli.config.as_deref().ok_or_else(|| {
                ConfigError::invalid(
                    "--config",
                    "`index` needs the regindexer configuration file",
                )
            })?;
            let mut log = Config::default().log;
            if cli.json_logs {
                log.format = LogFormat::Json;
            }
            logging::init(&log)?;
            Job::Index { config, args }
        }
        // No logging: the check prints its findings and starts nothing.
        Command::Config(args) => match &args.command {
            ConfigCommand::Check(check) if check.index => {
                Job::ConfigCheckIndex(cli.config.as_deref().ok_or_else(|| {
                    ConfigError::invalid(
                        "--config",
                        "`config check --index` needs the regindexer configuration file",
                    )
                })?)
            }
            ConfigCommand::Check(_) => Job::ConfigCheck(cli.load_config()?, cli.config.as_deref()),
        },
        Command::Completions(args) => Job::Completions(args.shell),
        Command::Man(args) => Job::Man(args.subcommand.as_deref()),
    })
}

/// Runs a subcommand to completion.
pub async fn run(job: Job<'_>) -> Result<ExitCode, CliError> {
    match job {
        Job::Serve(config) => crate::serve::run(&config).await,
        Job::Scan(config) => scan::run(&config).await,
        Job::Query(args, config) => query::run(args, &config).await,
        Job::Ls(args, config) => discovery::ls(args, &config).await,
        Job::History(args, config) => discovery::history(args, &config).await,
        Job::Check(config) => check::run(&config).await,
        Job::Index { config, args } => index::run(config, args).await,
        Job::ConfigCheck(config, source) => config::run(&config, source),
        Job::ConfigCheckIndex(path) => config::run_index(path),
        Job::Completions(shell) => print(|out| {
            clap_complete::generate(shell, &mut Cli::command(), "flagstate", out);
            Ok(())
        }),
        Job::Man(subcommand) => {
            let page = man_page(subcommand)?;
            print(|out| clap_mangen::Man::new(page).render(out))
        }
    }
}

/// The command whose manual page `flagstate man [SUBCOMMAND]` prints, named as the page
/// (`flagstate`, `flagstate-scan`, …).
fn man_page(subcommand: Option<&str>) -> Result<clap::Command, CliError> {
    let mut cli = Cli::command();
    let Some(name) = subcommand else {
        return Ok(cli);
    };
    // Built, so the subcommands carry the global flags and the version.
    cli.build();
    let page = cli
        .get_subcommands()
        .find(|sub| sub.get_name() == name)
        .map(|sub| sub.clone().name(format!("flagstate-{name}")));
    page.ok_or_else(|| {
        let names: Vec<&str> = cli.get_subcommands().map(clap::Command::get_name).collect();
        ConfigError::invalid(
            "man",
            format!("no subcommand {name:?}; one of: {}", names.join(", ")),
        )
        .into()
    })
}

/// Writes what `write` produces to standard output.
fn print(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        // The reader stopped early (`flagstate man | head`): nothing left to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(CliError::Runtime(format!(
            "cannot write to standard output: {e}"
        ))),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}
