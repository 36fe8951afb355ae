//! Turning the configuration into running parts: the store, the registry client and the
//! indexer. Shared by every command so they all open things the same way.

use std::sync::Arc;

use flagstate_core::Store;
use flagstate_core::indexer::{Indexer, IndexerConfig};
use flagstate_core::registry::{Credentials, RegistryClient, RegistryConfig};

use crate::config::{
    Config, ConfigError, DatabaseChoice, SqliteCheckOnOpen, SqliteSettings, SqliteSynchronous,
};
use crate::error::CliError;

/// The registry client the configuration describes.
pub fn registry_client(config: &Config) -> Result<RegistryClient, CliError> {
    let settings = &config.registry;
    let url = settings
        .url
        .clone()
        .ok_or_else(|| ConfigError::invalid("registry.url", "is required for this command"))?;
    let credentials = match (&settings.username, &settings.password, &settings.token) {
        (Some(username), Some(password), None) => Some(Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        }),
        (None, None, Some(token)) => Some(Credentials::Bearer {
            token: token.clone(),
        }),
        _ => None,
    };
    let cfg = RegistryConfig::new(url)
        .with_credentials(credentials)
        .with_timeout(settings.timeout)
        .with_max_concurrency(settings.max_concurrency)
        .with_retry_budget(settings.retry_budget)
        .with_repositories(settings.repository_names()?);
    RegistryClient::new(cfg).map_err(|e| ConfigError::invalid("registry", e.to_string()).into())
}

/// The HTTP layer's settings from the configuration.
pub fn http_config(config: &Config) -> flagstate_http::HttpConfig {
    {
        let mut fields = flagstate_http::HttpConfig::default();
        fields.public_registry_url = config.public_registry_url();
        fields.max_age_index = config.cache.max_age_index;
        fields.max_age_html = config.cache.max_age_html;
        fields.ui_remote_name = config.ui.remote_name.clone();
        fields.index_cache_entries = config.cache.index_entries;
        fields.index_cache_bytes = config.cache.index_bytes;
        fields.page_cache_entries = config.cache.page_entries;
        fields.page_cache_bytes = config.cache.page_bytes;
        fields.answer_dir = config.cache.answer_dir.clone();
        fields.answer_memory_max = config.cache.answer_memory_max;
        fields.answer_disk_bytes = config.cache.answer_disk_bytes;
        fields.events_token = config.events.token().map(str::to_owned);
        fields.events_allow_anonymous = config.events.allow_anonymous;
        fields.request_timeout = config.server.request_timeout;
        fields.max_in_flight = config.server.max_in_flight;
        fields.max_change_watchers = config.server.max_change_watchers;
        fields.change_buffer_records = config.server.change_buffer_records;
        fields.max_concurrent_builds = config.server.max_concurrent_builds;
        fields.build_timeout = config.server.build_timeout;
        fields.assert_endpoint = config.components.assert_endpoint;
        fields.icons_dir = config.icons.dir.clone();
        fields.icons_uri = config
            .icons
            .uri
            .clone()
            .unwrap_or_else(|| "/icons/".to_owned());
        fields.query_limits = config.query.limits();
        fields.build_info = build_info();
        fields
    }
}

/// This binary's version and commit, for `/metrics`.
pub fn build_info() -> flagstate_http::BuildInfo {
    flagstate_http::BuildInfo::new(env!("CARGO_PKG_VERSION"), crate::cli::commit())
}

/// The indexer the configuration describes, writing into `store`.
pub fn indexer(config: &Config, store: Arc<dyn Store>) -> Result<Indexer, CliError> {
    let client = registry_client(config)?;
    let cfg = IndexerConfig::default()
        .with_concurrency(config.registry.max_concurrency)
        .with_full_scan_interval(config.interval.fetch_all())
        .with_gc_interval(config.interval.garbage_collect())
        .with_history_retention(config.history.retention())
        .with_change_retention(config.changes.retention())
        .with_max_pending_reconciles(config.events.max_pending_reconciles)
        .with_progress_log_interval(config.log.scan_progress_interval);
    Ok(Indexer::new(client, store, cfg))
}

/// Opens the configured store for writing (read-only when `read_only` is set), creating
/// a SQLite database when missing.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    open(config, config.database.choice()?, config.read_only).await
}

/// Opens the configured store read-only, for commands that only look at an existing
/// index: a SQLite file that does not exist is an error rather than a new empty database.
pub async fn open_existing_store(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    let choice = config.database.choice()?;
    if let DatabaseChoice::Sqlite(path) = &choice
        && !path.exists()
    {
        return Err(CliError::Runtime(format!(
            "no index at {}: run `flagstate scan` or `flagstate serve` first, or point --database at an existing index",
            path.display()
        )));
    }
    open(config, choice, true).await
}

/// The SQLite store's options from `database.sqlite.*`.
pub fn sqlite_options(settings: &SqliteSettings) -> flagstate_sqlite::SqliteOptions {
    use flagstate_sqlite::{CheckOnOpen, Durability};
    let defaults = flagstate_sqlite::SqliteOptions::default();
    {
        let mut fields = defaults.clone();
        fields.generation_refresh = settings
            .generation_refresh
            .unwrap_or(defaults.generation_refresh);
        fields.durability = match settings.synchronous {
            SqliteSynchronous::Full => Durability::Full,
            SqliteSynchronous::Normal => Durability::Normal,
        };
        fields.check_on_open = match settings.check_on_open {
            SqliteCheckOnOpen::Quick => CheckOnOpen::Quick,
            SqliteCheckOnOpen::None => CheckOnOpen::Skip,
        };
        fields
    }
}

/// Opens the store; a writer then stores its public registry URL with the index
/// ([`Store::set_registry_url`]), which every process serving the index names in its
/// answers, so a writer and its read-only replicas answer the same bytes.
async fn open(
    config: &Config,
    choice: DatabaseChoice,
    read_only: bool,
) -> Result<Arc<dyn Store>, CliError> {
    let store = open_backend(config, choice, read_only).await?;
    if !read_only {
        store
            .set_registry_url(&config.public_registry_url())
            .await?;
    }
    Ok(store)
}

async fn open_backend(
    config: &Config,
    choice: DatabaseChoice,
    read_only: bool,
) -> Result<Arc<dyn Store>, CliError> {
    match choice {
        DatabaseChoice::Sqlite(path) => {
            let options = sqlite_options(&config.database.sqlite_settings());
            // Opening creates, checks and migrates the file: blocking work, kept off the
            // runtime.
            let store = tokio::task::spawn_blocking(move || {
                if read_only {
                    flagstate_sqlite::SqliteStore::open_read_only_with(&path, options)
                } else {
                    flagstate_sqlite::SqliteStore::open_with(&path, options)
                }
            })
            .await
            .map_err(|e| CliError::Runtime(format!("opening the SQLite store panicked: {e}")))??;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        DatabaseChoice::Postgres { url, schema } => {
            let defaults = flagstate_pg::PgOptions::default();
            let poll = config
                .database
                .postgres
                .as_ref()
                .and_then(|pg| pg.generation_poll)
                .unwrap_or(defaults.generation_poll);
            let unconfirmed = config
                .database
                .postgres
                .as_ref()
                .and_then(|pg| pg.unconfirmed_limit);
            let options = defaults
                .with_read_only(read_only)
                .with_schema(schema)
                .with_generation_poll(poll)
                .with_unconfirmed_limit(unconfirmed);
            let store = flagstate_pg::PgStore::connect(&url, options).await?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "postgres"))]
        DatabaseChoice::Postgres { .. } => Err(ConfigError::invalid(
            "database.postgres",
            "this build of flagstate has no PostgreSQL support (feature `postgres`)",
        )
        .into()),
    }
}
