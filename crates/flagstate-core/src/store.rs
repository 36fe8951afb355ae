//! The [`Store`] trait: where the index lives, and the contract every backend keeps.
//!
//! Backends implement a small set of required methods; [`StoreExt`] adds conveniences
//! on top. Backends convert their private errors into the public [`StoreError`], naming
//! which store failed, so callers match on meaning rather than on backend.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

use crate::changes::{ChangeCursor, ChangeFilter, ChangePage, ChangeRetention};
use crate::digest::Digest;
use crate::discovery::{
    HistoryEntry, HistoryRetention, ManifestInfo, ManifestListing, RepositoryInfo,
    RepositoryListing, TagInfo, TagListing,
};
use crate::model::{Manifest, PushedManifest, RepositorySnapshot, TagChange};
use crate::name::{RepositoryName, Tag};
use crate::query::IndexQuery;
use crate::response::{IndexResponse, RepositoryEntry};
use crate::timestamp::Timestamp;

/// The entries of an index answer, in bytewise repository name order, as
/// [`Store::query_stream`] hands them over.
#[derive(Debug)]
pub struct EntryStream {
    source: EntrySource,
}

#[derive(Debug)]
enum EntrySource {
    Ready(std::vec::IntoIter<RepositoryEntry>),
    Channel(tokio::sync::mpsc::Receiver<Result<RepositoryEntry, StoreError>>),
}

/// The producing end of an [`EntryStream`], for backends that read entries on a task
/// or thread of their own. Sending waits while the consumer is `capacity` entries
/// behind, so a slow consumer slows the producer instead of growing a queue.
#[derive(Debug, Clone)]
pub struct EntrySender {
    channel: tokio::sync::mpsc::Sender<Result<RepositoryEntry, StoreError>>,
}

/// The consumer of an [`EntryStream`] went away; the producer should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the consumer of the index entries went away")]
pub struct ConsumerGone;

impl EntryStream {
    /// A stream of entries already at hand.
    pub fn from_entries(entries: Vec<RepositoryEntry>) -> Self {
        EntryStream {
            source: EntrySource::Ready(entries.into_iter()),
        }
    }

    /// A stream fed through the returned sender, holding at most `capacity` (at least
    /// one) entries in between. The stream ends when every sender is dropped; a producer
    /// reports a failure by sending an `Err`, which ends it too.
    pub fn channel(capacity: usize) -> (EntrySender, EntryStream) {
        let (channel, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        (
            EntrySender { channel },
            EntryStream {
                source: EntrySource::Channel(receiver),
            },
        )
    }

    /// The next entry, waiting for it; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<RepositoryEntry, StoreError>> {
        match &mut self.source {
            EntrySource::Ready(entries) => entries.next().map(Ok),
            EntrySource::Channel(receiver) => receiver.recv().await,
        }
    }

    /// The next entry from a blocking thread (never call this on an async task: it
    /// blocks the thread until the producer delivers).
    pub fn blocking_next(&mut self) -> Option<Result<RepositoryEntry, StoreError>> {
        match &mut self.source {
            EntrySource::Ready(entries) => entries.next().map(Ok),
            EntrySource::Channel(receiver) => receiver.blocking_recv(),
        }
    }

    /// Collects the remaining entries (stopping at the first error).
    pub async fn collect(mut self) -> Result<Vec<RepositoryEntry>, StoreError> {
        let mut entries = Vec::new();
        while let Some(entry) = self.next().await {
            entries.push(entry?);
        }
        Ok(entries)
    }
}

impl EntrySender {
    /// Hands over one entry (or the failure that ends the stream), waiting for room.
    pub async fn send(
        &self,
        entry: Result<RepositoryEntry, StoreError>,
    ) -> Result<(), ConsumerGone> {
        self.channel.send(entry).await.map_err(|_| ConsumerGone)
    }

    /// Like [`send`](Self::send), from a blocking thread.
    pub fn blocking_send(
        &self,
        entry: Result<RepositoryEntry, StoreError>,
    ) -> Result<(), ConsumerGone> {
        self.channel.blocking_send(entry).map_err(|_| ConsumerGone)
    }
}

/// A counter that changes on every visible mutation of a store; the basis for caching.
///
/// It only grows. A change that leaves what queries see unchanged (re-indexing identical
/// tags, inserting manifests no tag references, garbage collection) does not bump it.
pub type Generation = u64;

/// Errors any store may return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A tag or list entry references a manifest that is neither supplied nor stored.
    #[error(
        "repository {repository}: manifest {digest} is referenced but neither supplied nor stored"
    )]
    MissingManifest {
        /// Repository being written.
        repository: String,
        /// The unresolved digest.
        digest: Digest,
    },
    /// Input that violates the data model (a list entry that is not an image, an empty
    /// media type, …).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The store was opened read-only and a write was attempted.
    #[error("{store} store is read-only")]
    ReadOnly {
        /// Backend name.
        store: &'static str,
    },
    /// The database was written by a newer version of this software.
    #[error(
        "{store} store: database schema version {found} is newer than the supported {supported}; upgrade flagstate"
    )]
    SchemaTooNew {
        /// Backend name.
        store: &'static str,
        /// Version found in the database.
        found: i64,
        /// Newest version this build understands.
        supported: i64,
    },
    /// The backend cannot be reached right now (connection refused, pool closed, …).
    /// Retrying later may succeed.
    #[error("{store} store unavailable: {source}")]
    Unavailable {
        /// Backend name.
        store: &'static str,
        /// Underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other backend failure.
    #[error("{store} store error: {source}")]
    Backend {
        /// Backend name.
        store: &'static str,
        /// Underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a store cannot serve right now; the answer of [`Store::readiness`].
///
/// The two cases fail different requests: an unreadable store fails every query, a
/// store that reads but cannot write fails every event and scan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreNotReady {
    /// A read failed (database unreachable, file unreadable, …): queries would fail.
    #[error("store unreadable: {0}")]
    Unreadable(#[source] StoreError),
    /// Reads work, but this writer cannot start a write (read-only file or file system,
    /// another process holding the write lock, a server in recovery): events would fail.
    #[error("store not writable: {0}")]
    NotWritable(#[source] StoreError),
}

/// What garbage collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Manifests deleted because no tag references them (directly or as a list child).
    pub manifests_removed: u64,
}

/// One full-text search hit: a repository and how it describes itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// Repository name.
    pub repository: String,
    /// Title from the descriptive labels of its images, when any.
    pub title: Option<String>,
    /// Description from the descriptive labels of its images, when any.
    pub description: Option<String>,
    /// Relevance, higher is better; only comparable within one answer.
    pub score: f64,
}

/// A page of search results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchPage {
    /// Number of repositories matching in total.
    pub total: u64,
    /// The requested page, best first; ties broken by repository name (bytewise).
    pub hits: Vec<SearchHit>,
}

/// What a backend can do beyond the required contract; the conformance suite selects
/// tests by capability, never by backend name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Search ranks by a text-relevance model (BM25 or similar) rather than by simple
    /// term counting; exact rankings then differ between backends.
    pub ranked_search: bool,
}

impl Capabilities {
    /// Capabilities with every flag off.
    pub const NONE: Capabilities = Capabilities {
        ranked_search: false,
    };

    /// Sets `ranked_search`.
    pub const fn with_ranked_search(mut self, on: bool) -> Self {
        self.ranked_search = on;
        self
    }
}

/// Where the index lives. Implementations: [`MemoryStore`](crate::MemoryStore),
/// `flagstate_sqlite::SqliteStore`, `flagstate_pg::PgStore`.
///
/// Every method is atomic: it either takes full effect or none. Every write returns the
/// generation after the write.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Atomically sets the tags of `snapshot.name` to exactly `snapshot.tags` (creating the
    /// repository if needed) and stores `snapshot.manifests`.
    ///
    /// Every tag's digest and every list entry's digest must resolve to a manifest in
    /// `snapshot.manifests` or already stored, else [`StoreError::MissingManifest`] and no
    /// change. Stored manifests are immutable: a supplied manifest whose digest is already
    /// stored is ignored. The generation is bumped iff the repository's tag → digest map
    /// changed, a tag moved between image and artifact, or the repository is new; a tag
    /// whose digest is unchanged keeps its time and history, whichever map holds it.
    async fn replace_repository(
        &self,
        snapshot: &RepositorySnapshot,
    ) -> Result<Generation, StoreError>;

    /// Removes a repository and all its tags. Manifests stay until garbage collection.
    /// Removing an unknown repository is not an error and does not bump the generation.
    async fn remove_repository(&self, name: &RepositoryName) -> Result<Generation, StoreError>;

    /// Applies one incremental change. `Put` follows the same resolution rule as
    /// [`replace_repository`](Store::replace_repository) and creates the repository if
    /// needed; deleting something absent is a no-op. Bumps the generation iff a tag was
    /// added, moved or removed.
    async fn apply(&self, change: &TagChange) -> Result<Generation, StoreError>;

    /// Names of all known repositories (including ones whose tags were all deleted),
    /// sorted bytewise.
    async fn repositories(&self) -> Result<Vec<RepositoryName>, StoreError>;

    /// The tag → digest map of a repository's indexed tags (those pointing at images and
    /// image lists; artifact tags are not among them, see
    /// [`list_tags`](Store::list_tags)), or `None` if the repository is unknown.
    async fn repository_tags(
        &self,
        name: &RepositoryName,
    ) -> Result<Option<BTreeMap<Tag, Digest>>, StoreError>;

    /// Which of `digests` are stored as complete manifests (for a list: the list and all
    /// its entries). Used to avoid fetching immutable content twice.
    async fn known_manifests(&self, digests: &[Digest]) -> Result<BTreeSet<Digest>, StoreError>;

    /// One stored manifest by digest.
    async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>, StoreError>;

    /// Runs an index query. The result is normalised (sorted, deduplicated, repositories
    /// without matches dropped) and equal to what [`IndexQuery::evaluate_repository`]
    /// gives for each repository.
    async fn query(&self, query: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError>;

    /// Runs an index query like [`query`](Store::query) (the entries are the same, in the
    /// same order), handing them over one repository at a time instead of collected, all
    /// read from one consistent snapshot of the store. Backends that can produce entries
    /// incrementally do, so a consumer that writes each entry out as it comes builds an
    /// answer of any size in bounded memory; the default collects [`query`](Store::query).
    async fn query_stream(&self, query: &IndexQuery) -> Result<EntryStream, StoreError> {
        Ok(EntryStream::from_entries(self.query(query).await?))
    }

    /// One page of the repository listing (see [`discovery`](crate::discovery)): the
    /// known repositories in `listing.namespace`, in the listing's order, after its
    /// position, at most `listing.limit`; equal to [`RepositoryListing::select`] over all
    /// of them. A repository whose tags were all deleted is listed with 0 tags.
    async fn list_repositories(
        &self,
        listing: &RepositoryListing,
    ) -> Result<Vec<RepositoryInfo>, StoreError>;

    /// One page of a repository's tags — image tags and artifact tags alike — equal to
    /// [`TagListing::select`] over all of them; `None` when the repository is unknown.
    async fn list_tags(
        &self,
        repository: &RepositoryName,
        listing: &TagListing,
    ) -> Result<Option<Vec<TagInfo>>, StoreError>;

    /// One page of a repository's manifests, equal to [`ManifestListing::select`] over
    /// [`manifest_entries`](crate::discovery::manifest_entries) of its tags and the
    /// manifests pushed to it by digest ([`TagChange::PutUntagged`]); `None` when the
    /// repository is unknown.
    async fn list_manifests(
        &self,
        repository: &RepositoryName,
        listing: &ManifestListing,
    ) -> Result<Option<Vec<ManifestInfo>>, StoreError>;

    /// The referrers of `subject` in `repository` (OCI 1.1): the manifests pushed to it by
    /// digest whose `subject` is `subject`, tagged since or not, with `artifact_type` when
    /// given, by digest. `None` when the repository is unknown; an empty list when nothing
    /// refers to `subject`.
    async fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<PushedManifest>>, StoreError>;

    /// Every digest `tag` has pointed at while this index kept it, oldest first, each
    /// with the time it started (a tag deleted and pushed again starts a new entry); the
    /// last entry is the current digest while the tag exists. History outlives a deleted
    /// tag and goes with its repository. `None` when the repository is unknown; an empty
    /// list when the tag has no history.
    async fn tag_history(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError>;

    /// Drops the history entries `retention` does not keep at `now`
    /// ([`HistoryRetention::keep`] per tag) and returns how many. Bumps the generation
    /// iff it dropped any (history answers change; index answers never do).
    async fn prune_history(
        &self,
        retention: &HistoryRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// The change log after `after` (see [`changes`](crate::changes)): the records
    /// `filter` admits, in order, at most `limit`, equal to [`read_log`](crate::changes::read_log)
    /// over every record kept. Every write that bumps the generation because tags or
    /// repositories changed records those changes, in the same transaction: the
    /// repository's creation first, then one record per tag created, moved or removed
    /// (in tag order); removing a repository records `repository.deleted` alone.
    async fn changes_since(
        &self,
        after: ChangeCursor,
        filter: &ChangeFilter,
        limit: usize,
    ) -> Result<ChangePage, StoreError>;

    /// Drops the records `retention` does not keep at `now` (the oldest first, so the
    /// log stays contiguous) and moves [`ChangePage::oldest`] past them; returns how many.
    /// Never bumps the generation (no index answer changes).
    async fn prune_changes(
        &self,
        retention: &ChangeRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Where the change log's deliveries to `endpoint` (a webhook endpoint's configured
    /// name) stand: the cursor up to which it acknowledged every record, as last stored
    /// with [`set_delivery_cursor`](Store::set_delivery_cursor); `None` for an endpoint
    /// never stored. Kept with the index so a restarted writer resumes where it stopped.
    async fn delivery_cursor(&self, endpoint: &str) -> Result<Option<ChangeCursor>, StoreError>;

    /// Stores `cursor` as where deliveries to `endpoint` stand (replacing what was
    /// stored; it need not grow). Durable when it returns. Never bumps the generation:
    /// delivery state is not part of the index.
    async fn set_delivery_cursor(
        &self,
        endpoint: &str,
        cursor: ChangeCursor,
    ) -> Result<(), StoreError>;

    /// Full-text search over repository names and the descriptive labels/annotations of
    /// their tagged images (see [`Description`](crate::model::Description)). Terms are
    /// matched case-insensitively; every term must match (as a word prefix) for a
    /// repository to be a hit. Empty text matches nothing.
    async fn search(&self, text: &str, offset: u64, limit: u64) -> Result<SearchPage, StoreError>;

    /// The current generation.
    async fn generation(&self) -> Result<Generation, StoreError>;

    /// The public registry URL stored with the index (the `Registry` its answers name),
    /// as the writer last set it with [`set_registry_url`](Store::set_registry_url);
    /// `None` when none was ever stored.
    async fn registry_url(&self) -> Result<Option<String>, StoreError>;

    /// Stores `url` as the index's public registry URL, so every process serving this
    /// index (a writer and its read-only replicas) names the same `Registry`. Answers
    /// name it, so the generation is bumped iff the stored value changes.
    async fn set_registry_url(&self, url: &str) -> Result<Generation, StoreError>;

    /// Deletes manifests that no tag references, directly or as a child of a referenced
    /// list. Never changes query results, so never bumps the generation.
    async fn collect_garbage(&self) -> Result<GcStats, StoreError>;

    /// Whether the store can serve right now: it answers a read and, unless it was opened
    /// read-only, a write transaction can start (the write lock can be had, with a short
    /// wait). Changes nothing. Cheap enough for a readiness probe every few seconds; it
    /// does not verify the integrity of the stored data.
    async fn readiness(&self) -> Result<(), StoreNotReady>;

    /// What this backend can do beyond the required contract.
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }
}

/// Conveniences over any [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// Runs a query and wraps it in a response naming `registry`.
    async fn index(&self, registry: &str, query: &IndexQuery) -> Result<IndexResponse, StoreError> {
        Ok(IndexResponse::new(registry, self.query(query).await?))
    }

    /// The `Registry` of this index's answers: the URL stored with the index
    /// ([`Store::registry_url`]), else `fallback` (an index whose writer stored none).
    async fn public_registry(&self, fallback: &str) -> Result<String, StoreError> {
        Ok(self
            .registry_url()
            .await?
            .unwrap_or_else(|| fallback.to_owned()))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn replace_repository(
        &self,
        snapshot: &RepositorySnapshot,
    ) -> Result<Generation, StoreError> {
        (**self).replace_repository(snapshot).await
    }
    async fn remove_repository(&self, name: &RepositoryName) -> Result<Generation, StoreError> {
        (**self).remove_repository(name).await
    }
    async fn apply(&self, change: &TagChange) -> Result<Generation, StoreError> {
        (**self).apply(change).await
    }
    async fn repositories(&self) -> Result<Vec<RepositoryName>, StoreError> {
        (**self).repositories().await
    }
    async fn repository_tags(
        &self,
        name: &RepositoryName,
    ) -> Result<Option<BTreeMap<Tag, Digest>>, StoreError> {
        (**self).repository_tags(name).await
    }
    async fn known_manifests(&self, digests: &[Digest]) -> Result<BTreeSet<Digest>, StoreError> {
        (**self).known_manifests(digests).await
    }
    async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>, StoreError> {
        (**self).manifest(digest).await
    }
    async fn query(&self, query: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError> {
        (**self).query(query).await
    }

    async fn query_stream(&self, query: &IndexQuery) -> Result<EntryStream, StoreError> {
        (**self).query_stream(query).await
    }
    async fn list_repositories(
        &self,
        listing: &RepositoryListing,
    ) -> Result<Vec<RepositoryInfo>, StoreError> {
        (**self).list_repositories(listing).await
    }
    async fn list_tags(
        &self,
        repository: &RepositoryName,
        listing: &TagListing,
    ) -> Result<Option<Vec<TagInfo>>, StoreError> {
        (**self).list_tags(repository, listing).await
    }
    async fn list_manifests(
        &self,
        repository: &RepositoryName,
        listing: &ManifestListing,
    ) -> Result<Option<Vec<ManifestInfo>>, StoreError> {
        (**self).list_manifests(repository, listing).await
    }
    async fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<PushedManifest>>, StoreError> {
        (**self)
            .list_referrers(repository, subject, artifact_type)
            .await
    }
    async fn tag_history(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        (**self).tag_history(repository, tag).await
    }
    async fn prune_history(
        &self,
        retention: &HistoryRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        (**self).prune_history(retention, now).await
    }
    async fn changes_since(
        &self,
        after: ChangeCursor,
        filter: &ChangeFilter,
        limit: usize,
    ) -> Result<ChangePage, StoreError> {
        (**self).changes_since(after, filter, limit).await
    }
    async fn prune_changes(
        &self,
        retention: &ChangeRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        (**self).prune_changes(retention, now).await
    }
    async fn delivery_cursor(&self, endpoint: &str) -> Result<Option<ChangeCursor>, StoreError> {
        (**self).delivery_cursor(endpoint).await
    }
    async fn set_delivery_cursor(
        &self,
        endpoint: &str,
        cursor: ChangeCursor,
    ) -> Result<(), StoreError> {
        (**self).set_delivery_cursor(endpoint, cursor).await
    }
    async fn search(&self, text: &str, offset: u64, limit: u64) -> Result<SearchPage, StoreError> {
        (**self).search(text, offset, limit).await
    }
    async fn generation(&self) -> Result<Generation, StoreError> {
        (**self).generation().await
    }
    async fn registry_url(&self) -> Result<Option<String>, StoreError> {
        (**self).registry_url().await
    }
    async fn set_registry_url(&self, url: &str) -> Result<Generation, StoreError> {
        (**self).set_registry_url(url).await
    }
    async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        (**self).collect_garbage().await
    }
    async fn readiness(&self) -> Result<(), StoreNotReady> {
        (**self).readiness().await
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
}
