//! The server-rendered web UI: a browsable view of the indexed registry.
//!
//! Pages (all plain HTML rendered with askama, no script needed):
//!
//! | path | page |
//! |---|---|
//! | `/` | repositories with title, description, icon, newest tags and counts (`?page=`) |
//! | `/r/<name>` | one repository: tags, images, lists, labels, annotations, pull commands, untagged manifests (`?history=TAG`: one tag's history) |
//! | `/r/<name>/@<digest>` | one image or list as seen from a repository (tags, pull by digest, referrers) |
//! | `/i/<digest>` | one image or list by digest |
//! | `/search?q=&arch=&os=&label=` | full-text search narrowed by platform and label |
//! | `/apps` | Flatpak applications and runtimes, named from their AppStream data |
//! | `/static/style-<hash>.css` | the stylesheet, cached for a year (the name changes with it) |
//!
//! Every page carries a strong `ETag` (the SHA-256 of its body), answers `If-None-Match`
//! with `304`, is compressed when the client accepts it, and says
//! `Cache-Control: max-age=<max_age_html>`. With a page cache
//! ([`UiContext::with_page_cache`], which the server sets) a page is rendered once per
//! (host, URL) and store generation. Everything taken from the
//! registry (labels, annotations, names) is escaped by the templates; a strict
//! `Content-Security-Policy` forbids scripts on top of that.
//!
//! The handlers only need a [`UiContext`]; [`routes`] works with any router state that
//! can produce one through [`FromRef`].

mod apps;
mod cards;
mod error;
mod home;
mod image;
mod layout;
mod params;
mod reference;
mod referrers;
mod repository;
mod response;
mod search;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::http::{HeaderMap, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use flagstate_core::indexer::Indexer;
use flagstate_core::response::RepositoryEntry;
use flagstate_core::{IndexQuery, Store, StoreError, StoreExt};
use tokio::sync::Semaphore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cache::{CachedBody, IndexCache};
use layout::{Layout, Section};

pub use error::UiError;
pub use flagstate_core::flatpak::AppStream;
pub use layout::ScanNotice;
pub use referrers::MANIFESTS_SHOWN;
pub use search::FILTERED_HIT_LIMIT;

/// Repositories (or apps, or search hits) shown per page.
pub const PAGE_SIZE: usize = 24;

/// What the UI handlers need: where the index lives and how to describe it.
#[derive(Debug, Clone)]
pub struct UiContext {
    store: Arc<dyn Store>,
    registry: String,
    max_age_html: Duration,
    builds: Option<Arc<Semaphore>>,
    pages: Option<Arc<IndexCache>>,
    indexer: Option<Arc<Indexer>>,
    remote_name: String,
}

/// The Flatpak remote name the apps page uses in its commands unless
/// [`UiContext::with_remote_name`] sets another.
pub const DEFAULT_REMOTE_NAME: &str = "myregistry";

impl UiContext {
    /// A context over `store`. `registry` is the public registry URL (the `Registry` of
    /// index responses, possibly relative such as `/`); pull commands name its host, or
    /// the host the page was requested from when it is relative. `max_age_html` is the
    /// `Cache-Control: max-age` of every page.
    pub fn new(store: Arc<dyn Store>, registry: impl Into<String>, max_age_html: Duration) -> Self {
        UiContext {
            store,
            registry: registry.into(),
            max_age_html,
            builds: None,
            pages: None,
            indexer: None,
            remote_name: DEFAULT_REMOTE_NAME.to_owned(),
        }
    }

    /// Shows `indexer`'s scan problems on every page: a failed last scan (with its
    /// error and the time of the last completed scan) or a first scan still running.
    pub fn with_indexer(mut self, indexer: Arc<Indexer>) -> Self {
        self.indexer = Some(indexer);
        self
    }

    /// The Flatpak remote name the apps page's `flatpak remote-add` and `flatpak
    /// install` commands use.
    pub fn with_remote_name(mut self, name: impl Into<String>) -> Self {
        self.remote_name = name.into();
        self
    }

    /// The Flatpak remote name of the apps page's commands.
    pub fn remote_name(&self) -> &str {
        &self.remote_name
    }

    /// What the pages say about the indexer right now (see [`ScanNotice`]).
    pub fn scan_notice(&self) -> Option<ScanNotice> {
        self.indexer
            .as_ref()
            .and_then(|i| ScanNotice::from_status(&i.status()))
    }

    /// The layout of a page of `section`, with the indexer's notice.
    pub(crate) fn layout(&self, section: Section) -> Layout {
        Layout::new(section).with_notice(self.scan_notice())
    }

    /// Keeps rendered pages in `pages`, per (scheme, `Host`, URL) and store generation: a page
    /// asked for again before the index changes is served without reading the store or
    /// rendering. Concurrent requests for the same missing page share one build.
    pub fn with_page_cache(mut self, pages: Arc<IndexCache>) -> Self {
        self.pages = Some(pages);
        self
    }

    /// Answers a page: from the page cache when it holds it for the current generation,
    /// else built by `build` (and cached when a cache is set). Errors of `build` are
    /// answered as they are and never cached. Everything a page shows comes from the
    /// store, the URL, the `Host` header (pull commands name the host when the
    /// registry URL is relative), the scheme and the indexer's notice, so those make the key.
    pub(crate) async fn cached_page<F, Fut>(
        &self,
        request: &HeaderMap,
        uri: &Uri,
        build: F,
    ) -> Result<Response, UiError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<String, UiError>> + Send + 'static,
    {
        let render = || async move { build().await.map(Bytes::from) };
        let Some(pages) = &self.pages else {
            let body = CachedBody::new(0, render().await?);
            return response::respond(&body, request, self.max_age_html).await;
        };
        let generation = self.store.generation().await?;
        let host = request
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()))
            .unwrap_or_default();
        // Pages name the scheme (the apps page's remote), so http and https requests
        // for the same host are kept apart; the indexer's notice is on every page.
        let scheme = request_scheme(request);
        let notice = self.scan_notice();
        let key = match &notice {
            None => format!("{scheme}://{host}\n{uri}"),
            Some(n) => format!(
                "{scheme}://{host}\n{uri}\n{}\n{}",
                n.message,
                n.last_scan.as_deref().unwrap_or_default()
            ),
        };
        let (body, _) = pages.get_or_build(&key, generation, render).await?;
        response::respond(&body, request, self.max_age_html).await
    }

    /// Makes broad queries ([`query`](Self::query)) wait for one of `builds`' permits,
    /// the ones the index response cache builds with, so pages that read many
    /// repositories share the server's bound on concurrent builds.
    pub fn with_build_limit(mut self, builds: Arc<Semaphore>) -> Self {
        self.builds = Some(builds);
        self
    }

    /// Answers a query that may read much of the index (the apps page, filtered
    /// search), within the build limit when one is set.
    pub async fn query(&self, query: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError> {
        let _permit = match &self.builds {
            Some(builds) => Some(
                builds
                    .acquire()
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        store: "build limiter",
                        source: Box::new(e),
                    })?,
            ),
            None => None,
        };
        self.store.query(query).await
    }

    /// The store pages are read from.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The public registry URL as configured.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The public registry URL pages name: the one stored with the index, else the
    /// configured one ([`StoreExt::public_registry`]), the same rule as index answers.
    pub async fn public_registry(&self) -> Result<String, StoreError> {
        self.store.public_registry(&self.registry).await
    }

    /// The `Cache-Control: max-age` of every page.
    pub fn max_age_html(&self) -> Duration {
        self.max_age_html
    }
}

/// The scheme a request reached this index with: `https` when `X-Forwarded-Proto` says
/// so — set by a proxy that terminates TLS in front of the server, and by the server
/// itself on the connections it terminates TLS for ([`serve_tls`](crate::serve_tls)) —
/// else `http`.
pub(crate) fn request_scheme(headers: &HeaderMap) -> &'static str {
    match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    }
}

/// The web UI's routes with their OpenAPI descriptions, for merging into the main router.
///
/// Paths: `/`, `/r/{*path}`, `/i/{digest}`, `/search`, `/apps`, `/static/{file}`. Unknown
/// paths are left to the main router (which answers a plain 404).
pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    UiContext: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(home::page))
        .routes(routes!(repository::page))
        .routes(routes!(image::page))
        .routes(routes!(search::page))
        .routes(routes!(apps::page))
        .routes(routes!(layout::stylesheet))
}
