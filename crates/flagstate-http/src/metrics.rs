//! Prometheus metrics: request counts and latencies per route, webhook outcomes, index
//! cache efficiency, and (read at scrape time) the indexer's progress, the requests it
//! sent the registry, the store's generation and the outgoing webhooks' deliveries per
//! endpoint. Served as text at `GET /metrics`.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use flagstate_core::registry::ClientStats;
use flagstate_core::sync::lock;
use flagstate_core::webhooks::EndpointStatus;

use crate::config::BuildInfo;
use crate::error::{HttpError, error_response};
use crate::server::ConnectionStats;
use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

/// The outgoing webhooks' metrics, per endpoint.
#[derive(Debug, Default)]
struct WebhookMetrics {
    delivered: Family<EndpointLabels, Counter>,
    failed: Family<EndpointLabels, Counter>,
    retention_skips: Family<EndpointLabels, Counter>,
    lag: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
}

impl WebhookMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = WebhookMetrics::default();
        registry.register(
            "flagstate_webhook_delivered",
            "Change records an outgoing webhook endpoint acknowledged (a redelivered record counts again), by endpoint",
            m.delivered.clone(),
        );
        registry.register(
            "flagstate_webhook_failed",
            "Outgoing webhook delivery attempts that failed (non-2xx, timeout, connection error; each retry counts), by endpoint",
            m.failed.clone(),
        );
        registry.register(
            "flagstate_webhook_retention_skips",
            "Times an outgoing webhook endpoint had fallen behind the change log's retention and skipped records it never got, by endpoint",
            m.retention_skips.clone(),
        );
        registry.register(
            "flagstate_webhook_lag_seconds",
            "How long the oldest change record not yet acknowledged by the endpoint has waited; 0 when caught up",
            m.lag.clone(),
        );
        m
    }
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s: cached answers take well under a millisecond, cold queries over
    // a large store and webhook deliveries that fetch manifests take much longer.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every metric the HTTP layer keeps. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    /// Events received in accepted deliveries.
    pub events_received: Counter,
    /// Events the indexer turned into store changes.
    pub events_applied: Counter,
    /// Events that changed nothing (pulls, blob pushes, …).
    pub events_ignored: Counter,
    /// Events acknowledged without re-applying because their id was seen recently.
    pub events_duplicate: Counter,
    deliveries_rejected: Family<ReasonLabels, Counter>,
    /// Index answers served from the cache.
    pub cache_hits: Counter,
    /// Index answers built from the store.
    pub cache_misses: Counter,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    store_generation: Gauge,
    store_up: Gauge,
    first_scan_done: Gauge,
    scanning: Gauge,
    repositories_done: Gauge,
    repositories_total: Gauge,
    full_scans: Counter,
    reconciles_pending: Gauge,
    indexer_events_failed: Counter,
    registry_requests: Family<KindLabels, Counter>,
    registry_retries: Counter,
    registry_not_modified: Counter,
    /// The registry client's counters at the last scrape; scrapes add the difference.
    registry_seen: Mutex<ClientStats>,
    /// Requests shed with `503` because `max_in_flight` requests were being served.
    pub requests_shed: Counter,
    /// Requests answered `503` because they took longer than `request_timeout`.
    pub requests_timed_out: Counter,
    /// Reconcile requests dropped because the queue was full.
    reconciles_dropped: Counter,
    /// The server loop's connection counters.
    pub(crate) connections: ConnectionStats,
    webhooks: WebhookMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    registry.register(name, help, g.clone());
    g
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

impl Metrics {
    /// A fresh set of metrics, all zero, with the default [`BuildInfo`].
    pub fn new() -> Self {
        Metrics::with_build_info(&BuildInfo::default())
    }

    /// A fresh set of metrics, all zero; `flagstate_build_info` reports `build` (commit
    /// `unknown` when it has none).
    pub fn with_build_info(build: &BuildInfo) -> Self {
        let mut r = Registry::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: build.version.clone(),
                commit: build.commit.clone().unwrap_or_else(|| "unknown".to_owned()),
            })
            .set(1);
        r.register(
            "flagstate_build_info",
            "Always 1; the labels name the running build's version and source commit",
            build_info,
        );
        let requests = Family::<RequestLabels, Counter>::default();
        r.register(
            "flagstate_http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        r.register(
            "flagstate_http_request_duration_seconds",
            "Time to produce a response, by route",
            latency.clone(),
        );
        let deliveries_rejected = Family::<ReasonLabels, Counter>::default();
        r.register(
            "flagstate_event_deliveries_rejected",
            "Webhook deliveries refused or failed, by reason",
            deliveries_rejected.clone(),
        );
        let webhooks = WebhookMetrics::register(&mut r);
        let registry_requests = Family::<KindLabels, Counter>::default();
        r.register(
            "flagstate_registry_requests",
            "Requests sent to the registry, by kind (catalog_page, tag_page, manifest_get, \
             manifest_head, manifest_check: a conditional GET, blob_get, token)",
            registry_requests.clone(),
        );
        Metrics {
            registry_retries: counter(
                &mut r,
                "flagstate_registry_retries",
                "Registry requests repeated after a transient failure",
            ),
            registry_not_modified: counter(
                &mut r,
                "flagstate_registry_manifest_not_modified",
                "Manifest checks the registry answered 304 Not Modified (tag unchanged)",
            ),
            registry_requests,
            registry_seen: Mutex::new(ClientStats::default()),
            events_received: counter(
                &mut r,
                "flagstate_events_received",
                "Registry events received in deliveries that were read",
            ),
            events_applied: counter(
                &mut r,
                "flagstate_events_applied",
                "Registry events applied to the store",
            ),
            events_ignored: counter(
                &mut r,
                "flagstate_events_ignored",
                "Registry events that change nothing indexed",
            ),
            events_duplicate: counter(
                &mut r,
                "flagstate_events_duplicate",
                "Redelivered registry events acknowledged without re-applying",
            ),
            cache_hits: counter(
                &mut r,
                "flagstate_index_cache_hits",
                "Index answers served from the response cache",
            ),
            cache_misses: counter(
                &mut r,
                "flagstate_index_cache_misses",
                "Index answers built from the store",
            ),
            cache_entries: gauge(
                &mut r,
                "flagstate_index_cache_entries",
                "Answers held in the response cache",
            ),
            cache_bytes: gauge(
                &mut r,
                "flagstate_index_cache_bytes",
                "Bytes charged to the response cache",
            ),
            store_generation: gauge(
                &mut r,
                "flagstate_store_generation",
                "Current generation of the store",
            ),
            store_up: gauge(
                &mut r,
                "flagstate_store_up",
                "1 when the store answered the last scrape",
            ),
            first_scan_done: gauge(
                &mut r,
                "flagstate_indexer_first_scan_done",
                "1 once the first full scan completed (always 1 without an indexer)",
            ),
            scanning: gauge(
                &mut r,
                "flagstate_indexer_scanning",
                "1 while a full scan runs",
            ),
            repositories_done: gauge(
                &mut r,
                "flagstate_indexer_scan_repositories_done",
                "Repositories done in the current or last full scan",
            ),
            repositories_total: gauge(
                &mut r,
                "flagstate_indexer_scan_repositories",
                "Repositories to visit in the current or last full scan",
            ),
            full_scans: counter(
                &mut r,
                "flagstate_indexer_full_scans",
                "Full scans completed since start",
            ),
            reconciles_pending: gauge(
                &mut r,
                "flagstate_indexer_reconciles_pending",
                "Repositories waiting for a re-scan",
            ),
            indexer_events_failed: counter(
                &mut r,
                "flagstate_indexer_events_failed",
                "Events whose application failed since start",
            ),
            requests_shed: counter(
                &mut r,
                "flagstate_http_requests_shed",
                "Requests answered 503 at once because server.max_in_flight were in flight",
            ),
            requests_timed_out: counter(
                &mut r,
                "flagstate_http_requests_timed_out",
                "Requests answered 503 because they exceeded server.request_timeout",
            ),
            reconciles_dropped: counter(
                &mut r,
                "flagstate_indexer_reconciles_dropped",
                "Reconcile requests dropped since start because the queue was full \
                 (the periodic full scan covers those repositories)",
            ),
            connections: ConnectionStats {
                open: gauge(
                    &mut r,
                    "flagstate_http_connections_open",
                    "Client connections open",
                ),
                accepted: counter(
                    &mut r,
                    "flagstate_http_connections_accepted",
                    "Client connections accepted",
                ),
                rejected: counter(
                    &mut r,
                    "flagstate_http_connections_rejected",
                    "Connections answered 503 at server.max_connections (every connection busy)",
                ),
                evicted: counter(
                    &mut r,
                    "flagstate_http_connections_evicted",
                    "Idle connections closed to admit a new one at server.max_connections",
                ),
                idle_closed: counter(
                    &mut r,
                    "flagstate_http_connections_idle_closed",
                    "Connections closed after server.idle_timeout without a request",
                ),
                write_timeouts: counter(
                    &mut r,
                    "flagstate_http_connections_write_timeouts",
                    "Connections closed because the client stopped reading for server.write_timeout",
                ),
                read_errors: counter(
                    &mut r,
                    "flagstate_http_connections_read_errors",
                    "Connections ended by an unreadable request or a request head slower than \
                     server.header_read_timeout",
                ),
                tls_handshake_errors: counter(
                    &mut r,
                    "flagstate_http_connections_tls_handshake_errors",
                    "TLS connections whose handshake failed",
                ),
                tls_handshake_timeouts: counter(
                    &mut r,
                    "flagstate_http_connections_tls_handshake_timeouts",
                    "TLS connections closed because the handshake took longer than \
                     server.tls_handshake_timeout",
                ),
            },
            registry: r,
            requests,
            latency,
            deliveries_rejected,
            webhooks,
        }
    }

    /// Counts a refused or failed webhook delivery.
    pub fn delivery_rejected(&self, reason: &'static str) {
        self.deliveries_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    fn observe(&self, route: String, method: &Method, status: StatusCode, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: method_label(method),
                status: status.as_u16(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }
}

impl Metrics {
    /// Brings counters up to totals the indexer keeps (counts since start), so they are
    /// exported as OpenMetrics counters (`_total`). Serialised with the registry counts'
    /// lock, so concurrent scrapes cannot add a difference twice.
    fn sync_totals<const N: usize>(&self, totals: [(&Counter, u64); N]) {
        let _one_scrape_at_a_time = lock(&self.registry_seen);
        for (counter, total) in totals {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Brings the outgoing webhooks' metrics up to the endpoints' totals.
    fn sync_webhooks(&self, endpoints: &[EndpointStatus]) {
        let _one_scrape_at_a_time = lock(&self.registry_seen);
        let w = &self.webhooks;
        for e in endpoints {
            let labels = EndpointLabels {
                endpoint: e.name.clone(),
            };
            for (family, total) in [
                (&w.delivered, e.delivered),
                (&w.failed, e.failed),
                (&w.retention_skips, e.retention_skips),
            ] {
                let counter = family.get_or_create(&labels);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
            w.lag.get_or_create(&labels).set(e.lag.as_secs_f64());
        }
    }

    /// Adds what the registry client counted since the last scrape.
    fn count_registry_requests(&self, now: ClientStats) {
        let mut seen = lock(&self.registry_seen);
        let before = *seen;
        for (kind, now, before) in [
            ("catalog_page", now.catalog_pages, before.catalog_pages),
            ("tag_page", now.tag_pages, before.tag_pages),
            ("manifest_get", now.manifest_gets, before.manifest_gets),
            ("manifest_head", now.manifest_heads, before.manifest_heads),
            (
                "manifest_check",
                now.manifest_checks,
                before.manifest_checks,
            ),
            ("blob_get", now.blob_gets, before.blob_gets),
            ("token", now.token_requests, before.token_requests),
        ] {
            self.registry_requests
                .get_or_create(&KindLabels { kind })
                .inc_by(now.saturating_sub(before));
        }
        self.registry_retries
            .inc_by(now.retries.saturating_sub(before.retries));
        self.registry_not_modified.inc_by(
            now.manifest_not_modified
                .saturating_sub(before.manifest_not_modified),
        );
        *seen = now;
    }
}

/// The method as a label; clients may send any token as a method, so anything unusual
/// is folded into `other` to keep the label set bounded.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `GET /metrics`: refreshes the scrape-time gauges and renders the text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus metrics in the OpenMetrics text format.",
            content_type = "application/openmetrics-text", body = String),
    )
)]
pub async fn render(State(state): State<AppState>) -> Result<Response, HttpError> {
    let m = state.metrics();
    match state.store().generation().await {
        Ok(g) => {
            m.store_generation.set(clamp(g));
            m.store_up.set(1);
        }
        Err(e) => {
            tracing::warn!(error = %e, "store did not answer the metrics scrape");
            m.store_up.set(0);
        }
    }
    m.cache_entries.set(clamp(state.cache().len() as u64));
    m.cache_bytes.set(clamp(state.cache().bytes() as u64));
    match state.indexer() {
        Some(indexer) => {
            let s = indexer.status();
            m.first_scan_done.set(i64::from(s.first_scan_done));
            m.scanning.set(i64::from(s.scanning));
            m.repositories_done.set(clamp(s.repositories_done));
            m.repositories_total.set(clamp(s.repositories_total));
            m.reconciles_pending.set(clamp(s.reconciles_pending));
            m.sync_totals([
                (&m.full_scans, s.full_scans),
                (&m.reconciles_dropped, s.reconciles_dropped),
                (&m.indexer_events_failed, s.events_failed),
            ]);
            m.count_registry_requests(indexer.client().stats());
        }
        None => {
            m.first_scan_done.set(1);
        }
    }
    if let Some(webhooks) = state.webhooks() {
        m.sync_webhooks(&webhooks.status());
    }
    let mut text = String::new();
    encode(&mut text, &m.registry)
        .map_err(|e| HttpError::Internal(format!("encoding metrics failed: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// Middleware around every request: records count and latency under the matched route
/// (`unmatched` for 404s, so arbitrary paths cannot grow the label set), and turns the
/// router's bare `405` into the JSON error every other failure uses, keeping `Allow`.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let mut response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = response.headers().get(header::ALLOW).cloned();
        let message = match allow.as_ref().and_then(|v| v.to_str().ok()) {
            Some(allowed) => format!("method {method} is not allowed here; allowed: {allowed}"),
            None => format!("method {method} is not allowed here"),
        };
        let mut json = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &message,
        );
        if let Some(allow) = allow {
            json.headers_mut().insert(header::ALLOW, allow);
        }
        response = json;
    }
    state.metrics().observe(
        route,
        &method,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}
