//! [`AppState`]: what every handler shares — the store, the optional indexer, the
//! configuration, the response cache, recently seen event ids and the metrics.

use std::sync::Arc;

use axum::extract::FromRef;
use axum::http::HeaderValue;
use flagstate_core::Store;
use flagstate_core::changes::{ChangeHub, DEFAULT_WATCH_FALLBACK, DEFAULT_WATCH_INTERVAL};
use flagstate_core::icons::IconStore;
use flagstate_core::indexer::Indexer;
use flagstate_core::webhooks::WebhookMonitor;

use crate::body::SpoolDir;
use crate::cache::IndexCache;
use crate::config::HttpConfig;
use crate::error::HttpError;
use crate::events::RecentEvents;
use crate::health::ReadinessCheck;
use crate::limits::RequestLimiter;
use crate::metrics::Metrics;
use crate::server::ConnectionStats;

/// The shared state of the HTTP API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    indexer: Option<Arc<Indexer>>,
    config: HttpConfig,
    cache: IndexCache,
    /// Rendered web UI pages, per (host, URL) and generation; `None` when turned off.
    pages: Option<Arc<IndexCache>>,
    recent: RecentEvents,
    metrics: Metrics,
    index_cache_control: HeaderValue,
    icons: Option<IconStore>,
    limiter: RequestLimiter,
    readiness: ReadinessCheck,
    /// Where large answers are written; made on first use (see [`AppState::spool`]).
    spool: tokio::sync::OnceCell<Arc<SpoolDir>>,
    /// The outgoing webhooks' deliveries, for `/metrics`, when this server delivers.
    webhooks: std::sync::OnceLock<WebhookMonitor>,
    /// The change log's shared reader for the feed's followers; started on first use.
    change_hub: std::sync::OnceLock<ChangeHub>,
}

impl AppState {
    /// State over `store`. `indexer` receives registry notifications (`POST /events`) and
    /// reports readiness; `None` makes a read-only replica that refuses notifications.
    pub fn new(store: Arc<dyn Store>, indexer: Option<Arc<Indexer>>, config: HttpConfig) -> Self {
        let cache = IndexCache::with_build_limit(
            config.index_cache_entries,
            config.index_cache_bytes,
            config.max_concurrent_builds,
        )
        .with_disk_budget(config.answer_disk_bytes)
        .with_build_timeout(config.build_timeout);
        // Pages take no build permit of their own: the broad queries inside them take the
        // index cache's (`UiContext::query`), and a page holding one while asking for
        // another could wait on itself.
        let pages = (config.page_cache_entries > 0).then(|| {
            Arc::new(
                IndexCache::new(config.page_cache_entries, config.page_cache_bytes)
                    .with_build_timeout(config.build_timeout),
            )
        });
        let limiter = RequestLimiter::new(config.max_in_flight, config.max_change_watchers);
        let metrics = Metrics::with_build_info(&config.build_info);
        let recent = RecentEvents::new(config.recent_event_ids);
        let index_cache_control = crate::conditional::max_age_value(config.max_age_index);
        let icons = config
            .icons_dir
            .as_ref()
            .map(|dir| IconStore::new(dir.clone(), config.icons_uri.clone()));
        AppState {
            inner: Arc::new(Inner {
                icons,
                store,
                indexer,
                config,
                cache,
                pages,
                recent,
                metrics,
                index_cache_control,
                limiter,
                readiness: ReadinessCheck::default(),
                spool: tokio::sync::OnceCell::new(),
                webhooks: std::sync::OnceLock::new(),
                change_hub: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Where index answers' `data:` icons are extracted to, when configured.
    pub fn icon_store(&self) -> Option<&IconStore> {
        self.inner.icons.as_ref()
    }

    /// The directory large index answers are written to (`answer_dir`), made (and
    /// cleared of an earlier run's files) on first use. A server calls this before it
    /// starts serving, so a directory it cannot use stops it at start.
    pub async fn spool(&self) -> Result<Arc<SpoolDir>, HttpError> {
        let config = &self.inner.config;
        self.inner
            .spool
            .get_or_try_init(|| async {
                let dir = config.answer_dir.clone();
                let memory_max = config.answer_memory_max;
                tokio::task::spawn_blocking(move || {
                    SpoolDir::new(dir.as_deref(), memory_max).map_err(|e| match &dir {
                        Some(dir) => HttpError::Internal(format!(
                            "cannot use the answer directory {} (cache.answer_dir): {e}",
                            dir.display()
                        )),
                        None => HttpError::Internal(format!(
                            "cannot make a temporary answer directory: {e}"
                        )),
                    })
                })
                .await
                .map_err(|e| HttpError::Internal(format!("answer directory task failed: {e}")))?
                .map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Reports `monitor`'s deliveries at `/metrics` (per endpoint). Set once, by the
    /// process that delivers; a second call changes nothing.
    pub fn report_webhooks(&self, monitor: WebhookMonitor) {
        let _ = self.inner.webhooks.set(monitor);
    }

    /// The outgoing webhooks' deliveries, when this server delivers any.
    pub fn webhooks(&self) -> Option<&WebhookMonitor> {
        self.inner.webhooks.get()
    }

    /// The store queries are answered from.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The shared reader of the change log whose window the feed's followers read from
    /// (`change_buffer_records` records; started on the calling runtime at first use).
    pub fn change_hub(&self) -> ChangeHub {
        self.inner
            .change_hub
            .get_or_init(|| {
                ChangeHub::spawn(
                    self.inner.store.clone(),
                    self.inner.config.change_buffer_records,
                    DEFAULT_WATCH_INTERVAL,
                    DEFAULT_WATCH_FALLBACK,
                )
            })
            .clone()
    }

    /// The indexer, when this server writes the index.
    pub fn indexer(&self) -> Option<&Arc<Indexer>> {
        self.inner.indexer.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// The index response cache.
    pub fn cache(&self) -> &IndexCache {
        &self.inner.cache
    }

    /// The web UI's page cache.
    pub fn page_cache(&self) -> Option<&Arc<IndexCache>> {
        self.inner.pages.as_ref()
    }

    /// Event ids recently applied.
    pub(crate) fn recent_events(&self) -> &RecentEvents {
        &self.inner.recent
    }

    /// `Cache-Control` of `/index/static` answers, built once.
    pub(crate) fn index_cache_control(&self) -> &HeaderValue {
        &self.inner.index_cache_control
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The coalesced readiness check of `/readyz`.
    pub(crate) fn readiness(&self) -> &ReadinessCheck {
        &self.inner.readiness
    }

    /// The request limits' shared state.
    pub(crate) fn limiter(&self) -> &RequestLimiter {
        &self.inner.limiter
    }

    /// The connection counters `/metrics` reports; hand them to
    /// [`server::serve`](crate::server::serve) when serving this state's router.
    pub fn connections(&self) -> ConnectionStats {
        self.inner.metrics.connections.clone()
    }
}

/// Lets the web UI's routes ([`crate::ui::routes`]) run on this state, so the binary can
/// serve both with `router_with(state, ui::routes())`.
impl FromRef<AppState> for crate::ui::UiContext {
    fn from_ref(state: &AppState) -> Self {
        let ui = crate::ui::UiContext::new(
            state.store().clone(),
            state.config().public_registry_url.clone(),
            state.config().max_age_html,
        )
        .with_build_limit(state.cache().builds())
        .with_remote_name(state.config().ui_remote_name.clone());
        let ui = match state.indexer() {
            Some(indexer) => ui.with_indexer(indexer.clone()),
            None => ui,
        };
        match state.page_cache() {
            Some(pages) => ui.with_page_cache(pages.clone()),
            None => ui,
        }
    }
}
