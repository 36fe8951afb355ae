//! # flagstate-pg
//!
//! [`PgStore`]: the PostgreSQL [`Store`] of flagstate, for scaling out. One process opens
//! it read-write (the writer: scanner and webhook receiver); any number of query
//! replicas open the same database and schema read-only behind an HTTP cache, on the
//! primary or on a hot standby (streaming replication). On the primary, replicas learn
//! about the writer's commits through `LISTEN`/`NOTIFY`, so their generation — and with
//! it every ETag they hand out — follows the writer within milliseconds; on a standby,
//! where `NOTIFY` is not delivered, within [`PgOptions::generation_poll`] of the commit
//! being replayed.
//!
//! ## Layout
//!
//! - `meta`: the generation, one row, bumped by `UPDATE … RETURNING` in the same
//!   transaction as the change (a trigger announces it on channel `flagstate_generation`).
//! - `manifests`: immutable, keyed by digest, shared by all repositories. Labels and
//!   annotations are `jsonb` with GIN indexes, and their keys are generated `text[]`
//!   columns (`label_keys`, `annotation_keys`) with GIN indexes of their own.
//! - `list_entries`: the children of image lists, in order, with the effective platform
//!   queries match them by.
//! - `repositories` and `tags`: names, and tag → digest, plus each repository's weighted
//!   full-text document, and the discovery times (milliseconds since the epoch): when a
//!   repository was created and last changed, when a tag started pointing at its digest,
//!   each indexed by `(updated, name)` for keyset pages in time order.
//! - `tag_history`: every digest a tag pointed at and since when, in write order (`seq`).
//!   It names tag and digest by text, so it outlives deleted tags and collected
//!   manifests, and cascades with its repository.
//!
//! Names, tags and digests are `COLLATE "C"`, so ordering is bytewise whatever the
//! database locale. Migrations are embedded and applied by the writer at open; they only
//! ever add. A replica never migrates: it refuses a schema that is missing, older or newer
//! than the one it was built for.
//!
//! **Why jsonb rather than key/value tables.** Labels and annotations are only ever read
//! whole (to build answers) or tested by key (`=`, `:exists`, `:matches`). A GIN index
//! (`jsonb_ops`) serves `labels @> '{"k":"v"}'`, the key arrays serve `:exists` (with
//! element statistics the planner can use), the map
//! round-trips in one column without a join per image, and a Flatpak image's dozen
//! labels (some of them large: appdata XML, base64 icons) stay in one TOASTed value
//! instead of a dozen rows. Normalised tables would pay a join and a row per key on every
//! answer to win only on ad-hoc SQL, which nothing here needs.
//!
//! A store's generation is known in-process and never costs a query: notifications and
//! the store's own commits record it, a poll of the row every
//! [`PgOptions::generation_poll`] confirms it (the only source on a hot standby), and a
//! value no poll confirmed for [`PgOptions::unconfirmed_limit`] makes
//! [`Store::generation`] fail with [`StoreError::Unavailable`] rather than serve what
//! may be stale. The writer also refreshes the
//! planner's statistics itself (`ANALYZE` at open and after a doubling number of writes),
//! because plans made for empty tables scan everything once the index has grown and
//! autovacuum may be off or behind.
//!
//! ## Queries
//!
//! SQL narrows the candidates with indexes (repository, tag, platform, label and annotation
//! tests, every value a bound parameter), then [`IndexQuery::evaluate_repository`] builds
//! the answer from the candidate tags and manifests read in one repeatable-read snapshot.
//! The semantics are therefore the reference ones by construction.
//!
//! ## Errors
//!
//! Connection trouble (refused, dropped, server shutting down, pool timeout) is
//! [`StoreError::Unavailable`]; the pool reconnects by itself once the server is back.
//! Writes on a read-only store are [`StoreError::ReadOnly`]; a schema from a newer build is
//! [`StoreError::SchemaTooNew`]; everything else is [`StoreError::Backend`].
//!
//! ## Testing
//!
//! The tests need a server: set `FLAGSTATE_TEST_PG_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in a schema of its own and
//! drops it afterwards; without the variable the tests say so loudly and skip.

#![warn(missing_docs)]

mod changes;
mod discovery;
mod error;
mod narrow;
mod nodelay;
mod read;
mod schema;
mod search;
mod stats;
mod watch;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flagstate_core::changes::{ChangeCursor, ChangeFilter, ChangePage, ChangeRetention};
use flagstate_core::discovery::{
    HistoryEntry, HistoryRetention, RepositoryInfo, RepositoryListing, TagInfo, TagListing,
};
use flagstate_core::model::{Manifest, RepositorySnapshot, TagChange};
use flagstate_core::response::RepositoryEntry;
use flagstate_core::store::StoreNotReady;
use flagstate_core::{
    Capabilities, Digest, EntryStream, GcStats, Generation, IndexQuery, RepositoryName, SearchPage,
    Store, StoreError, Tag, Timestamp,
};
use sqlx::PgPool;

/// How many built entries a streamed query may hold ahead of its consumer.
const STREAM_AHEAD: usize = 16;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::{PgError, STORE};
use crate::watch::{GenerationWatch, WatchPools, Watcher};

/// Default of [`PgOptions::generation_poll`].
pub const DEFAULT_GENERATION_POLL: Duration = Duration::from_millis(500);

/// How many poll intervals the generation may go unconfirmed unless
/// [`PgOptions::unconfirmed_limit`] says otherwise: 20, so 10 s with the default poll.
/// A database that is only slow to answer (its backends starved of CPU answered a
/// trivial read in up to 4.6 s on a saturated 2-core machine) is not taken for one
/// that went away.
pub const UNCONFIRMED_POLLS: u32 = 20;

/// How to open a [`PgStore`]. Build it from [`Default`] with the `with_*` methods (or by
/// assigning fields); new fields may be added without a major release.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOptions {
    /// Open as a query replica: never migrate, refuse every write with
    /// [`StoreError::ReadOnly`], and run every session read-only.
    pub read_only: bool,
    /// Longest a single statement may run before the server cancels it; `None` keeps the
    /// server's setting.
    pub statement_timeout: Option<Duration>,
    /// Most connections the query pool opens (the generation listener and the generation
    /// poll have one more each).
    pub max_connections: u32,
    /// Schema holding the tables; `None` uses the connection's default search path. The
    /// writer creates it if needed. Plain lowercase identifiers only (`[a-z_][a-z0-9_]*`).
    pub schema: Option<String>,
    /// How long an operation waits for a connection before failing with
    /// [`StoreError::Unavailable`] (includes reconnect attempts while the server is down).
    pub acquire_timeout: Duration,
    /// How often the generation row is read. Another process's commits are seen within
    /// this (on a hot standby, within this of being replayed there; on the primary,
    /// notifications are faster). Must not be zero.
    pub generation_poll: Duration,
    /// How long the generation may go unconfirmed by a poll before [`Store::generation`]
    /// fails with [`StoreError::Unavailable`] (the database went away: answers are
    /// refused rather than served stale); `None` is [`UNCONFIRMED_POLLS`] ×
    /// `generation_poll`. Must be at least `generation_poll`.
    pub unconfirmed_limit: Option<Duration>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            read_only: false,
            statement_timeout: Some(Duration::from_secs(30)),
            max_connections: 10,
            schema: None,
            acquire_timeout: Duration::from_secs(5),
            generation_poll: DEFAULT_GENERATION_POLL,
            unconfirmed_limit: None,
        }
    }
}

impl PgOptions {
    /// Sets [`read_only`](Self::read_only).
    #[must_use]
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets [`statement_timeout`](Self::statement_timeout).
    #[must_use]
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets [`max_connections`](Self::max_connections).
    #[must_use]
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets [`schema`](Self::schema).
    #[must_use]
    pub fn with_schema(mut self, schema: Option<String>) -> Self {
        self.schema = schema;
        self
    }

    /// Sets [`generation_poll`](Self::generation_poll).
    #[must_use]
    pub fn with_generation_poll(mut self, every: Duration) -> Self {
        self.generation_poll = every;
        self
    }

    /// Sets [`unconfirmed_limit`](Self::unconfirmed_limit).
    #[must_use]
    pub fn with_unconfirmed_limit(mut self, limit: Option<Duration>) -> Self {
        self.unconfirmed_limit = limit;
        self
    }

    /// How long the generation may go unconfirmed (see
    /// [`unconfirmed_limit`](Self::unconfirmed_limit)).
    pub fn effective_unconfirmed_limit(&self) -> Duration {
        self.unconfirmed_limit
            .unwrap_or_else(|| self.generation_poll.saturating_mul(UNCONFIRMED_POLLS))
    }

    /// Sets [`acquire_timeout`](Self::acquire_timeout).
    #[must_use]
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
}

/// The error for a pool that could not open its first connection. The pool only says it
/// timed out; one direct attempt names the server and why it cannot be reached
/// (refused, unknown host, authentication, …).
async fn connect_failure(
    connect: &PgConnectOptions,
    timeout: Duration,
    error: sqlx::Error,
) -> StoreError {
    use sqlx::Connection as _;
    if !matches!(error, sqlx::Error::PoolTimedOut) {
        return PgError::sql("connecting")(error).into();
    }
    let server = match connect.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", connect.get_host(), connect.get_port()),
    };
    let source =
        match tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(connect)).await {
            Ok(Err(cause)) => cause,
            // It connects now, or hangs: the pool's own answer is all there is to say.
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                error
            }
            Err(_) => error,
        };
    PgError::Connect { server, source }.into()
}

/// The PostgreSQL [`Store`]. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    listen_pool: PgPool,
    poll_pool: PgPool,
    read_only: bool,
    schema: String,
    watch: Arc<GenerationWatch>,
    stats: stats::StatsSchedule,
    _watcher: Watcher,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.schema)
            .field("read_only", &self.inner.read_only)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db?…`). A writer creates the schema
    /// if needed and applies the embedded migrations; a read-only store checks that the
    /// schema is exactly the version it understands.
    ///
    /// Fails with [`StoreError::Unavailable`] when the server cannot be reached,
    /// [`StoreError::SchemaTooNew`] when a newer build migrated the schema, and
    /// [`StoreError::Backend`] for a bad URL, schema name or option, or a replica facing a
    /// missing or older schema.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("postgres" | "postgresql")) {
            return Err(PgError::InvalidUrl(
                "it must start with postgres:// or postgresql://".into(),
            )
            .into());
        }
        let mut connect =
            PgConnectOptions::from_str(url).map_err(|e| PgError::InvalidUrl(e.to_string()))?;
        if let Some(schema) = &options.schema {
            schema::validate_schema_name(schema)?;
        }
        if options.generation_poll.is_zero() {
            return Err(PgError::InvalidOption("generation_poll must not be zero").into());
        }
        if options.effective_unconfirmed_limit() < options.generation_poll {
            return Err(PgError::InvalidOption(
                "unconfirmed_limit must be at least generation_poll",
            )
            .into());
        }
        let mut settings: Vec<(&str, String)> = Vec::new();
        if let Some(schema) = &options.schema {
            settings.push(("search_path", schema.clone()));
        }
        if let Some(timeout) = options.statement_timeout {
            settings.push(("statement_timeout", timeout.as_millis().to_string()));
        }
        if options.read_only {
            // Belt and braces: even a bug cannot make a replica write.
            settings.push(("default_transaction_read_only", "on".to_owned()));
        }
        connect = connect.options(settings).application_name("flagstate");
        // Over TCP, every new connection gets TCP_NODELAY (see `nodelay`).
        let tcp_port = connect.get_socket().is_none().then(|| connect.get_port());
        let pool_options = || {
            PgPoolOptions::new()
                .acquire_timeout(options.acquire_timeout)
                .test_before_acquire(true)
                .after_connect(move |_, _| {
                    Box::pin(async move {
                        if let Some(port) = tcp_port {
                            nodelay::set_on_sockets_to(port);
                        }
                        Ok(())
                    })
                })
        };
        let pool = match pool_options()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect.clone())
            .await
        {
            Ok(pool) => pool,
            Err(e) => return Err(connect_failure(&connect, options.acquire_timeout, e).await),
        };
        if options.read_only {
            schema::check_readable(&pool).await?;
        } else {
            schema::migrate(&pool, options.schema.as_deref()).await?;
            // Statistics may be missing or stale (see `stats`); the writer starts fresh.
            stats::refresh_in_background(pool.clone());
        }
        let schema =
            schema::inspect(&pool)
                .await?
                .schema
                .ok_or_else(|| PgError::SchemaMissing {
                    schema: options.schema.clone().unwrap_or_else(|| "(none)".into()),
                })?;
        let watch = Arc::new(GenerationWatch::new(
            options.generation_poll,
            options.effective_unconfirmed_limit(),
        ));
        watch::refresh(&pool, &watch).await?;
        let listen_pool = pool_options()
            .max_connections(1)
            .connect_lazy_with(connect.clone());
        let poll_pool = pool_options().max_connections(1).connect_lazy_with(connect);
        let watcher = watch::spawn(
            WatchPools {
                pool: pool.clone(),
                listen: listen_pool.clone(),
                poll: poll_pool.clone(),
            },
            schema.clone(),
            watch.clone(),
        );
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                listen_pool,
                poll_pool,
                read_only: options.read_only,
                schema,
                watch,
                stats: stats::StatsSchedule::default(),
                _watcher: watcher,
            }),
        })
    }

    /// The schema the store works in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Whether the store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Closes every connection; later operations fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.inner.listen_pool.close().await;
        self.inner.poll_pool.close().await;
        self.inner.pool.close().await;
    }

    fn writable(&self) -> Result<&PgPool, StoreError> {
        if self.inner.read_only {
            Err(StoreError::ReadOnly { store: STORE })
        } else {
            Ok(&self.inner.pool)
        }
    }

    /// Records a generation this store produced, so `generation()` reflects it at once.
    fn produced(&self, generation: Generation) -> Generation {
        self.inner.watch.observe(generation);
        generation
    }

    /// Bookkeeping after a successful write.
    fn wrote(&self, generation: Generation) -> Generation {
        if self.inner.stats.record_write() {
            stats::refresh_in_background(self.inner.pool.clone());
        }
        self.produced(generation)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn replace_repository(
        &self,
        snapshot: &RepositorySnapshot,
    ) -> Result<Generation, StoreError> {
        let pool = self.writable()?;
        Ok(self.wrote(write::replace_repository(pool, snapshot).await?))
    }

    async fn remove_repository(&self, name: &RepositoryName) -> Result<Generation, StoreError> {
        let pool = self.writable()?;
        Ok(self.wrote(write::remove_repository(pool, name).await?))
    }

    async fn apply(&self, change: &TagChange) -> Result<Generation, StoreError> {
        let pool = self.writable()?;
        Ok(self.wrote(write::apply(pool, change).await?))
    }

    async fn repositories(&self) -> Result<Vec<RepositoryName>, StoreError> {
        read::repositories(&self.inner.pool).await
    }

    async fn repository_tags(
        &self,
        name: &RepositoryName,
    ) -> Result<Option<BTreeMap<Tag, Digest>>, StoreError> {
        read::repository_tags(&self.inner.pool, name).await
    }

    async fn known_manifests(&self, digests: &[Digest]) -> Result<BTreeSet<Digest>, StoreError> {
        read::known_manifests(&self.inner.pool, digests).await
    }

    async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>, StoreError> {
        read::manifest(&self.inner.pool, digest).await
    }

    async fn query(&self, query: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError> {
        read::query(&self.inner.pool, query).await
    }

    async fn query_stream(&self, query: &IndexQuery) -> Result<EntryStream, StoreError> {
        let (sender, stream) = EntryStream::channel(STREAM_AHEAD);
        let (pool, query) = (self.inner.pool.clone(), query.clone());
        tokio::spawn(async move {
            let result = read::query_each(&pool, &query, read::Sink::Stream(&sender)).await;
            if let Err(e) = result {
                // The consumer may be gone already; then nobody needs the error.
                let _ = sender.send(Err(e)).await;
            }
        });
        Ok(stream)
    }

    async fn list_repositories(
        &self,
        listing: &RepositoryListing,
    ) -> Result<Vec<RepositoryInfo>, StoreError> {
        discovery::list_repositories(&self.inner.pool, listing).await
    }

    async fn list_tags(
        &self,
        repository: &RepositoryName,
        listing: &TagListing,
    ) -> Result<Option<Vec<TagInfo>>, StoreError> {
        discovery::list_tags(&self.inner.pool, repository, listing).await
    }

    async fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<flagstate_core::PushedManifest>>, StoreError> {
        discovery::list_referrers(&self.inner.pool, repository, subject, artifact_type).await
    }

    async fn list_manifests(
        &self,
        repository: &RepositoryName,
        listing: &flagstate_core::ManifestListing,
    ) -> Result<Option<Vec<flagstate_core::ManifestInfo>>, StoreError> {
        discovery::list_manifests(&self.inner.pool, repository, listing).await
    }

    async fn tag_history(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        discovery::tag_history(&self.inner.pool, repository, tag).await
    }

    async fn changes_since(
        &self,
        after: ChangeCursor,
        filter: &ChangeFilter,
        limit: usize,
    ) -> Result<ChangePage, StoreError> {
        changes::changes_since(&self.inner.pool, after, filter, limit).await
    }

    async fn prune_changes(
        &self,
        retention: &ChangeRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        changes::prune_changes(self.writable()?, retention, now).await
    }

    async fn delivery_cursor(&self, endpoint: &str) -> Result<Option<ChangeCursor>, StoreError> {
        changes::delivery_cursor(&self.inner.pool, endpoint).await
    }

    async fn set_delivery_cursor(
        &self,
        endpoint: &str,
        cursor: ChangeCursor,
    ) -> Result<(), StoreError> {
        changes::set_delivery_cursor(self.writable()?, endpoint, cursor).await
    }

    async fn prune_history(
        &self,
        retention: &HistoryRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let pool = self.writable()?;
        let (dropped, generation) = write::prune_history(pool, retention, now).await?;
        if dropped > 0 {
            self.wrote(generation);
        }
        Ok(dropped)
    }

    async fn search(&self, text: &str, offset: u64, limit: u64) -> Result<SearchPage, StoreError> {
        search::search(&self.inner.pool, text, offset, limit).await
    }

    /// Known in-process, never a query: fails with [`StoreError::Unavailable`] once no
    /// poll confirmed it for [`PgOptions::unconfirmed_limit`].
    async fn generation(&self) -> Result<Generation, StoreError> {
        self.inner.watch.current()
    }

    async fn registry_url(&self) -> Result<Option<String>, StoreError> {
        write::registry_url(&self.inner.pool).await
    }

    async fn set_registry_url(&self, url: &str) -> Result<Generation, StoreError> {
        let pool = self.writable()?;
        Ok(self.wrote(write::set_registry_url(pool, url).await?))
    }

    async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        let pool = self.writable()?;
        write::collect_garbage(pool).await
    }

    /// Reads the generation row (a query, never the generation known in-process; a
    /// successful read confirms it); a writer then checks in a transaction, rolled back, that the server is not in
    /// recovery (a standby), its transactions are not read-only, and it may update the
    /// tables.
    async fn readiness(&self) -> Result<(), StoreNotReady> {
        watch::refresh(&self.inner.pool, &self.inner.watch)
            .await
            .map_err(StoreNotReady::Unreadable)?;
        if !self.inner.read_only {
            write::probe_write(&self.inner.pool)
                .await
                .map_err(StoreNotReady::NotWritable)?;
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_ranked_search(true)
    }
}
