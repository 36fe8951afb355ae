//! The command line: subcommands and flags (clap derive), and how flags override the
//! configuration.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat};

/// Index the metadata of a container registry and answer registry index protocol queries.
#[derive(Debug, Parser)]
#[command(
    name = "flagstate",
    version = VERSION,
    propagate_version = true
)]
pub struct Cli {
    /// YAML configuration file (default: /etc/flagstate/config.yaml when it exists).
    /// Environment variables `FLAGSTATE_*` and flags override it.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "FLAGSTATE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Registry to index, e.g. http://127.0.0.1:5000 (overrides registry.url).
    #[arg(long, global = true, value_name = "URL")]
    pub registry: Option<String>,

    /// Where the index is stored: postgres://… for PostgreSQL, or a SQLite file path
    /// (sqlite://PATH also works). Overrides the database section.
    #[arg(long, global = true, value_name = "URL|PATH")]
    pub database: Option<String>,

    /// Write logs as JSON lines (overrides log.format).
    #[arg(long, global = true)]
    pub json_logs: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the index over HTTP and keep it up to date (first full scan, registry
    /// notifications on /events, periodic rescans and garbage collection).
    Serve(ServeArgs),
    /// Scan the whole registry once into the store, then exit. Exits 1 if any
    /// repository failed.
    Scan,
    /// Print the index JSON a query answers, from the store.
    Query(QueryArgs),
    /// List the repositories of the index (name, tags, last change), or with REPO the
    /// repository's tags newest first (tag, digest, since when, and the artifact type of
    /// a tag pointing at an artifact). Reads the store only.
    /// Exits 1 when REPO is not in the index, 2 when it is not a repository name.
    Ls(LsArgs),
    /// Print every digest REPO:TAG has pointed at while the index kept it, oldest first
    /// (since when, digest). Reads the store only. Exits 1 when the index has no history
    /// of the tag, 2 when the reference is malformed.
    History(HistoryArgs),
    /// Compare the store with the registry; list missing, extra and moved tags. Exits 1
    /// when they differ.
    Check,
    /// Write static index files as a regindexer configuration file (given with
    /// `--config`) describes; with `--watch`, keep them up to date from registry
    /// notifications. Exits 2 on a bad configuration, 1 when a registry could not be read
    /// completely (its files are then left as they were).
    Index(IndexArgs),
    /// Print a shell completion script, e.g. `flagstate completions bash >
    /// /usr/share/bash-completion/completions/flagstate`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), e.g. `flagstate man > /usr/share/man/man1/flagstate.1`;
    /// `flagstate man SUBCOMMAND` prints that subcommand's page (`flagstate-SUBCOMMAND.1`).
    Man(ManArgs),
    /// Work with configuration files without starting anything.
    Config(ConfigArgs),
}

/// Flags of `config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do with the configuration.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// The subcommands of `config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration (`--config` FILE, `FLAGSTATE_*` variables and
    /// flags) as `serve` would, and print the settings in force, secrets left out. Opens
    /// neither the store nor the registry. Exits 2 naming the key when it is invalid.
    Check(ConfigCheckArgs),
}

/// Flags of `config check`.
#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// `--config` names a regindexer file, checked as `flagstate index` reads it.
    #[arg(long)]
    pub index: bool,
}

/// Flags of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The subcommand whose page to print; none: the main page.
    #[arg(value_name = "SUBCOMMAND")]
    pub subcommand: Option<String>,
}

/// The version `--version` prints: the package version, and the git commit when the
/// binary was built from a git checkout (see `build.rs`).
pub const VERSION: &str = env!("FLAGSTATE_VERSION");

/// The short git commit the binary was built from, when known.
pub fn commit() -> Option<&'static str> {
    Some(env!("FLAGSTATE_GIT_COMMIT")).filter(|c| !c.is_empty())
}

/// The configuration file read when neither `--config` nor `FLAGSTATE_CONFIG` names one,
/// if it exists (the Go original's location).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/flagstate/config.yaml";

/// Environment variable that replaces [`DEFAULT_CONFIG_PATH`] (for packagers and tests);
/// set but empty, no default file is read.
pub const DEFAULT_CONFIG_ENV: &str = "FLAGSTATE_DEFAULT_CONFIG";

/// The default configuration file, when it exists: `FLAGSTATE_DEFAULT_CONFIG`, else
/// [`DEFAULT_CONFIG_PATH`].
pub fn default_config_path() -> Option<PathBuf> {
    let path = std::env::var_os(DEFAULT_CONFIG_ENV)
        .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), PathBuf::from);
    (!path.as_os_str().is_empty() && path.exists()).then_some(path)
}

/// Flags of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Flags of `index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Keep running: accept registry notifications on --listen and rewrite the files
    /// whose content changed.
    #[arg(long)]
    pub watch: bool,

    /// Address `/events` listens on in --watch mode.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,

    /// Bearer token the registry must send to `/events` in --watch mode.
    #[arg(
        long,
        env = "FLAGSTATE_EVENTS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub events_token: Option<String>,

    /// Accept notifications without a token in --watch mode (when no --events-token is
    /// given). Without either, /events refuses every notification.
    #[arg(long, conflicts_with = "events_token")]
    pub allow_anonymous_events: bool,

    /// Time between full re-scans in --watch mode (e.g. 30m; 0 = never).
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    pub rescan_interval: humantime::Duration,

    /// Show a progress bar while scanning (on a terminal).
    #[arg(long)]
    pub progress: bool,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8088 (overrides listen). Port 0 picks a
    /// free port; the address in use is logged.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Serve queries only: no indexing, /events answers 503 (overrides read_only).
    #[arg(long)]
    pub read_only: bool,
}

/// Flags of `query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query string of /index/static, e.g.
    /// 'label:org.flatpak.ref:exists=1&architecture=amd64&tag=latest'. A leading `?` is
    /// ignored; empty means every image.
    #[arg(default_value = "")]
    pub query: String,

    /// Indent the JSON.
    #[arg(long)]
    pub pretty: bool,
}

/// Flags of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// A repository whose tags to list; none: list the repositories.
    #[arg(value_name = "REPO")]
    pub repository: Option<String>,
    /// Only repositories under NAMESPACE/ (at any depth).
    #[arg(long, value_name = "NAMESPACE", conflicts_with = "repository")]
    pub namespace: Option<String>,
}

/// Flags of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The tag, as REPO:TAG.
    #[arg(value_name = "REPO:TAG")]
    pub reference: String,
}

impl Cli {
    /// Whether the command reads the registry (and so needs `registry.url`).
    pub fn needs_registry(&self) -> bool {
        match &self.command {
            Command::Serve(args) => !args.read_only,
            Command::Scan | Command::Check => true,
            Command::Query(_)
            | Command::Ls(_)
            | Command::History(_)
            | Command::Index(_)
            | Command::Completions(_)
            | Command::Man(_) => false,
            // Checked as `serve` reads it.
            Command::Config(_) => true,
        }
    }

    /// The configuration file in force: `--config` / `FLAGSTATE_CONFIG`, else the default
    /// file when it exists.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config.clone().or_else(default_config_path)
    }

    /// Loads the configuration and applies the flags on top of it, then validates it.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.config_path().as_deref())?;
        self.apply(&mut config)?;
        let needs_registry = self.needs_registry() && !config.read_only;
        config.validate(needs_registry)?;
        Ok(config)
    }

    /// Overrides configuration values with the flags given.
    pub fn apply(&self, config: &mut Config) -> Result<(), ConfigError> {
        if let Some(registry) = &self.registry {
            let url = crate::config::parse_registry_url(registry)
                .map_err(|e| ConfigError::invalid("--registry", e))?;
            config.registry.url = Some(url);
        }
        if let Some(database) = &self.database {
            config.database.set_from_argument(database)?;
        }
        if self.json_logs {
            config.log.format = LogFormat::Json;
        }
        if let Command::Serve(args) = &self.command {
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            if args.read_only {
                config.read_only = true;
            }
        }
        Ok(())
    }
}

/// Parses the command line, exiting on a usage error (status 2) or after `--help` /
/// `--version` (status 0), as clap does.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (the program name first). Besides flagstate's own syntax it accepts the
/// Go original's invocation: `-config FILE` / `-config=FILE` as the first argument is
/// `--config`, and a configuration file named without a subcommand means `serve`.
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if let Some(first) = args.get_mut(1) {
        if first == "-config" {
            *first = "--config".into();
        } else if let Some(file) = first.to_str().and_then(|a| a.strip_prefix("-config=")) {
            *first = format!("--config={file}").into();
        }
    }
    match Cli::try_parse_from(&args) {
        Err(e) if e.kind() == ErrorKind::MissingSubcommand && names_config_file(&args) => {
            args.push("serve".into());
            Cli::try_parse_from(args)
        }
        parsed => parsed,
    }
}

/// Whether `args` give `--config` / `-c`.
fn names_config_file(args: &[OsString]) -> bool {
    args.iter().skip(1).any(|arg| {
        arg.to_str()
            .is_some_and(|a| a == "--config" || a.starts_with("--config=") || a.starts_with("-c"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_the_configuration() {
        let cli = Cli::try_parse_from([
            "flagstate",
            "serve",
            "--registry",
            "http://127.0.0.1:5000",
            "--listen",
            "127.0.0.1:0",
            "--database",
            "sqlite:///tmp/x.db",
            "--json-logs",
        ])
        .unwrap();
        let mut config = Config::default();
        cli.apply(&mut config).unwrap();
        assert_eq!(
            config.registry.url.unwrap().as_str(),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(
            config.database.choice().unwrap(),
            crate::config::DatabaseChoice::Sqlite("/tmp/x.db".into())
        );
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let e = Cli::try_parse_from(["flagstate", "serve", "--listen", "nowhere"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let cli = Cli::try_parse_from(["flagstate", "scan", "--registry", "not a url"]).unwrap();
        let e = cli.apply(&mut Config::default()).unwrap_err().to_string();
        assert!(e.starts_with("--registry"), "{e}");
    }

    #[test]
    fn the_go_invocation_means_serve() {
        for args in [
            &["flagstate", "-config", "/etc/x.yaml"][..],
            &["flagstate", "-config=/etc/x.yaml"],
            &["flagstate", "--config", "/etc/x.yaml"],
            &["flagstate", "-c", "/etc/x.yaml", "--json-logs"],
        ] {
            let cli = try_parse_from(args).unwrap();
            assert!(matches!(cli.command, Command::Serve(_)), "{args:?}");
            assert_eq!(
                cli.config.as_deref(),
                Some(std::path::Path::new("/etc/x.yaml"))
            );
        }
        // A subcommand still wins, and without a configuration file there is no default.
        let cli = try_parse_from(["flagstate", "-config", "x.yaml", "scan"]).unwrap();
        assert!(matches!(cli.command, Command::Scan));
        let e = try_parse_from(["flagstate", "--json-logs"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn query_is_store_only() {
        let cli = Cli::try_parse_from(["flagstate", "query", "tag=latest", "--pretty"]).unwrap();
        assert!(!cli.needs_registry());
        let cli = Cli::try_parse_from(["flagstate", "serve", "--read-only"]).unwrap();
        assert!(!cli.needs_registry());
    }
}
