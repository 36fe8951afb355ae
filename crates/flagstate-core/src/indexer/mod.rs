//! The indexer: keeps a [`Store`] in step with one registry.
//!
//! - [`Indexer::full_scan`]: catalog → tags → read each tag → fetch only digests the
//!   store does not know → `replace_repository`; repositories gone from a complete
//!   catalog are removed. A repository new to the store has its tags read with `GET`
//!   (the bodies are needed anyway); a known tag is checked against its stored digest
//!   with [`RegistryClient::check_manifest`](crate::registry::RegistryClient::check_manifest)
//!   (a conditional `GET` answered `304`, or `HEAD` on registries that ignore the
//!   condition); a tag new to a known repository is read with `HEAD`. A re-scan of an
//!   unchanged registry costs one `tags/list` per repository and one bodiless answer
//!   per tag.
//! - [`Indexer::apply_events`]: applies registry notifications durably, then schedules a
//!   debounced reconcile (re-scan) of each touched repository.
//! - [`Indexer::spawn`]: the background work — first full scan at once, periodic full
//!   scans, periodic garbage collection, and the reconcile worker.
//!
//! **One index = one registry.** The index format names a single `Registry` URL that
//! clients resolve every manifest against, so an index spanning registries could not
//! tell a client where an image lives. Serve several registries with several indexes.
//!
//! Concurrency is bounded by streams (`buffer_unordered`) over the work list, never by a
//! bounded queue filled by its own consumer, so scans of any number of repositories
//! cannot deadlock; the registry client bounds the requests in flight globally.

mod apply;
mod fetch;
mod referrers;
mod scan;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::changes::ChangeRetention;
use crate::digest::Digest;
use crate::discovery::HistoryRetention;
use crate::model::PushedManifest;
use crate::name::{NameError, RepositoryName, Tag};
use crate::registry::{RegistryClient, RegistryError};
use crate::store::{Store, StoreError};
use crate::sync::lock;

pub use worker::ReconcileQueueStats;

/// How the indexer works. Build it from [`Default`] with the `with_*` methods (or by
/// assigning fields); new fields may be added without a major release.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexerConfig {
    /// Repositories scanned at once (and manifests fetched at once per repository).
    /// The registry client's own limit bounds the requests in flight overall.
    pub concurrency: usize,
    /// Time between periodic full scans; `None` scans only once, at start. A scan that
    /// fails outright (the repositories cannot be listed) is retried within 30 s.
    pub full_scan_interval: Option<Duration>,
    /// Time between garbage collections; `None` never collects. Each collection also
    /// prunes tag history to [`history_retention`](Self::history_retention).
    pub gc_interval: Option<Duration>,
    /// How much tag history the store keeps, applied at every garbage collection.
    pub history_retention: HistoryRetention,
    /// How much of the change log the store keeps, applied at every garbage collection.
    pub change_retention: ChangeRetention,
    /// Delay between an event and the re-scan of its repository; further events for the
    /// repository within the delay are folded into the same re-scan.
    pub reconcile_debounce: Duration,
    /// Most repositories waiting for a re-scan. Requests beyond it are dropped and
    /// counted ([`IndexerStatus::reconciles_dropped`]); the next periodic full scan covers
    /// those repositories. Bounds the registry requests a flood of notifications can cause.
    pub max_pending_reconciles: usize,
    /// How often a running full scan logs its progress (`full scan progress`, with the
    /// repositories done and their total); its start and end are always logged.
    pub progress_log_interval: Duration,
}

/// The default of [`IndexerConfig::progress_log_interval`].
pub const DEFAULT_PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Default for IndexerConfig {
    /// 8 repositories at once, a full scan every hour, garbage collection every 30
    /// minutes (the binary's `interval.*` defaults), a 2 s reconcile debounce and at most
    /// 1000 repositories waiting for a re-scan.
    fn default() -> Self {
        IndexerConfig {
            concurrency: 8,
            full_scan_interval: Some(Duration::from_secs(60 * 60)),
            gc_interval: Some(Duration::from_secs(30 * 60)),
            history_retention: HistoryRetention::default(),
            change_retention: ChangeRetention::default(),
            reconcile_debounce: Duration::from_secs(2),
            max_pending_reconciles: 1000,
            progress_log_interval: DEFAULT_PROGRESS_LOG_INTERVAL,
        }
    }
}

impl IndexerConfig {
    /// Sets [`concurrency`](Self::concurrency).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`full_scan_interval`](Self::full_scan_interval).
    #[must_use]
    pub fn with_full_scan_interval(mut self, interval: Option<Duration>) -> Self {
        self.full_scan_interval = interval;
        self
    }

    /// Sets [`gc_interval`](Self::gc_interval).
    #[must_use]
    pub fn with_gc_interval(mut self, interval: Option<Duration>) -> Self {
        self.gc_interval = interval;
        self
    }

    /// Sets [`history_retention`](Self::history_retention).
    #[must_use]
    pub fn with_history_retention(mut self, retention: HistoryRetention) -> Self {
        self.history_retention = retention;
        self
    }

    /// Sets [`change_retention`](Self::change_retention).
    #[must_use]
    pub fn with_change_retention(mut self, retention: ChangeRetention) -> Self {
        self.change_retention = retention;
        self
    }

    /// Sets [`reconcile_debounce`](Self::reconcile_debounce).
    #[must_use]
    pub fn with_reconcile_debounce(mut self, debounce: Duration) -> Self {
        self.reconcile_debounce = debounce;
        self
    }

    /// Sets [`max_pending_reconciles`](Self::max_pending_reconciles).
    #[must_use]
    pub fn with_max_pending_reconciles(mut self, max: usize) -> Self {
        self.max_pending_reconciles = max;
        self
    }

    /// Sets [`progress_log_interval`](Self::progress_log_interval).
    #[must_use]
    pub fn with_progress_log_interval(mut self, interval: Duration) -> Self {
        self.progress_log_interval = interval;
        self
    }
}

/// Why indexing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexerError {
    /// A registry request failed.
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The catalog cannot be listed and no repositories are configured.
    #[error("cannot list the registry's repositories ({0}) and none are configured")]
    NoRepositories(RegistryError),
    /// Indexing one repository failed.
    #[error("repository {repository}: {source}")]
    Repository {
        /// Repository name.
        repository: String,
        /// What failed.
        source: Box<IndexerError>,
    },
    /// A repository new to the store has no tag whose manifest the registry serves
    /// usably; nothing of it was written.
    #[error("tag {tag}: {error}")]
    UnreadableTag {
        /// The first such tag.
        tag: Tag,
        /// Why its manifest is unusable.
        error: String,
    },
    /// Applying one event failed; events before it were applied.
    #[error("event #{index} ({id}) for repository {repository}: {source}")]
    Event {
        /// Position of the event in the batch.
        index: usize,
        /// The event's id.
        id: String,
        /// Repository it concerns.
        repository: String,
        /// What failed.
        source: Box<IndexerError>,
    },
}

impl IndexerError {
    /// Whether retrying the same work can never succeed: the registry answered, and its
    /// answer is unusable (see [`EventsOutcome::failed`]). Network trouble, 5xx, 429,
    /// authentication and store failures are not permanent.
    pub fn is_permanent(&self) -> bool {
        match self {
            IndexerError::Registry(e) => e.is_permanent(),
            IndexerError::UnreadableTag { .. } => true,
            IndexerError::Repository { source, .. } | IndexerError::Event { source, .. } => {
                source.is_permanent()
            }
            _ => false,
        }
    }
}

/// Receives progress of a full scan (for progress bars and logs).
pub trait ScanProgress: Send + Sync {
    /// The number of repositories the scan will visit, once known.
    fn total_repositories(&self, n: u64);
    /// One repository is done (indexed or failed), with the manifest bodies fetched.
    fn repository_done(&self, name: &str, manifests_fetched: u64);
}

/// A [`ScanProgress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ScanProgress for NoProgress {
    fn total_repositories(&self, _n: u64) {}
    fn repository_done(&self, _name: &str, _manifests_fetched: u64) {}
}

/// One repository a full scan could not index (completely).
#[derive(Debug, PartialEq)]
pub struct RepositoryFailure {
    /// The name as listed by the catalog or the configuration; it may be invalid
    /// ([`RepositoryError::InvalidName`]).
    pub repository: String,
    /// What failed.
    pub error: RepositoryError,
}

/// `repository: error`, the way reports and logs name a failure.
impl std::fmt::Display for RepositoryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.repository, self.error)
    }
}

/// Why a full scan could not index one repository (completely).
///
/// Errors compare equal when they are of the same kind and read the same: the
/// underlying registry and store errors are not comparable themselves.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// The catalog (or configuration) lists a name that is not a repository name.
    #[error("repository name {name:?} is invalid: {}", .source.problem())]
    InvalidName {
        /// The listed name.
        name: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// A registry request for the repository failed.
    #[error("repository {repository}: registry: {source}")]
    Registry {
        /// The repository.
        repository: RepositoryName,
        /// What failed.
        source: RegistryError,
    },
    /// The store failed while reading or writing the repository.
    #[error("repository {repository}: store: {source}")]
    Store {
        /// The repository.
        repository: RepositoryName,
        /// What failed.
        source: StoreError,
    },
    /// A repository new to the store has no tag whose manifest the registry serves
    /// usably; nothing of it was written.
    #[error("repository {repository}: tag {tag}: {error}")]
    UnreadableTag {
        /// The repository.
        repository: RepositoryName,
        /// The first such tag.
        tag: Tag,
        /// Why its manifest is unusable.
        error: String,
    },
    /// Some tags' manifests are unusable; the other tags were indexed
    /// (see [`RepositoryOutcome::unreadable`]).
    #[error("other tags indexed; {}", tags_unreadable(.tags))]
    TagsUnreadable {
        /// The unusable tags, with why.
        tags: Vec<(Tag, String)>,
    },
    /// Any other failure of the repository's scan.
    #[error(transparent)]
    Other(IndexerError),
}

fn tags_unreadable(tags: &[(Tag, String)]) -> String {
    tags.iter()
        .map(|(tag, error)| format!("tag {tag}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl PartialEq for RepositoryError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl RepositoryError {
    /// The error of a failed [`Indexer::scan_repository`] of `repository`, by cause.
    fn from_scan(repository: &RepositoryName, error: IndexerError) -> Self {
        let repository = repository.clone();
        match error {
            IndexerError::Repository { source, .. } => match *source {
                IndexerError::Registry(source) => RepositoryError::Registry { repository, source },
                IndexerError::Store(source) => RepositoryError::Store { repository, source },
                IndexerError::UnreadableTag { tag, error } => RepositoryError::UnreadableTag {
                    repository,
                    tag,
                    error,
                },
                source => RepositoryError::Other(IndexerError::Repository {
                    repository: repository.into_string(),
                    source: Box::new(source),
                }),
            },
            other => RepositoryError::Other(other),
        }
    }
}

/// What a full scan did.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Repositories the scan set out to visit.
    pub repositories_total: u64,
    /// Repositories indexed successfully (including ones found gone and removed).
    pub repositories_scanned: u64,
    /// Repositories whose indexing failed, with the error. They were left as they were,
    /// except when only some tags' manifests were unusable
    /// ([`RepositoryOutcome::unreadable`]): then the other tags were indexed, and the
    /// repository is listed here as well, naming those tags
    /// ([`RepositoryError::TagsUnreadable`]).
    pub repositories_failed: Vec<RepositoryFailure>,
    /// Repositories removed from the store: gone from a complete catalog, or answering
    /// 404 to `tags/list`.
    pub repositories_removed: Vec<RepositoryName>,
    /// Manifest bodies fetched.
    pub manifests_fetched: u64,
    /// Blob bodies (image configs) fetched.
    pub blobs_fetched: u64,
    /// Tags listed over all repositories.
    pub tags_seen: u64,
    /// Whether the repository list came from a complete catalog (only then are
    /// vanished repositories removed); `false` when configured repositories were used.
    pub catalog_complete: bool,
    /// Wall-clock time of the scan.
    pub duration: Duration,
}

impl ScanReport {
    /// Whether every repository was indexed.
    pub fn is_complete(&self) -> bool {
        self.repositories_failed.is_empty()
    }
}

/// What indexing one repository did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryOutcome {
    /// Repository name.
    pub repository: RepositoryName,
    /// Tags listed by the registry.
    pub tags_seen: u64,
    /// Tags written to the store.
    pub tags_indexed: u64,
    /// Tags or list entries left out: non-image artifacts, nested lists, manifests
    /// that vanished while being read.
    pub skipped: u64,
    /// Manifest bodies fetched.
    pub manifests_fetched: u64,
    /// Blob bodies fetched.
    pub blobs_fetched: u64,
    /// The registry no longer has the repository, so it was removed from the store.
    pub removed: bool,
    /// An event changed the repository while it was being read; the (stale) result was
    /// not written and another re-scan was scheduled.
    pub superseded: bool,
    /// Tags whose manifest the registry cannot serve usably (content not matching its
    /// digest, over the size limit, an invalid answer: see
    /// [`IndexerError::is_permanent`]), with the error. Each keeps the digest the store
    /// had for it, or is left out if it had none; the other tags are indexed. A
    /// repository new to the store whose every tag is unreadable fails instead.
    pub unreadable: Vec<(Tag, String)>,
}

impl RepositoryOutcome {
    /// An outcome of `repository` that did nothing yet.
    fn new(repository: RepositoryName) -> Self {
        RepositoryOutcome {
            repository,
            tags_seen: 0,
            tags_indexed: 0,
            skipped: 0,
            manifests_fetched: 0,
            blobs_fetched: 0,
            removed: false,
            superseded: false,
            unreadable: Vec::new(),
        }
    }
}

/// What [`Indexer::apply_events`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsOutcome {
    /// Events turned into store changes.
    pub applied: u64,
    /// Events that change nothing visible (pulls, mounts, blobs, pushes by digest,
    /// artifacts).
    pub ignored: u64,
    /// Events that can never be applied because the registry's answer is unusable
    /// however often it is asked (content not matching its digest, a manifest over the
    /// size limit, an invalid answer, a 4xx other than 429). They are logged and left
    /// to the re-scan of their repository, which reports the failure; refusing the
    /// delivery instead would make the registry retry it forever and hold back every
    /// later notification.
    pub failed: u64,
    /// Repositories scheduled for a debounced re-scan, sorted.
    pub reconcile_scheduled: Vec<RepositoryName>,
}

/// A cheap snapshot of what the indexer is doing, for readiness checks and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexerStatus {
    /// A full scan has completed at least once (with or without failed repositories).
    pub first_scan_done: bool,
    /// A full scan is running.
    pub scanning: bool,
    /// Repositories done in the current (or last) full scan.
    pub repositories_done: u64,
    /// Repositories to visit in the current (or last) full scan.
    pub repositories_total: u64,
    /// Full scans completed since start.
    pub full_scans: u64,
    /// Manifest bodies fetched since start.
    pub manifests_fetched: u64,
    /// Blob bodies fetched since start.
    pub blobs_fetched: u64,
    /// Events applied since start.
    pub events_applied: u64,
    /// Events ignored since start.
    pub events_ignored: u64,
    /// Events whose application failed since start.
    pub events_failed: u64,
    /// Repository re-scans done since start.
    pub reconciles: u64,
    /// Repository re-scans that failed since start.
    pub reconciles_failed: u64,
    /// Repositories waiting for a re-scan.
    pub reconciles_pending: u64,
    /// Re-scan requests dropped since start because the queue was full.
    pub reconciles_dropped: u64,
    /// Manifests removed by garbage collection since start.
    pub gc_manifests_removed: u64,
    /// Why the last full scan failed or was incomplete; `None` after a clean scan.
    pub last_scan_error: Option<String>,
    /// Duration of the last completed full scan.
    pub last_scan_duration: Option<Duration>,
    /// When the last full scan completed (wall clock): what the index holds is the
    /// registry as of then, except for the repositories that scan reported as failed.
    pub last_scan_finished_at: Option<SystemTime>,
}

#[derive(Default)]
struct StatusCells {
    first_scan_done: AtomicBool,
    scanning: AtomicBool,
    repositories_done: AtomicU64,
    repositories_total: AtomicU64,
    full_scans: AtomicU64,
    manifests_fetched: AtomicU64,
    blobs_fetched: AtomicU64,
    events_applied: AtomicU64,
    events_ignored: AtomicU64,
    events_failed: AtomicU64,
    reconciles: AtomicU64,
    reconciles_failed: AtomicU64,
    reconciles_running: AtomicU64,
    gc_manifests_removed: AtomicU64,
    last_scan_error: Mutex<Option<String>>,
    last_scan_duration: Mutex<Option<Duration>>,
    last_scan_finished_at: Mutex<Option<SystemTime>>,
}

/// Adds `key` (with `value`) to one of the indexer's memories of immutable facts,
/// emptied once it holds `max` (forgetting costs a refetch, never a wrong answer).
fn remember<K: std::hash::Hash + Eq, V>(
    memory: &Mutex<HashMap<K, V>>,
    key: K,
    value: V,
    max: usize,
) {
    let mut memory = lock(memory);
    if memory.len() >= max {
        memory.clear();
    }
    memory.insert(key, value);
}

/// Stripes of the per-repository write lock (see [`Indexer::write_guard`]).
const LOCK_STRIPES: usize = 64;
/// Entries of the cache of digests known not to be indexable, before it is reset.
const MAX_UNSUPPORTED_CACHE: usize = 100_000;
/// Entries of the cache of artifacts read, before it is reset: fewer than
/// [`MAX_UNSUPPORTED_CACHE`], since each holds the artifact's annotations.
const MAX_ARTIFACT_CACHE: usize = 10_000;

/// Keeps a store in step with one registry. See the module docs.
pub struct Indexer {
    client: RegistryClient,
    store: Arc<dyn Store>,
    cfg: IndexerConfig,
    status: StatusCells,
    /// Digests whose content is not indexable (artifacts, unreadable manifests). Digests
    /// are immutable, so remembering this saves refetching them on every scan.
    unsupported: Mutex<HashMap<Digest, ()>>,
    /// Artifacts read (manifests that are neither images nor image lists), with what
    /// their bytes state, so a tag pointing at one is kept without reading it again.
    artifacts: Mutex<HashMap<Digest, PushedManifest>>,
    /// Referrer tags' manifests (repository, digest) whose referrers are recorded
    /// already (see the `referrers` module).
    referrer_tags_read: Mutex<HashMap<(RepositoryName, Digest), ()>>,
    /// Manifests read for pushes by digest, for the list that follows (see
    /// `fetch::RecentManifests`).
    recent: Mutex<fetch::RecentManifests>,
    /// Serialises "check for newer events, then write" of a scan against event
    /// application for the same repository.
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Sequence number of the last event applied per repository, against
    /// `event_seq`, so a scan can tell its listing was overtaken by an event.
    event_marks: Mutex<HashMap<RepositoryName, u64>>,
    event_seq: AtomicU64,
    /// One full scan at a time.
    scan_lock: tokio::sync::Mutex<()>,
    queue: worker::ReconcileQueue,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer")
            .field("registry", &self.client.base_url().as_str())
            .field("store", &self.store)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Indexer {
    /// An indexer writing what `client` reads into `store`.
    pub fn new(client: RegistryClient, store: Arc<dyn Store>, cfg: IndexerConfig) -> Self {
        let cfg = IndexerConfig {
            concurrency: cfg.concurrency.max(1),
            ..cfg
        };
        Indexer {
            client,
            store,
            status: StatusCells::default(),
            unsupported: Mutex::new(HashMap::new()),
            artifacts: Mutex::new(HashMap::new()),
            referrer_tags_read: Mutex::new(HashMap::new()),
            recent: Mutex::new(fetch::RecentManifests::new()),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            event_marks: Mutex::new(HashMap::new()),
            event_seq: AtomicU64::new(0),
            scan_lock: tokio::sync::Mutex::new(()),
            queue: worker::ReconcileQueue::new(cfg.reconcile_debounce, cfg.max_pending_reconciles),
            cfg,
        }
    }

    /// The store being written.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The registry client (its [`stats`](RegistryClient::stats) count requests).
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// The configuration in force.
    pub fn config(&self) -> &IndexerConfig {
        &self.cfg
    }

    /// A snapshot of the indexer's state; cheap enough for every `/metrics` request.
    pub fn status(&self) -> IndexerStatus {
        let s = &self.status;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IndexerStatus {
            first_scan_done: s.first_scan_done.load(Ordering::Relaxed),
            scanning: s.scanning.load(Ordering::Relaxed),
            repositories_done: get(&s.repositories_done),
            repositories_total: get(&s.repositories_total),
            full_scans: get(&s.full_scans),
            manifests_fetched: get(&s.manifests_fetched),
            blobs_fetched: get(&s.blobs_fetched),
            events_applied: get(&s.events_applied),
            events_ignored: get(&s.events_ignored),
            events_failed: get(&s.events_failed),
            reconciles: get(&s.reconciles),
            reconciles_failed: get(&s.reconciles_failed),
            reconciles_pending: self.queue.pending_len() as u64,
            reconciles_dropped: self.queue.dropped(),
            gc_manifests_removed: get(&s.gc_manifests_removed),
            last_scan_error: lock(&s.last_scan_error).clone(),
            last_scan_duration: *lock(&s.last_scan_duration),
            last_scan_finished_at: *lock(&s.last_scan_finished_at),
        }
    }

    /// The write lock stripe of a repository.
    async fn write_guard(&self, repository: &RepositoryName) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        repository.hash(&mut h);
        self.locks[(h.finish() as usize) % LOCK_STRIPES]
            .lock()
            .await
    }

    /// The current event sequence number; a scan remembers it before listing.
    fn event_seq(&self) -> u64 {
        self.event_seq.load(Ordering::SeqCst)
    }

    /// Whether an event touched `repository` after sequence number `since`.
    fn touched_since(&self, repository: &RepositoryName, since: u64) -> bool {
        lock(&self.event_marks)
            .get(repository)
            .is_some_and(|mark| *mark > since)
    }

    /// Records that an event is being applied to `repository` (call under its write lock).
    fn mark_event(&self, repository: &RepositoryName) {
        let seq = self.event_seq.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.event_marks).insert(repository.clone(), seq);
    }

    fn is_unsupported(&self, digest: &Digest) -> bool {
        lock(&self.unsupported).contains_key(digest)
    }

    fn remember_unsupported(&self, digest: Digest) {
        remember(&self.unsupported, digest, (), MAX_UNSUPPORTED_CACHE);
    }

    /// An artifact read before, as it was described then.
    fn known_artifact(&self, digest: &Digest) -> Option<PushedManifest> {
        lock(&self.artifacts).get(digest).cloned()
    }

    fn remember_artifact(&self, artifact: PushedManifest) {
        remember(
            &self.artifacts,
            artifact.digest.clone(),
            artifact,
            MAX_ARTIFACT_CACHE,
        );
    }
}
