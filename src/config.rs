//! Configuration: a YAML file, `FLAGSTATE_*` environment variables and command-line flags,
//! in increasing order of precedence, checked as a whole before anything starts.
//!
//! The file keys are those of the original Go flagstate (`registry.url`, `events.token`,
//! `interval.fetch_all`, …) plus the keys this implementation adds (`listen`,
//! `database.sqlite.path`, registry credentials, `read_only`, `log.*`, `icons.*`).
//! Unknown keys are errors, so a typo never silently falls back to a default.
//! `docs/configuration.md` is the user-facing reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use flagstate_core::RepositoryName;
use serde::Deserialize;

mod duration;
mod error;
pub mod notifications;

pub use error::ConfigError;
pub use notifications::NotificationSettings;

/// Prefix of every environment variable read as configuration.
pub const ENV_PREFIX: &str = "FLAGSTATE_";
/// Separator between nesting levels in environment variable names
/// (`FLAGSTATE_REGISTRY__URL` is `registry.url`).
pub const ENV_SEPARATOR: &str = "__";

/// The top-level keys of [`Config`]. Only environment variables under one of these are
/// configuration; other `FLAGSTATE_*` variables (such as those of the test suite) are not.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "read_only",
    "registry",
    "components",
    "events",
    "database",
    "cache",
    "interval",
    "history",
    "changes",
    "notifications",
    "log",
    "icons",
    "server",
    "query",
    "ui",
    "tls",
];

/// Keys whose environment value is taken verbatim. figment would read `0123` as the number
/// 123 and `true` as a boolean; a secret must reach the program exactly as written.
const VERBATIM_ENV_KEYS: &[&str] = &[
    "registry.username",
    "registry.password",
    "registry.token",
    "events.token",
];

/// Everything `flagstate` can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Serve queries only: no indexer, `/events` answers 503. For replicas that share a
    /// PostgreSQL database with a writer.
    pub read_only: bool,
    /// The registry being indexed.
    pub registry: RegistrySettings,
    /// Optional parts of the HTTP server.
    pub components: Components,
    /// Registry notifications.
    pub events: EventSettings,
    /// Where the index is stored.
    pub database: DatabaseSettings,
    /// HTTP cache lifetimes.
    pub cache: CacheSettings,
    /// Periodic work of the indexer.
    pub interval: IntervalSettings,
    /// How much tag history the index keeps.
    pub history: HistorySettings,
    /// How much of the change log the index keeps.
    pub changes: ChangeSettings,
    /// Outgoing webhooks of the change log.
    pub notifications: NotificationSettings,
    /// Logging.
    pub log: LogSettings,
    /// Icons extracted from `data:` URIs and served by the server.
    pub icons: IconSettings,
    /// Limits of the HTTP server: time, connections and requests a client can take.
    pub server: ServerSettings,
    /// Limits on index queries: glob size and matching work.
    pub query: QuerySettings,
    /// The web UI.
    pub ui: UiSettings,
    /// HTTPS: the certificate and key the server terminates TLS with.
    pub tls: TlsSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            read_only: false,
            registry: RegistrySettings::default(),
            components: Components::default(),
            events: EventSettings::default(),
            database: DatabaseSettings::default(),
            cache: CacheSettings::default(),
            interval: IntervalSettings::default(),
            history: HistorySettings::default(),
            changes: ChangeSettings::default(),
            notifications: NotificationSettings::default(),
            log: LogSettings::default(),
            icons: IconSettings::default(),
            server: ServerSettings::default(),
            query: QuerySettings::default(),
            ui: UiSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

/// `ui.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiSettings {
    /// The Flatpak remote name the apps page's commands use (`flatpak remote-add …
    /// NAME`, `flatpak install NAME …`): letters, digits, `_`, `-` and `.`, not starting
    /// with `-` or `.`.
    pub remote_name: String,
}

impl Default for UiSettings {
    fn default() -> Self {
        UiSettings {
            remote_name: "myregistry".to_owned(),
        }
    }
}

impl UiSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let name = self.remote_name.as_bytes();
        let valid = name
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(b));
        if valid {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                "ui.remote_name",
                format!(
                    "{:?} is not a Flatpak remote name: use letters, digits, `_`, `-` and `.`, starting with a letter, digit or `_`",
                    self.remote_name
                ),
            ))
        }
    }
}

/// `registry.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Base URL the indexer reads from, e.g. `http://127.0.0.1:5000`.
    #[serde(deserialize_with = "registry_url")]
    pub url: Option<url::Url>,
    /// The `Registry` value written into every index answer; clients resolve it against
    /// the index URL, so it may be relative (`/`). Defaults to `url`.
    pub public_url: Option<String>,
    /// User name for HTTP basic authentication (with `password`).
    pub username: Option<String>,
    /// Password for HTTP basic authentication.
    pub password: Option<String>,
    /// Bearer token (instead of `username`/`password`).
    pub token: Option<String>,
    /// Repositories to index when the registry's `_catalog` is disabled. When set, the
    /// catalog is not read.
    pub repositories: Vec<String>,
    /// Timeout of one registry request.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Most registry requests in flight at once.
    pub max_concurrency: usize,
    /// How long the registry may answer nothing (every attempt failing to connect or
    /// timing out) before it counts as unreachable and a scan stops with that one error.
    #[serde(with = "duration")]
    pub retry_budget: Duration,
}

impl RegistrySettings {
    /// `repositories`, parsed; an invalid name is a configuration error naming it.
    pub fn repository_names(&self) -> Result<Vec<RepositoryName>, ConfigError> {
        self.repositories
            .iter()
            .map(|name| {
                RepositoryName::parse(name.as_str()).map_err(|e| {
                    ConfigError::invalid(
                        "registry.repositories",
                        format!("{name:?}: {}", e.problem()),
                    )
                })
            })
            .collect()
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            url: None,
            public_url: None,
            username: None,
            password: None,
            token: None,
            repositories: Vec::new(),
            timeout: flagstate_core::registry::DEFAULT_TIMEOUT,
            max_concurrency: flagstate_core::registry::DEFAULT_MAX_CONCURRENCY,
            retry_budget: flagstate_core::registry::DEFAULT_RETRY_BUDGET,
        }
    }
}

/// `components.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Components {
    /// Serve the HTML home page.
    pub web_ui: bool,
    /// Serve `/assert`, which waits until the index reflects a given state (for tests
    /// and deployment scripts).
    pub assert_endpoint: bool,
}

impl Default for Components {
    fn default() -> Self {
        Components {
            web_ui: true,
            assert_endpoint: false,
        }
    }
}

/// `events.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// Bearer token the registry must send with notifications. Without one (or with an
    /// empty one), `/events` refuses every notification unless `allow_anonymous` is set.
    pub token: Option<String>,
    /// Accept notifications from anyone when no token is set.
    pub allow_anonymous: bool,
    /// Most repositories waiting for the re-scan notifications ask for; beyond it,
    /// requests are dropped (and counted) and the next full scan covers them.
    pub max_pending_reconciles: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            token: None,
            allow_anonymous: false,
            max_pending_reconciles: flagstate_core::indexer::IndexerConfig::default()
                .max_pending_reconciles,
        }
    }
}

impl EventSettings {
    /// The token in force: an empty one counts as none.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }
}

/// `server.*`: what one client can take from the server. The defaults suit a public,
/// unauthenticated index server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Longest time to receive a complete request head (also while a keep-alive
    /// connection waits for its next request).
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a connection with no request being served stays open.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Longest time a response write may make no progress before the connection closes.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// Longest time to produce a response head; slower requests get `503`.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Most connections open at once (lowered to fit the open-file limit).
    pub max_connections: usize,
    /// Most requests served at once; more are answered `503` at once.
    pub max_in_flight: usize,
    /// Most clients following the change feed at once (long polls and event streams),
    /// counted apart from `max_in_flight`; more are answered `503` at once.
    pub max_change_watchers: usize,
    /// Newest change records kept in memory for the change feed's followers, who read
    /// them from there instead of each from the store.
    pub change_buffer_records: usize,
    /// Most distinct index answers built from the store at once.
    pub max_concurrent_builds: usize,
    /// Longest time one answer may take to build; builds go on after their request's
    /// `request_timeout`, so a later request gets the answer.
    #[serde(with = "duration")]
    pub build_timeout: Duration,
    /// Longest wait for requests in flight at shutdown.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Longest time a TLS handshake may take (with `tls.cert` and `tls.key` set).
    #[serde(with = "duration")]
    pub tls_handshake_timeout: Duration,
    /// Threads accepting and serving connections, each with its own event loop; 0
    /// serves on the process's shared runtime. Default: one per CPU.
    pub workers: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let server = flagstate_http::ServerConfig::default();
        let http = flagstate_http::HttpConfig::default();
        ServerSettings {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            write_timeout: server.write_timeout,
            request_timeout: http.request_timeout,
            max_connections: server.max_connections,
            max_in_flight: http.max_in_flight,
            max_change_watchers: http.max_change_watchers,
            change_buffer_records: http.change_buffer_records,
            max_concurrent_builds: http.max_concurrent_builds,
            build_timeout: http.build_timeout,
            shutdown_timeout: server.shutdown_timeout,
            tls_handshake_timeout: server.tls_handshake_timeout,
            workers: server.workers,
        }
    }
}

impl ServerSettings {
    /// The connection-level part, for [`flagstate_http::serve`].
    pub fn server_config(&self) -> flagstate_http::ServerConfig {
        let mut config = flagstate_http::ServerConfig::default();
        config.header_read_timeout = self.header_read_timeout;
        config.idle_timeout = self.idle_timeout;
        config.write_timeout = self.write_timeout;
        config.max_connections = self.max_connections;
        config.shutdown_timeout = self.shutdown_timeout;
        config.tls_handshake_timeout = self.tls_handshake_timeout;
        config.workers = self.workers;
        config
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.idle_timeout", self.idle_timeout),
            ("server.write_timeout", self.write_timeout),
            ("server.request_timeout", self.request_timeout),
            ("server.build_timeout", self.build_timeout),
            ("server.tls_handshake_timeout", self.tls_handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must not be 0"));
            }
        }
        for (key, value) in [
            ("server.max_connections", self.max_connections),
            ("server.max_in_flight", self.max_in_flight),
            ("server.max_change_watchers", self.max_change_watchers),
            ("server.change_buffer_records", self.change_buffer_records),
            ("server.max_concurrent_builds", self.max_concurrent_builds),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.workers > flagstate_http::server::MAX_WORKERS {
            return Err(ConfigError::invalid(
                "server.workers",
                format!(
                    "must be at most {} (0 serves on the shared runtime)",
                    flagstate_http::server::MAX_WORKERS
                ),
            ));
        }
        Ok(())
    }
}

/// `tls.*`: HTTPS served by flagstate itself. Both keys or neither; without them the
/// server speaks plain HTTP (usually behind a reverse proxy that terminates TLS).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM file with the server certificate, then any intermediate certificates.
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key.
    pub key: Option<PathBuf>,
}

impl TlsSettings {
    /// The certificate and key files when TLS is configured; both keys or neither.
    pub fn files(&self) -> Result<Option<(&Path, &Path)>, ConfigError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::invalid(
                "tls.key",
                "is required with tls.cert (tls.cert and tls.key go together)",
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                "tls.cert",
                "is required with tls.key (tls.cert and tls.key go together)",
            )),
        }
    }

    /// Reads the certificate and key when configured; an unusable file is an error
    /// naming the key and the file.
    pub fn load(&self) -> Result<Option<flagstate_http::TlsConfig>, ConfigError> {
        let Some((cert, key)) = self.files()? else {
            return Ok(None);
        };
        flagstate_http::TlsConfig::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| {
                let at_fault = match &e {
                    flagstate_http::TlsError::Rejected { .. } => "tls.cert, tls.key",
                    flagstate_http::TlsError::NoKey { .. } => "tls.key",
                    _ if e.path() == cert => "tls.cert",
                    _ => "tls.key",
                };
                ConfigError::invalid(at_fault, e.to_string())
            })
    }
}

/// `database.*`: at most one backend. Neither means SQLite at the default path.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// PostgreSQL.
    pub postgres: Option<PostgresSettings>,
    /// SQLite.
    pub sqlite: Option<SqliteSettings>,
}

/// `database.postgres.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// Connection URL, `postgres://user:password@host:port/db`.
    pub url: String,
    /// Schema holding the tables (one schema per index); default: the connection's
    /// search path.
    #[serde(default)]
    pub schema: Option<String>,
    /// `generation_poll`: how often the generation row is read (the only way a replica on
    /// a hot standby learns of commits). Absent: the PostgreSQL store's default (500 ms).
    #[serde(default, deserialize_with = "duration::optional")]
    pub generation_poll: Option<Duration>,
    /// `unconfirmed_limit`: how long the generation may go unconfirmed by a poll before
    /// answers are a 503 (the database went away). Absent: 20 polls (10 s by default).
    #[serde(default, deserialize_with = "duration::optional")]
    pub unconfirmed_limit: Option<Duration>,
}

/// `database.sqlite.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteSettings {
    /// Database file; created when missing.
    pub path: PathBuf,
    /// `synchronous`: how the writer commits.
    pub synchronous: SqliteSynchronous,
    /// `check_on_open`: the integrity check run when the file is opened.
    pub check_on_open: SqliteCheckOnOpen,
    /// `generation_refresh`: how stale another process's commits on the file may be seen
    /// (the generation is read at most once per interval; own writes are seen at once).
    /// Absent: the SQLite store's default (500 ms).
    #[serde(deserialize_with = "duration::optional")]
    pub generation_refresh: Option<Duration>,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        SqliteSettings {
            path: PathBuf::from(DEFAULT_SQLITE_PATH),
            synchronous: SqliteSynchronous::default(),
            check_on_open: SqliteCheckOnOpen::default(),
            generation_refresh: None,
        }
    }
}

/// `database.sqlite.synchronous`: `full` or `normal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// Every commit is fsynced: an acknowledged event survives power loss.
    #[default]
    Full,
    /// Cheaper commits; power loss may roll back the last acknowledged events until the
    /// next full scan.
    Normal,
}

/// `database.sqlite.check_on_open`: `quick` or `none`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteCheckOnOpen {
    /// `PRAGMA quick_check` at open; a corrupt file is refused.
    #[default]
    Quick,
    /// No check.
    None,
}

/// Default SQLite database file, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "flagstate.db";

/// The chosen storage backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseChoice {
    /// PostgreSQL at this URL, in this schema.
    Postgres {
        /// Connection URL.
        url: String,
        /// Schema, when not the default.
        schema: Option<String>,
    },
    /// SQLite in this file.
    Sqlite(PathBuf),
}

impl DatabaseSettings {
    /// The backend to use: the one configured, or SQLite at [`DEFAULT_SQLITE_PATH`].
    pub fn choice(&self) -> Result<DatabaseChoice, ConfigError> {
        match (&self.postgres, &self.sqlite) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                "database",
                "configure either database.postgres or database.sqlite, not both",
            )),
            (Some(pg), None) => Ok(DatabaseChoice::Postgres {
                url: pg.url.clone(),
                schema: pg.schema.clone(),
            }),
            (None, Some(sqlite)) => Ok(DatabaseChoice::Sqlite(sqlite.path.clone())),
            (None, None) => Ok(DatabaseChoice::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH))),
        }
    }

    /// The SQLite settings in force: `database.sqlite`, or its defaults when absent.
    pub fn sqlite_settings(&self) -> SqliteSettings {
        self.sqlite.clone().unwrap_or_default()
    }

    /// Selects a backend from a command-line value: `postgres://…` / `postgresql://…`
    /// is PostgreSQL, `sqlite://PATH` or anything else is a SQLite file path.
    pub fn set_from_argument(&mut self, value: &str) -> Result<(), ConfigError> {
        if value.is_empty() {
            return Err(ConfigError::invalid("--database", "is empty"));
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            // The other settings of a configured PostgreSQL database still apply.
            let previous = self.postgres.take();
            self.postgres = Some(PostgresSettings {
                url: value.to_owned(),
                schema: previous.as_ref().and_then(|pg| pg.schema.clone()),
                generation_poll: previous.as_ref().and_then(|pg| pg.generation_poll),
                unconfirmed_limit: previous.and_then(|pg| pg.unconfirmed_limit),
            });
            self.sqlite = None;
        } else {
            let path = value.strip_prefix("sqlite://").unwrap_or(value);
            if path.is_empty() {
                return Err(ConfigError::invalid("--database", "sqlite:// needs a path"));
            }
            // The other SQLite settings of the configuration still apply.
            let mut sqlite = self.sqlite.take().unwrap_or_default();
            sqlite.path = PathBuf::from(path);
            self.sqlite = Some(sqlite);
            self.postgres = None;
        }
        Ok(())
    }
}

/// `cache.*`: `Cache-Control: max-age` of the answers, and the bounds of the in-memory
/// caches of index answers and of rendered web UI pages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// For `/index/static`.
    #[serde(with = "duration")]
    pub max_age_index: Duration,
    /// For HTML pages.
    #[serde(with = "duration")]
    pub max_age_html: Duration,
    /// Most distinct index answers kept.
    pub index_entries: usize,
    /// Bytes the kept index answers may take (bodies counted twice, for their
    /// compressed variants).
    pub index_bytes: usize,
    /// Most distinct web UI pages (per host and URL) kept rendered; `0`: none (every page
    /// is rendered from the store).
    pub page_entries: usize,
    /// Bytes the kept pages may take (counted like `index_bytes`).
    pub page_bytes: usize,
    /// Where index answers larger than `answer_memory_max` are written and served from;
    /// unset: a private temporary directory.
    pub answer_dir: Option<PathBuf>,
    /// Index answers up to this many bytes stay in memory; larger ones go to files.
    pub answer_memory_max: usize,
    /// Bytes the file-backed answers may take on disk (counted like `index_bytes`).
    pub answer_disk_bytes: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        let http = flagstate_http::HttpConfig::default();
        CacheSettings {
            max_age_index: http.max_age_index,
            max_age_html: http.max_age_html,
            index_entries: http.index_cache_entries,
            index_bytes: http.index_cache_bytes,
            page_entries: http.page_cache_entries,
            page_bytes: http.page_cache_bytes,
            answer_dir: http.answer_dir,
            answer_memory_max: http.answer_memory_max,
            answer_disk_bytes: http.answer_disk_bytes,
        }
    }
}

/// `interval.*`: `0` turns a periodic job off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntervalSettings {
    /// Full rescan of the registry, repairing whatever notifications missed.
    #[serde(with = "duration")]
    pub fetch_all: Duration,
    /// Removal of manifests no tag references any more.
    #[serde(with = "duration")]
    pub garbage_collect: Duration,
}

impl Default for IntervalSettings {
    fn default() -> Self {
        // The indexer's defaults; `None` (never) there is `0` here.
        let indexer = flagstate_core::indexer::IndexerConfig::default();
        IntervalSettings {
            fetch_all: indexer.full_scan_interval.unwrap_or_default(),
            garbage_collect: indexer.gc_interval.unwrap_or_default(),
        }
    }
}

impl IntervalSettings {
    /// The full-scan period, `None` when turned off.
    pub fn fetch_all(&self) -> Option<Duration> {
        Some(self.fetch_all).filter(|d| !d.is_zero())
    }

    /// The garbage-collection period, `None` when turned off.
    pub fn garbage_collect(&self) -> Option<Duration> {
        Some(self.garbage_collect).filter(|d| !d.is_zero())
    }
}

/// `history.*`: the tag history `/v2/<name>/_flagstate/history/<tag>` serves, pruned at
/// every garbage collection (`interval.garbage_collect`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Entries kept per tag, the newest (at least 1).
    pub max_entries: usize,
    /// Entries older than this are dropped, except each tag's current one; `0` keeps
    /// them however old.
    #[serde(with = "duration")]
    pub max_age: Duration,
}

impl Default for HistorySettings {
    fn default() -> Self {
        let retention = flagstate_core::HistoryRetention::default();
        HistorySettings {
            max_entries: retention.max_entries,
            max_age: retention.max_age.unwrap_or_default(),
        }
    }
}

impl HistorySettings {
    /// The retention these settings describe.
    pub fn retention(&self) -> flagstate_core::HistoryRetention {
        flagstate_core::HistoryRetention {
            max_entries: self.max_entries,
            max_age: Some(self.max_age).filter(|age| !age.is_zero()),
        }
    }
}

/// `changes.*`: the change log `/v2/_flagstate/changes` serves, pruned at every garbage
/// collection; a cursor older than what is kept gets `410 Gone`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeSettings {
    /// Records kept, the newest (at least 1).
    pub max_records: usize,
    /// Records older than this are dropped; `0` keeps them however old.
    #[serde(with = "duration")]
    pub max_age: Duration,
}

impl Default for ChangeSettings {
    fn default() -> Self {
        let retention = flagstate_core::ChangeRetention::default();
        ChangeSettings {
            max_records: retention.max_records,
            max_age: retention.max_age.unwrap_or_default(),
        }
    }
}

impl ChangeSettings {
    /// The retention these settings describe.
    pub fn retention(&self) -> flagstate_core::ChangeRetention {
        flagstate_core::ChangeRetention {
            max_records: self.max_records,
            max_age: Some(self.max_age).filter(|age| !age.is_zero()),
        }
    }
}

/// `log.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax (`info`, `flagstate=debug,info`); `RUST_LOG` wins.
    pub filter: Option<String>,
    /// How often a running full scan logs its progress (repositories done of the total).
    #[serde(with = "duration")]
    pub scan_progress_interval: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::default(),
            filter: None,
            scan_progress_interval: flagstate_core::indexer::DEFAULT_PROGRESS_LOG_INTERVAL,
        }
    }
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `icons.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IconSettings {
    /// Directory icons are extracted to. Unset: icons stay inline as `data:` URIs.
    pub dir: Option<PathBuf>,
    /// URL prefix the rewritten icon labels point at (default `/icons/`).
    pub uri: Option<String>,
}

/// `query.*`: limits on index queries, so one request cannot burn seconds of CPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuerySettings {
    /// Longest glob (`tag:matches`, `label:K:matches`, `annotation:K:matches`) in bytes.
    pub max_pattern_bytes: usize,
    /// Most `*` in one glob.
    pub max_pattern_wildcards: usize,
    /// Most glob-matching work one answer may cost (about one unit per byte examined).
    pub max_match_cost: u64,
}

impl Default for QuerySettings {
    fn default() -> Self {
        let limits = flagstate_core::query::QueryLimits::default();
        QuerySettings {
            max_pattern_bytes: limits.max_pattern_bytes,
            max_pattern_wildcards: limits.max_pattern_wildcards,
            max_match_cost: limits.max_match_cost,
        }
    }
}

impl QuerySettings {
    /// The limits the query engine applies.
    pub fn limits(&self) -> flagstate_core::query::QueryLimits {
        flagstate_core::query::QueryLimits {
            max_pattern_bytes: self.max_pattern_bytes,
            max_pattern_wildcards: self.max_pattern_wildcards,
            max_match_cost: self.max_match_cost,
        }
    }
}

impl Config {
    /// Reads the configuration: defaults, then the YAML file at `path` (if any), then
    /// `FLAGSTATE_*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::from_figment(Self::figment(path)?)
    }

    /// The merged sources, before extraction; the file must exist when named.
    fn figment(path: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            figment = figment.merge(yaml_file(path)?);
        }
        Ok(Self::merge_env(figment))
    }

    /// Adds the `FLAGSTATE_*` variables that name configuration keys.
    fn merge_env(figment: Figment) -> Figment {
        let env = Env::prefixed(ENV_PREFIX)
            .split(ENV_SEPARATOR)
            .filter(|key| {
                let top = key.as_str().split('.').next().unwrap_or_default();
                TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
            })
            .filter(|key| {
                !VERBATIM_ENV_KEYS
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(key.as_str()))
            });
        let mut figment = figment.merge(env);
        for key in VERBATIM_ENV_KEYS {
            let var = env_var_name(key);
            if let Some(value) = std::env::var_os(&var) {
                figment = figment.merge((*key, value.to_string_lossy().into_owned()));
            }
        }
        figment
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        figment
            .extract::<Config>()
            .map_err(ConfigError::from_figment)
    }

    /// Checks what serde cannot: combinations of keys and value formats. `needs_registry`
    /// is false for commands that only read the store.
    pub fn validate(&self, needs_registry: bool) -> Result<(), ConfigError> {
        self.database.choice()?;
        if let Some(pg) = &self.database.postgres {
            if pg.generation_poll.is_some_and(|poll| poll.is_zero()) {
                return Err(ConfigError::invalid(
                    "database.postgres.generation_poll",
                    "must not be 0",
                ));
            }
            if pg.unconfirmed_limit.is_some_and(|limit| limit.is_zero()) {
                return Err(ConfigError::invalid(
                    "database.postgres.unconfirmed_limit",
                    "must not be 0",
                ));
            }
        }
        let registry = &self.registry;
        if needs_registry && registry.url.is_none() {
            return Err(ConfigError::invalid(
                "registry.url",
                "is required (set it in the file, with FLAGSTATE_REGISTRY__URL or with --registry)",
            ));
        }
        match (&registry.username, &registry.password, &registry.token) {
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(ConfigError::invalid(
                    "registry.username",
                    "registry.username and registry.password go together",
                ));
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "registry.token",
                    "use either registry.token or registry.username/password, not both",
                ));
            }
            _ => {}
        }
        registry.repository_names()?;
        if registry.max_concurrency == 0 {
            return Err(ConfigError::invalid(
                "registry.max_concurrency",
                "must be at least 1",
            ));
        }
        if registry.timeout.is_zero() {
            return Err(ConfigError::invalid("registry.timeout", "must not be 0"));
        }
        if registry.retry_budget.is_zero() {
            return Err(ConfigError::invalid(
                "registry.retry_budget",
                "must not be 0",
            ));
        }
        if self.events.token().is_some() && self.events.allow_anonymous {
            return Err(ConfigError::invalid(
                "events.allow_anonymous",
                "contradicts events.token; remove one of them",
            ));
        }
        if self.events.max_pending_reconciles == 0 {
            return Err(ConfigError::invalid(
                "events.max_pending_reconciles",
                "must be at least 1",
            ));
        }
        if self.changes.max_records == 0 {
            return Err(ConfigError::invalid(
                "changes.max_records",
                "must be at least 1",
            ));
        }
        self.notifications.endpoints()?;
        if self.history.max_entries == 0 {
            return Err(ConfigError::invalid(
                "history.max_entries",
                "must be at least 1 (each tag keeps its current entry)",
            ));
        }
        self.server.validate()?;
        self.ui.validate()?;
        if self.log.scan_progress_interval.is_zero() {
            return Err(ConfigError::invalid(
                "log.scan_progress_interval",
                "must not be 0",
            ));
        }
        self.tls.files()?;
        if self.icons.uri.is_some() && self.icons.dir.is_none() {
            return Err(ConfigError::invalid(
                "icons.uri",
                "needs icons.dir (where the icons are written)",
            ));
        }
        for (key, value) in [
            (
                "query.max_pattern_bytes",
                self.query.max_pattern_bytes as u64,
            ),
            ("query.max_match_cost", self.query.max_match_cost),
            ("cache.index_entries", self.cache.index_entries as u64),
            ("cache.index_bytes", self.cache.index_bytes as u64),
            ("cache.page_bytes", self.cache.page_bytes as u64),
            (
                "cache.answer_disk_bytes",
                self.cache.answer_disk_bytes as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if let Some(filter) = &self.log.filter {
            tracing_subscriber::EnvFilter::try_new(filter)
                .map_err(|e| ConfigError::invalid("log.filter", e.to_string()))?;
        }
        Ok(())
    }

    /// The `Registry` value of index answers: `registry.public_url`, else `registry.url`,
    /// else `/` (the registry is served from the index's own origin, the usual setup
    /// behind a reverse proxy; only possible for a read-only server).
    pub fn public_registry_url(&self) -> String {
        self.registry
            .public_url
            .clone()
            .or_else(|| self.registry.url.as_ref().map(|u| u.as_str().to_owned()))
            .unwrap_or_else(|| "/".to_owned())
    }
}

/// A YAML file as a figment source, whose errors name the file. figment treats a missing
/// file as empty; a named file that is missing is a mistake worth reporting.
pub fn yaml_file(path: &Path) -> Result<figment::providers::Data<Yaml>, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Yaml::file_exact(path)),
        Ok(_) => Err(read_error(std::io::Error::other("not a regular file"))),
        Err(source) => Err(read_error(source)),
    }
}

/// Parses a registry base URL as a person writes it: an `http://` or `https://` URL. A
/// bare `host:port` gets a message saying which scheme to add.
pub fn parse_registry_url(text: &str) -> Result<url::Url, String> {
    if !text.contains("://") {
        return Err(format!(
            "{text:?} has no scheme: add http:// or https:// (e.g. http://{text})"
        ));
    }
    let url = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must be an http:// or https:// URL, got {text:?}"));
    }
    Ok(url)
}

/// `registry.url` through [`parse_registry_url`].
fn registry_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse_registry_url(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// The environment variable that sets `key` (`registry.url` → `FLAGSTATE_REGISTRY__URL`).
pub fn env_var_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.split('.')
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join(ENV_SEPARATOR)
    )
}

#[cfg(test)]
mod tests;
