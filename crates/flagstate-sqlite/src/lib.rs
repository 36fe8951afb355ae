//! # flagstate-sqlite
//!
//! [`SqliteStore`]: the embedded, zero-setup [`Store`] of flagstate. One database file
//! holds the whole index of one registry; it is created and migrated on open.
//!
//! ## How it works
//! - **Connections** ([`connection`]): one writer connection serialises writes; a few
//!   read-only connections answer queries concurrently thanks to WAL mode. All SQLite
//!   calls run on tokio's blocking pool, never on the async runtime's workers.
//! - **Schema** (`schema`): versioned migrations in `PRAGMA user_version`, applied at
//!   open, additive only. A database from a newer flagstate is refused
//!   ([`StoreError::SchemaTooNew`]), and so is a SQLite file another program created.
//! - **Writes** (`write`): each `Store` write is one transaction that also rewrites the
//!   repository's search row and bumps the generation when (and only when) the tags
//!   changed, so the generation on disk always describes the data on disk.
//! - **Queries** (`candidates`, `read`): label and annotation values live in a
//!   normalised `(manifest, kind, key, value)` table indexed by `(kind, key, value)`.
//!   That single index serves `:exists`, `=` and prefix-glob `:matches` tests on any key
//!   (labels and annotations are open-ended, so neither per-key columns nor indexes on
//!   JSON expressions could), and it is what makes the Flatpak query
//!   (`label:org.flatpak.ref:exists=1&…`) touch only Flatpak images. SQL narrows the
//!   query to candidate tags through these indexes; the answer is then produced by
//!   [`IndexQuery::evaluate_repository`] over exactly those tags, so it is identical to
//!   the reference semantics by construction. SQL text is shaped by the typed query and
//!   every value is a bound parameter.
//! - **Sharing**: processes on one host can share the file, a writer and read-only
//!   servers (WAL: readers see each commit); not over network filesystems, where SQLite's
//!   locking cannot be relied on.
//! - **Generation** (core's [`GenerationCache`], read on demand): known in-process. The store's own commits record it at
//!   once; another process's commits on the same file are seen within
//!   [`SqliteOptions::generation_refresh`] (the `meta` row is read at most once per
//!   interval), so answering from a generation-keyed cache costs no database read.
//! - **Search** (`search`): an FTS5 table over repository names and the titles and
//!   descriptions of tagged images, ranked with bm25 ([`Capabilities::ranked_search`]).
//!
//! ## Durability
//! The database runs in WAL mode with `synchronous = FULL` by default
//! ([`Durability::Full`]): every commit is fsynced before the write returns, so a change
//! that was acknowledged (an event answered `2xx`) survives an operating-system crash or
//! power loss. [`Durability::Normal`] (`synchronous = NORMAL`) is the explicit opt-in for
//! cheaper commits: a commit still survives the process being killed at any moment
//! (tested by killing a writer mid-stream) and the file is never corrupted, but power
//! loss may roll back the last commits before it, acknowledged events included, until
//! the next full scan repairs them. `docs/performance.md` has the measured cost.
//!
//! ## Integrity and readiness
//! Opening a file runs `PRAGMA quick_check` ([`CheckOnOpen::Quick`], the default) and
//! refuses a damaged database, naming the file and what the check reported. A writer
//! refuses a file it cannot write (SQLite would silently open it read-only).
//! [`Store::readiness`] reads the generation and, for a writer, takes and releases the
//! write lock (`BEGIN IMMEDIATE; ROLLBACK`, waiting at most a quarter second for another
//! process).
//!
//! ## Ordering
//! Text columns use SQLite's BINARY (bytewise) collation, but no output order relies on
//! SQL: repositories, images, lists and tags are sorted in Rust.

#![warn(missing_docs)]

mod candidates;
mod changes;
pub mod connection;
mod discovery;
mod error;
mod read;
mod schema;
mod search;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use async_trait::async_trait;
use flagstate_core::store::StoreNotReady;
use flagstate_core::{
    Capabilities, ChangeCursor, ChangeFilter, ChangePage, ChangeRetention, Digest, EntryStream,
    GcStats, Generation, HistoryEntry, HistoryRetention, IndexQuery, Manifest, ManifestInfo,
    ManifestListing, RepositoryEntry, RepositoryInfo, RepositoryListing, RepositoryName,
    RepositorySnapshot, SearchPage, Store, StoreError, Tag, TagChange, TagInfo, TagListing,
    Timestamp,
};

pub use connection::{CheckOnOpen, DEFAULT_GENERATION_REFRESH, Durability, SqliteOptions};

use connection::Connections;

/// How many built entries a streamed query may hold ahead of its consumer.
const STREAM_AHEAD: usize = 16;
use flagstate_core::generation::GenerationCache;

/// The newest database schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = schema::SUPPORTED_VERSION;

/// A [`Store`] in a SQLite database file. See the [crate docs](crate).
#[derive(Debug)]
pub struct SqliteStore {
    connections: Connections,
    generation: GenerationCache,
}

impl SqliteStore {
    /// Opens the database at `path` for reading and writing, creating it if missing and
    /// migrating its schema. Blocks while opening; call it before serving, or from
    /// `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`open`](Self::open) with explicit tuning.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        Ok(SqliteStore {
            connections: Connections::open(path.as_ref(), &options)?,
            generation: GenerationCache::new(options.generation_refresh),
        })
    }

    /// Opens an existing, up-to-date database without ever writing to it: every write
    /// method fails with [`StoreError::ReadOnly`]. Sees what another process's writer
    /// commits.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_read_only_with(path, SqliteOptions::default())
    }

    /// [`open_read_only`](Self::open_read_only) with explicit tuning.
    pub fn open_read_only_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        Ok(SqliteStore {
            connections: Connections::open_read_only(path.as_ref(), &options)?,
            generation: GenerationCache::new(options.generation_refresh),
        })
    }

    /// A private, empty database in memory (one connection), for tests and throwaway use.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Ok(SqliteStore {
            connections: Connections::open_in_memory(&SqliteOptions::default())?,
            generation: GenerationCache::new(SqliteOptions::default().generation_refresh),
        })
    }

    /// Where the database lives (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.connections.path
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.connections.is_read_only()
    }

    /// The durability the writer connection runs with, read back from
    /// `PRAGMA synchronous`; `None` for a read-only store, which commits nothing.
    pub async fn durability(&self) -> Result<Option<Durability>, StoreError> {
        if self.is_read_only() {
            return Ok(None);
        }
        Ok(Some(self.connections.write(connection::durability).await?))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn replace_repository(
        &self,
        snapshot: &RepositorySnapshot,
    ) -> Result<Generation, StoreError> {
        let snapshot = snapshot.clone();
        Ok(self
            .connections
            .write(move |c| write::replace_repository(c, &snapshot))
            .await
            .map(|g| self.generation.wrote(g))?)
    }

    async fn remove_repository(&self, name: &RepositoryName) -> Result<Generation, StoreError> {
        let name = name.clone();
        Ok(self
            .connections
            .write(move |c| write::remove_repository(c, &name))
            .await
            .map(|g| self.generation.wrote(g))?)
    }

    async fn apply(&self, change: &TagChange) -> Result<Generation, StoreError> {
        let change = change.clone();
        Ok(self
            .connections
            .write(move |c| write::apply(c, &change))
            .await
            .map(|g| self.generation.wrote(g))?)
    }

    async fn repositories(&self) -> Result<Vec<RepositoryName>, StoreError> {
        Ok(self.connections.read(read::repositories).await?)
    }

    async fn repository_tags(
        &self,
        name: &RepositoryName,
    ) -> Result<Option<BTreeMap<Tag, Digest>>, StoreError> {
        let name = name.clone();
        Ok(self
            .connections
            .read(move |c| read::repository_tags(c, &name))
            .await?)
    }

    async fn known_manifests(&self, digests: &[Digest]) -> Result<BTreeSet<Digest>, StoreError> {
        let digests = digests.to_vec();
        Ok(self
            .connections
            .read(move |c| read::known_manifests(c, &digests))
            .await?)
    }

    async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>, StoreError> {
        let digest = digest.clone();
        Ok(self
            .connections
            .read(move |c| read::manifest(c, &digest))
            .await?)
    }

    async fn query(&self, query: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError> {
        let query = query.clone();
        Ok(self
            .connections
            .read(move |c| read::query(c, &query))
            .await?)
    }

    async fn query_stream(&self, query: &IndexQuery) -> Result<EntryStream, StoreError> {
        if !self.connections.has_readers() {
            // An in-memory store reads on its only connection, the writer: holding it for
            // a stream would stall every write until the consumer finishes.
            return Ok(EntryStream::from_entries(self.query(query).await?));
        }
        let query = query.clone();
        let (sender, stream) = EntryStream::channel(STREAM_AHEAD);
        self.connections
            .read_detached(move |c| {
                let result = read::query_each(c, &query, &mut |entry| {
                    sender.blocking_send(Ok(entry)).is_ok()
                });
                if let Err(e) = result {
                    // The consumer may be gone already; then nobody needs the error.
                    let _ = sender.blocking_send(Err(e.into()));
                }
            })
            .await?;
        Ok(stream)
    }

    async fn list_repositories(
        &self,
        listing: &RepositoryListing,
    ) -> Result<Vec<RepositoryInfo>, StoreError> {
        listing.listing.validate()?;
        let listing = listing.clone();
        Ok(self
            .connections
            .read(move |c| discovery::list_repositories(c, &listing))
            .await?)
    }

    async fn list_tags(
        &self,
        repository: &RepositoryName,
        listing: &TagListing,
    ) -> Result<Option<Vec<TagInfo>>, StoreError> {
        listing.listing.validate()?;
        let (repository, listing) = (repository.clone(), listing.clone());
        Ok(self
            .connections
            .read(move |c| discovery::list_tags(c, &repository, &listing))
            .await?)
    }

    async fn list_manifests(
        &self,
        repository: &RepositoryName,
        listing: &ManifestListing,
    ) -> Result<Option<Vec<ManifestInfo>>, StoreError> {
        let (repository, listing) = (repository.clone(), listing.clone());
        Ok(self
            .connections
            .read(move |c| discovery::list_manifests(c, &repository, &listing))
            .await?)
    }

    async fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<flagstate_core::PushedManifest>>, StoreError> {
        let (repository, subject) = (repository.clone(), subject.clone());
        let artifact_type = artifact_type.map(str::to_owned);
        Ok(self
            .connections
            .read(move |c| {
                discovery::list_referrers(c, &repository, &subject, artifact_type.as_deref())
            })
            .await?)
    }

    async fn tag_history(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let (repository, tag) = (repository.clone(), tag.clone());
        Ok(self
            .connections
            .read(move |c| discovery::tag_history(c, &repository, &tag))
            .await?)
    }

    async fn prune_history(
        &self,
        retention: &HistoryRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let retention = *retention;
        let (dropped, generation) = self
            .connections
            .write(move |c| write::prune_history(c, &retention, now))
            .await?;
        self.generation.wrote(generation);
        Ok(dropped)
    }

    async fn changes_since(
        &self,
        after: ChangeCursor,
        filter: &ChangeFilter,
        limit: usize,
    ) -> Result<ChangePage, StoreError> {
        let filter = filter.clone();
        Ok(self
            .connections
            .read(move |c| changes::changes_since(c, after, &filter, limit))
            .await?)
    }

    async fn prune_changes(
        &self,
        retention: &ChangeRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let retention = *retention;
        Ok(self
            .connections
            .write(move |c| write::prune_changes(c, &retention, now))
            .await?)
    }

    async fn delivery_cursor(&self, endpoint: &str) -> Result<Option<ChangeCursor>, StoreError> {
        let endpoint = endpoint.to_owned();
        Ok(self
            .connections
            .read(move |c| changes::delivery_cursor(c, &endpoint))
            .await?)
    }

    async fn set_delivery_cursor(
        &self,
        endpoint: &str,
        cursor: ChangeCursor,
    ) -> Result<(), StoreError> {
        let endpoint = endpoint.to_owned();
        Ok(self
            .connections
            .write(move |c| changes::set_delivery_cursor(c, &endpoint, cursor))
            .await?)
    }

    async fn search(&self, text: &str, offset: u64, limit: u64) -> Result<SearchPage, StoreError> {
        let text = text.to_owned();
        Ok(self
            .connections
            .read(move |c| search::search(c, &text, offset, limit))
            .await?)
    }

    /// Known in-process (see [`SqliteOptions::generation_refresh`]): the database is read
    /// at most once per refresh interval, so a cached answer costs no database work.
    async fn generation(&self) -> Result<Generation, StoreError> {
        match self.generation.current() {
            Ok(known) => Ok(known),
            Err(refresh) => {
                let read = self.connections.read(write::generation).await?;
                Ok(refresh.done(read))
            }
        }
    }

    async fn registry_url(&self) -> Result<Option<String>, StoreError> {
        Ok(self.connections.read(write::registry_url).await?)
    }

    async fn set_registry_url(&self, url: &str) -> Result<Generation, StoreError> {
        let url = url.to_owned();
        Ok(self
            .connections
            .write(move |c| write::set_registry_url(c, &url))
            .await
            .map(|g| self.generation.wrote(g))?)
    }

    async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        Ok(self.connections.write(write::collect_garbage).await?)
    }

    async fn readiness(&self) -> Result<(), StoreNotReady> {
        self.connections
            .read(write::generation)
            .await
            .map_err(|e| StoreNotReady::Unreadable(e.into()))?;
        if !self.is_read_only() {
            self.connections
                .probe_write()
                .await
                .map_err(|e| StoreNotReady::NotWritable(e.into()))?;
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_ranked_search(true)
    }
}
