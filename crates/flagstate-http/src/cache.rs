//! The index response cache: serialised (and lazily compressed) answers per canonical
//! query, valid for one store generation.
//!
//! Every request reads the store's generation (cheap by contract). A newer generation
//! empties the cache; an entry is only served for the generation it was built at, so a
//! change is never hidden. Concurrent requests for the same missing entry wait for one
//! build instead of each querying the store (a burst of clients after a change would
//! otherwise all hit the store at once), and distinct misses are built a few at a time
//! ([`IndexCache::with_build_limit`]), so a burst of different expensive queries cannot
//! hold many whole answers in memory at once. The cache is bounded by entry count (LRU)
//! and by bytes.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flagstate_core::query::CostBudget;
use flagstate_core::sync::lock;
use flagstate_core::{Generation, IndexQuery};
use lru::LruCache;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::body::{Body, SpoolDir};
use crate::conditional::Validators;
use crate::conditional::names_body;
use crate::detached::Detached;
use crate::encoding::{Coding, compress, compress_into, negotiate};
use crate::error::HttpError;

/// One cached answer: the JSON body, its hash, and its compressed variants.
#[derive(Debug)]
pub struct CachedBody {
    generation: Generation,
    identity: Body,
    hash: String,
    /// ETag header values per coding (identity, gzip, zstd, br), built once.
    etags: [HeaderValue; 4],
    /// Where compressed variants of a file-backed body are spooled.
    spool: Option<Arc<SpoolDir>>,
    gzip: Arc<Detached<Body>>,
    zstd: Arc<Detached<Body>>,
    brotli: Arc<Detached<Body>>,
}

impl CachedBody {
    /// Wraps a serialised body built at `generation`.
    pub fn new(generation: Generation, identity: Bytes) -> Self {
        let hash = hex::encode(Sha256::digest(&identity));
        Self::spooled(generation, Body::Memory(identity), hash, None)
    }

    /// Wraps a body written through a [`Spool`](crate::body::Spool) (which hashed it);
    /// compressed variants of it are spooled through `spool` as well.
    pub fn spooled(
        generation: Generation,
        identity: Body,
        hash: String,
        spool: Option<Arc<SpoolDir>>,
    ) -> Self {
        let etag = |coding: Coding| {
            // A hex digest and a fixed suffix are always a valid header value.
            HeaderValue::from_str(&format!("\"{hash}{}\"", coding.etag_suffix()))
                .unwrap_or(HeaderValue::from_static("\"\""))
        };
        let etags = [
            etag(Coding::Identity),
            etag(Coding::Gzip),
            etag(Coding::Zstd),
            etag(Coding::Brotli),
        ];
        CachedBody {
            generation,
            identity,
            hash,
            etags,
            spool,
            gzip: Arc::default(),
            zstd: Arc::default(),
            brotli: Arc::default(),
        }
    }

    /// The store generation the body was built at.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Hex SHA-256 of the uncompressed body; the ETag's base.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The strong ETag of the representation in `coding` (quoted).
    pub fn etag(&self, coding: Coding) -> &HeaderValue {
        let i = match coding {
            Coding::Identity => 0,
            Coding::Gzip => 1,
            Coding::Zstd => 2,
            Coding::Brotli => 3,
        };
        &self.etags[i]
    }

    /// The uncompressed JSON body.
    pub fn identity(&self) -> &Body {
        &self.identity
    }

    /// The body in `coding`, compressing it (off the async threads) on first use. A
    /// body in memory is compressed in memory; a file-backed one is compressed a piece
    /// at a time into the spool (a file again unless the result is small). The
    /// compression finishes even when the request that started it ends first
    /// ([`Detached`]), so a variant that takes longer than a request may wait is still
    /// made once.
    pub async fn encoded(&self, coding: Coding) -> Result<Body, HttpError> {
        let cell = match coding {
            Coding::Identity => return Ok(self.identity.clone()),
            Coding::Gzip => &self.gzip,
            Coding::Zstd => &self.zstd,
            Coding::Brotli => &self.brotli,
        };
        if let Some(body) = cell.get() {
            return Ok(body);
        }
        let body = self.identity.clone();
        let spool = self.spool.clone();
        let name = format!("{}.json{}", self.hash, coding.etag_suffix());
        let compress_body = move |()| async move {
            tokio::task::spawn_blocking(move || -> std::io::Result<Body> {
                if let Some(bytes) = body.as_bytes() {
                    return compress(coding, bytes).map(|b| Body::Memory(b.into()));
                }
                match spool {
                    Some(spool) => compress_into(coding, body.reader(), spool.spool())?
                        .finish(|_| name)
                        .map(|(body, _)| body),
                    None => compress_into(coding, body.reader(), Vec::new())
                        .map(|b| Body::Memory(b.into())),
                }
            })
            .await
            .map_err(|e| HttpError::Internal(format!("compression task failed: {e}")))?
            .map_err(|e| HttpError::Internal(format!("compression failed: {e}")))
        };
        let (body, _) = cell
            .get_or_spawn(|| async { Ok::<_, HttpError>(()) }, compress_body)
            .await?;
        Ok(body)
    }

    /// Bytes the body and its variants hold in memory, and on disk (an estimate before
    /// the variants exist: twice the identity body, as if one variant were as large).
    fn charge(&self) -> (usize, usize) {
        let twice = usize::try_from(self.identity.len())
            .unwrap_or(usize::MAX)
            .saturating_mul(2);
        match self.identity {
            Body::Memory(_) => (twice, 0),
            Body::File(_) => (0, twice),
        }
    }

    /// The response to a `GET`/`HEAD` of this body: `304` when `If-None-Match` names it
    /// (in any coding), else `200` in the coding `request` accepts best, with its strong
    /// ETag, `Content-Type`, `Content-Length` (so `HEAD` tells it too), `cache_control`
    /// and `Vary: Accept-Encoding`. Index answers and UI pages are answered by this one
    /// function.
    pub async fn respond(
        &self,
        request: &HeaderMap,
        content_type: HeaderValue,
        cache_control: HeaderValue,
    ) -> Result<Response, HttpError> {
        let coding = negotiate(request);
        let validators = Validators::new(self.etag(coding).clone())
            .cache_control(cache_control)
            .vary(HeaderValue::from_static("Accept-Encoding"));
        if names_body(request, self.hash()) {
            return Ok(validators.not_modified());
        }
        let body = self.encoded(coding).await?;
        let length = body.len();
        let mut response = body.to_http().into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, content_type);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let Some(token) = coding.header_token() {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
        }
        Ok(validators.apply(response))
    }
}

/// A raw query string that parsed: its canonical key (the cache key) and the query.
///
/// The query is only handed out metered, each time with a fresh budget, so a remembered
/// query never carries the budget an earlier evaluation spent.
#[derive(Debug, Clone)]
pub struct ParsedQuery {
    key: Arc<str>,
    query: Arc<IndexQuery>,
}

impl ParsedQuery {
    /// Remembers `query` with its canonical form as the key.
    pub fn new(query: IndexQuery) -> Self {
        ParsedQuery {
            key: query.canonical().into(),
            query: Arc::new(query),
        }
    }

    /// The canonical key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A copy of the query with a fresh budget of `limit` units (see
    /// [`IndexQuery::metered`]), for one evaluation.
    pub fn metered(&self, limit: u64) -> (IndexQuery, CostBudget) {
        IndexQuery::clone(&self.query).metered(limit)
    }
}

/// One entry: its answer (being built, or built) and what it is charged.
type Cell = Arc<Detached<Arc<CachedBody>>>;

struct Slot {
    cell: Cell,
    /// Bytes charged to the memory budget once the body is built (0 before).
    bytes: usize,
    /// Bytes charged to the disk budget once the body is built (0 before).
    disk: usize,
}

/// A freshly built body for [`IndexCache::get_or_build`]: bytes (hashed here) or a
/// spooled body with its hash and the spool its variants go to.
#[derive(Debug)]
pub struct Built {
    identity: Body,
    hash: String,
    spool: Option<Arc<SpoolDir>>,
}

impl Built {
    /// A body written through a spool of `spool`, with the hash the spool computed.
    pub fn spooled(identity: Body, hash: String, spool: Arc<SpoolDir>) -> Self {
        Built {
            identity,
            hash,
            spool: Some(spool),
        }
    }

    fn into_cached(self, generation: Generation) -> CachedBody {
        CachedBody::spooled(generation, self.identity, self.hash, self.spool)
    }
}

impl From<Bytes> for Built {
    fn from(bytes: Bytes) -> Self {
        Built {
            hash: hex::encode(Sha256::digest(&bytes)),
            identity: Body::Memory(bytes),
            spool: None,
        }
    }
}

struct Inner {
    generation: Option<Generation>,
    max_bytes: usize,
    max_disk: usize,
    entries: LruCache<String, Slot>,
    bytes: usize,
    disk: usize,
    /// Raw query string → its parsed query and canonical key, as many as there are
    /// entries (LRU). Parsing is a pure function (of the string and the configured
    /// limits, fixed for the cache's life), so these stay valid across generations; a
    /// repeated query skips parsing and canonicalising, and its misses build from the
    /// remembered query.
    parsed: LruCache<String, ParsedQuery>,
}

/// The bounded cache of index answers. See the module docs.
pub struct IndexCache {
    /// Shared with the build tasks, which charge what they built.
    inner: Arc<Mutex<Inner>>,
    /// Permits for builds running at once; distinct misses beyond them wait.
    builds: Arc<Semaphore>,
    /// Longest time one build may take, however many requests wait for it.
    build_timeout: Duration,
}

/// How long one answer may take to build unless
/// [`with_build_timeout`](IndexCache::with_build_timeout) says otherwise: 10 minutes.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = lock(&self.inner);
        f.debug_struct("IndexCache")
            .field("generation", &inner.generation)
            .field("entries", &inner.entries.len())
            .field("bytes", &inner.bytes)
            .field("max_bytes", &inner.max_bytes)
            .field("disk", &inner.disk)
            .field("max_disk", &inner.max_disk)
            .finish()
    }
}

/// Whether an answer came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache (or from a build another request was already doing).
    Hit,
    /// Built by this request.
    Miss,
}

impl IndexCache {
    /// A cache of at most `max_entries` answers and about `max_bytes` bytes, building
    /// any number of distinct answers at once.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self::with_build_limit(max_entries, max_bytes, Semaphore::MAX_PERMITS)
    }

    /// Like [`new`](Self::new), building at most `max_builds` distinct answers at once
    /// (at least one): each build holds a whole answer in memory, so this bounds the
    /// memory and CPU that distinct uncached queries can take together.
    pub fn with_build_limit(max_entries: usize, max_bytes: usize, max_builds: usize) -> Self {
        let cap = NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN);
        IndexCache {
            inner: Arc::new(Mutex::new(Inner {
                generation: None,
                max_bytes,
                max_disk: usize::MAX,
                entries: LruCache::new(cap),
                bytes: 0,
                disk: 0,
                parsed: LruCache::new(cap),
            })),
            builds: Arc::new(Semaphore::new(max_builds.clamp(1, Semaphore::MAX_PERMITS))),
            build_timeout: DEFAULT_BUILD_TIMEOUT,
        }
    }

    /// Bounds the bytes of file-backed answers (and their variants) the cache keeps to
    /// about `max_disk`, evicting least recently used ones beyond it.
    pub fn with_disk_budget(self, max_disk: usize) -> Self {
        lock(&self.inner).max_disk = max_disk;
        self
    }

    /// Bounds the time one build may take ([`DEFAULT_BUILD_TIMEOUT`] unless set). A
    /// build runs in a task of its own, not in the request that started it: a request
    /// that reaches its deadline stops waiting, the build goes on, and the requests after
    /// it get the answer. This bound ends a build nobody can use any more (a store that
    /// hangs); it is answered `503` and nothing is cached.
    pub fn with_build_timeout(mut self, build_timeout: Duration) -> Self {
        self.build_timeout = build_timeout;
        self
    }

    /// Bytes of file-backed answers charged to the disk budget.
    pub fn disk_bytes(&self) -> usize {
        lock(&self.inner).disk
    }

    /// Number of cached answers.
    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a raw query string was last seen to parse to.
    pub fn parsed(&self, raw_query: &str) -> Option<ParsedQuery> {
        lock(&self.inner).parsed.get(raw_query).cloned()
    }

    /// Remembers what a raw query string that parsed successfully parsed to.
    pub fn remember_parsed(&self, raw_query: &str, parsed: ParsedQuery) {
        lock(&self.inner).parsed.put(raw_query.to_owned(), parsed);
    }

    /// Bytes charged to the budget.
    pub fn bytes(&self) -> usize {
        lock(&self.inner).bytes
    }

    /// The answer for `key` at `generation`, building it with `build` when missing.
    ///
    /// The build runs in a task of its own (see
    /// [`with_build_timeout`](Self::with_build_timeout)), after this request got one of
    /// the build permits; concurrent requests for the same key wait for that one build. A
    /// failed build caches nothing: its error goes to the request that started it, and
    /// each request that waited for it tries once itself. A request that observed an
    /// older generation than the cache holds (it raced a change) builds without caching.
    pub async fn get_or_build<F, Fut, B, E>(
        &self,
        key: &str,
        generation: Generation,
        build: F,
    ) -> Result<(Arc<CachedBody>, Lookup), E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<B, E>> + Send + 'static,
        B: Into<Built>,
        E: From<HttpError> + Send + 'static,
    {
        let cell = {
            let mut inner = lock(&self.inner);
            match inner.generation {
                Some(current) if generation < current => None,
                Some(current) if generation == current => Some(match inner.entries.get(key) {
                    Some(slot) => slot.cell.clone(),
                    None => insert_slot(&mut inner, key),
                }),
                _ => {
                    inner.entries.clear();
                    inner.bytes = 0;
                    inner.disk = 0;
                    inner.generation = Some(generation);
                    Some(insert_slot(&mut inner, key))
                }
            }
        };
        let Some(cell) = cell else {
            let _permit = self.build_permit().await?;
            let built: Built = build().await?.into();
            return Ok((Arc::new(built.into_cached(generation)), Lookup::Miss));
        };
        if let Some(entry) = cell.get() {
            return Ok((entry, Lookup::Hit));
        }
        // A request that ends while it waits for a permit leaves an empty slot: removed,
        // so abandoned requests cannot crowd answers out of the cache.
        let _forget = ForgetIfEmpty {
            inner: &self.inner,
            key,
            cell: &cell,
        };
        let build_timeout = self.build_timeout;
        let inner = self.inner.clone();
        let owned_key = key.to_owned();
        let task_cell = cell.clone();
        let (entry, computed) = cell
            .get_or_spawn(
                || async { self.build_permit().await.map_err(E::from) },
                move |permit| async move {
                    let _permit = permit;
                    let built = tokio::time::timeout(build_timeout, build())
                        .await
                        .unwrap_or_else(|_| {
                            Err(E::from(HttpError::Overloaded(format!(
                                "building the answer took longer than the server's build timeout of {}s",
                                build_timeout.as_secs_f64()
                            ))))
                        });
                    let built: Built = match built {
                        Ok(built) => built.into(),
                        Err(e) => {
                            forget_unbuilt(&inner, &owned_key, &task_cell);
                            return Err(e);
                        }
                    };
                    let entry = Arc::new(built.into_cached(generation));
                    charge(&inner, &owned_key, &task_cell, entry.charge());
                    Ok(entry)
                },
            )
            .await?;
        let lookup = if computed { Lookup::Miss } else { Lookup::Hit };
        Ok((entry, lookup))
    }

    /// The permits distinct builds take; other whole-index readers (the web UI's broad
    /// pages) take them too, so the bound holds for the server as a whole.
    pub fn builds(&self) -> Arc<Semaphore> {
        self.builds.clone()
    }

    /// Waits for room to build an answer.
    async fn build_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, HttpError> {
        self.builds
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HttpError::Internal("the index build limiter was closed".into()))
    }
}

fn insert_slot(inner: &mut Inner, key: &str) -> Cell {
    let cell = Cell::default();
    let slot = Slot {
        cell: cell.clone(),
        bytes: 0,
        disk: 0,
    };
    if let Some((_, evicted)) = inner.entries.push(key.to_owned(), slot) {
        inner.bytes = inner.bytes.saturating_sub(evicted.bytes);
        inner.disk = inner.disk.saturating_sub(evicted.disk);
    }
    cell
}

/// Removes the slot of `key` when the request that made it ends with nothing built
/// and nobody building (its build failed, or it ended while waiting for a permit),
/// unless another request has filled or replaced it meanwhile: failures leave nothing
/// behind, so requests that fail (unknown pages, refused queries) cannot crowd answers
/// out of the cache.
struct ForgetIfEmpty<'a> {
    inner: &'a Mutex<Inner>,
    key: &'a str,
    cell: &'a Cell,
}

impl Drop for ForgetIfEmpty<'_> {
    fn drop(&mut self) {
        let mut inner = lock(self.inner);
        let stale = inner
            .entries
            .peek(self.key)
            .is_some_and(|slot| Arc::ptr_eq(&slot.cell, self.cell) && slot.cell.is_empty());
        if stale {
            inner.entries.pop(self.key);
        }
    }
}

/// Removes the slot of `key` after its build failed in its task (whose request may be
/// gone), unless it was replaced or charged meanwhile. Requests still waiting on the
/// failed build try once more by themselves, uncached.
fn forget_unbuilt(inner: &Mutex<Inner>, key: &str, cell: &Cell) {
    let mut inner = lock(inner);
    let unbuilt = inner
        .entries
        .peek(key)
        .is_some_and(|slot| Arc::ptr_eq(&slot.cell, cell) && slot.bytes == 0 && slot.disk == 0);
    if unbuilt {
        inner.entries.pop(key);
    }
}

/// Charges a freshly built entry to the byte budget and evicts least recently used
/// entries beyond it (never the entry just built).
fn charge(inner: &Mutex<Inner>, key: &str, cell: &Cell, (bytes, disk): (usize, usize)) {
    let mut inner = lock(inner);
    let Some(slot) = inner.entries.peek_mut(key) else {
        return;
    };
    if !Arc::ptr_eq(&slot.cell, cell) || slot.bytes != 0 || slot.disk != 0 {
        return;
    }
    slot.bytes = bytes;
    slot.disk = disk;
    inner.bytes += bytes;
    inner.disk += disk;
    while (inner.bytes > inner.max_bytes || inner.disk > inner.max_disk) && inner.entries.len() > 1
    {
        let Some((lru_key, _)) = inner.entries.peek_lru() else {
            break;
        };
        if lru_key == key {
            // The new entry is the only one left that matters; keep it.
            inner.entries.promote(key);
            continue;
        }
        if let Some((_, evicted)) = inner.entries.pop_lru() {
            inner.bytes = inner.bytes.saturating_sub(evicted.bytes);
            inner.disk = inner.disk.saturating_sub(evicted.disk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn body(s: &str) -> Result<Bytes, HttpError> {
        Ok(Bytes::from(s.to_owned()))
    }

    #[tokio::test]
    async fn hit_after_miss_and_generation_invalidates() {
        let cache = IndexCache::new(10, 1 << 20);
        let (a, l) = cache
            .get_or_build("q", 1, || async { body("one") })
            .await
            .unwrap();
        assert_eq!(
            (a.identity().as_bytes().unwrap().as_ref(), l),
            (&b"one"[..], Lookup::Miss)
        );
        let (a, l) = cache
            .get_or_build("q", 1, || async { body("two") })
            .await
            .unwrap();
        assert_eq!(
            (a.identity().as_bytes().unwrap().as_ref(), l),
            (&b"one"[..], Lookup::Hit)
        );
        let (a, l) = cache
            .get_or_build("q", 2, || async { body("two") })
            .await
            .unwrap();
        assert_eq!(
            (a.identity().as_bytes().unwrap().as_ref(), l),
            (&b"two"[..], Lookup::Miss)
        );
        // A request that saw an older generation is answered but does not pollute.
        let (a, l) = cache
            .get_or_build("q", 1, || async { body("old") })
            .await
            .unwrap();
        assert_eq!(
            (a.identity().as_bytes().unwrap().as_ref(), l),
            (&b"old"[..], Lookup::Miss)
        );
        let (a, _) = cache
            .get_or_build("q", 2, || async { body("x") })
            .await
            .unwrap();
        assert_eq!(a.identity().as_bytes().unwrap().as_ref(), b"two");
    }

    #[tokio::test]
    async fn failed_build_is_not_cached() {
        let cache = IndexCache::new(10, 1 << 20);
        let err = cache
            .get_or_build("q", 1, || async {
                Err::<Bytes, _>(HttpError::Internal("boom".into()))
            })
            .await;
        assert!(err.is_err());
        assert!(cache.is_empty(), "a failed build leaves no slot behind");
        let (a, l) = cache
            .get_or_build("q", 1, || async { body("ok") })
            .await
            .unwrap();
        assert_eq!(
            (a.identity().as_bytes().unwrap().as_ref(), l),
            (&b"ok"[..], Lookup::Miss)
        );
    }

    #[tokio::test]
    async fn bounded_by_count_and_bytes() {
        let cache = IndexCache::new(2, 1 << 20);
        for k in ["a", "b", "c"] {
            cache
                .get_or_build(k, 1, || async { body(k) })
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), 2);
        // 100-byte bodies are charged 200 bytes; a 450-byte budget keeps two.
        let cache = IndexCache::new(100, 450);
        for k in ["a", "b", "c", "d"] {
            let text = k.repeat(100);
            cache
                .get_or_build(
                    k,
                    1,
                    || async move { Ok::<_, HttpError>(Bytes::from(text)) },
                )
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.bytes(), 400);
        let (_, l) = cache
            .get_or_build("d", 1, || async { body("?") })
            .await
            .unwrap();
        assert_eq!(l, Lookup::Hit);
        let (_, l) = cache
            .get_or_build("a", 1, || async { body("?") })
            .await
            .unwrap();
        assert_eq!(l, Lookup::Miss);
    }

    #[tokio::test]
    async fn concurrent_misses_build_once() {
        let cache = Arc::new(IndexCache::new(10, 1 << 20));
        let builds = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                let builds = builds.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_build("q", 1, || async move {
                            builds.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            body("once")
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(
                t.await.unwrap().0.identity().as_bytes().unwrap().as_ref(),
                b"once"
            );
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn distinct_builds_are_bounded() {
        let cache = Arc::new(IndexCache::with_build_limit(100, 1 << 20, 2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (cache, running, most) = (cache.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    let key = format!("q{i}");
                    cache
                        .get_or_build(&key, 1, || async move {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            body("x")
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 8);
    }

    #[tokio::test]
    async fn compressed_variants_are_cached_and_distinct_etags() {
        let b = CachedBody::new(1, Bytes::from_static(b"{\"Results\":[]}"));
        let g1 = b.encoded(Coding::Gzip).await.unwrap();
        let g2 = b.encoded(Coding::Gzip).await.unwrap();
        assert_eq!(
            g1.as_bytes().unwrap().as_ptr(),
            g2.as_bytes().unwrap().as_ptr()
        );
        assert_ne!(b.etag(Coding::Gzip), b.etag(Coding::Identity));
        assert_eq!(
            b.etag(Coding::Identity).to_str().unwrap(),
            format!("\"{}\"", b.hash())
        );
        assert_eq!(
            b.etag(Coding::Brotli).to_str().unwrap(),
            format!("\"{}-br\"", b.hash())
        );
    }
}
