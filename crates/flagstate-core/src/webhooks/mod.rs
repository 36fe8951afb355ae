//! Outgoing webhooks of the change log (feature `webhooks`): each configured endpoint
//! receives the records it subscribes to, in log order, as batches of CloudEvents
//! ([`ChangeEvent`](crate::ChangeEvent), `application/cloudevents-batch+json`).
//!
//! **At-least-once, in order, per endpoint.** Each endpoint has a task of its own
//! ([`Webhooks::start`]) that reads the log after the endpoint's *delivery cursor*
//! ([`Store::delivery_cursor`](crate::Store::delivery_cursor)), sends one batch, and
//! stores the batch's end as the new cursor only after a 2xx answer. A failed batch
//! (non-2xx, timeout, connection error) is sent again, unchanged, after an exponential
//! backoff with jitter, so a later record never overtakes an earlier one. The cursor is
//! kept in the store, so a restarted (or killed) writer resends at most the batch it had
//! not seen acknowledged, with the same event `id`s. A new endpoint starts "from now"
//! (the log's current end), stored at once.
//!
//! Endpoints are independent: one that fails forever only retries its own batch, never
//! holds back another endpoint or the indexer. An endpoint whose cursor retention has
//! passed ([`ChangePage::oldest`](crate::ChangePage)) continues from the oldest record
//! still kept, with a warning and a count in [`EndpointStatus::retention_skips`].
//!
//! Only a writer delivers; read-only replicas of the same index must not start
//! [`Webhooks`], or endpoints would get every record once per process.

mod deliverer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::changes::{ChangeFilter, ChangeKind, ChangeRecord, GenerationWatch};
use crate::name::RepositoryName;
use crate::store::Store;
use crate::timestamp::Timestamp;

/// Default [`WebhookEndpoint::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`WebhookEndpoint::batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 100;

/// Why an endpoint cannot be used as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL is not an `http://` or `https://` URL.
    #[error("webhook endpoint {endpoint:?}: url must be an http:// or https:// URL, got {url:?}")]
    Url {
        /// The endpoint's name.
        endpoint: String,
        /// The URL given.
        url: String,
    },
    /// An extra header has a name or value HTTP does not allow.
    #[error("webhook endpoint {endpoint:?}: header {header:?}: {reason}")]
    Header {
        /// The endpoint's name.
        endpoint: String,
        /// The header's name.
        header: String,
        /// What is wrong.
        reason: String,
    },
    /// A limit is out of range (a zero timeout, batch size or backoff).
    #[error("webhook endpoint {endpoint:?}: {key} {reason}")]
    Limit {
        /// The endpoint's name.
        endpoint: String,
        /// The setting.
        key: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two endpoints have the same name (their delivery cursors would be one).
    #[error("webhook endpoint name {0:?} is used twice; names must be unique")]
    DuplicateName(String),
    /// The HTTP client could not be built.
    #[error("webhook endpoint {endpoint:?}: cannot build the HTTP client: {source}")]
    Client {
        /// The endpoint's name.
        endpoint: String,
        /// Why.
        source: reqwest::Error,
    },
}

/// Retry delays after a failed delivery: `initial`, doubling per failure up to `max`,
/// each with "equal jitter" (half fixed, half random) so endpoints that failed together
/// do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure (at least 1 ms).
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 1 s, up to 5 min.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay after the `failures`-th failure in a row (from 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let half = capped / 2;
        let jitter = rand::random_range(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX));
        half + Duration::from_millis(jitter)
    }
}

/// Which records an endpoint subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Only these kinds; empty: all.
    pub kinds: BTreeSet<ChangeKind>,
    /// Only repositories under one of these namespaces (`NS/…`); empty: all.
    pub namespaces: Vec<RepositoryName>,
}

impl Subscription {
    /// The part of the subscription the store filters by (kinds, and a single
    /// namespace); [`admits`](Self::admits) checks the rest.
    pub fn store_filter(&self) -> ChangeFilter {
        ChangeFilter {
            namespace: match self.namespaces.as_slice() {
                [one] => Some(one.to_string()),
                _ => None,
            },
            repository: None,
            kinds: self.kinds.clone(),
        }
    }

    /// Whether `record` is one the endpoint subscribes to.
    pub fn admits(&self, record: &ChangeRecord) -> bool {
        let name = record.repository.as_str();
        (self.kinds.is_empty() || self.kinds.contains(&record.kind))
            && (self.namespaces.is_empty()
                || self.namespaces.iter().any(|ns| {
                    name.strip_prefix(ns.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
                }))
    }
}

/// One endpoint the change log is delivered to. Its `Debug` shows neither header values
/// nor a password in the URL (they usually are credentials).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Unique among the endpoints; names its delivery cursor in the store and its
    /// metrics, so renaming an endpoint starts it afresh.
    pub name: String,
    /// Where batches are `POST`ed (`http://` or `https://`).
    pub url: url::Url,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: BTreeMap<String, String>,
    /// Which records it gets.
    pub subscription: Subscription,
    /// Longest wait for one delivery's answer (not 0).
    pub timeout: Duration,
    /// Retry delays after failures.
    pub backoff: Backoff,
    /// Most records in one batch (at least 1).
    pub batch_size: usize,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        f.debug_struct("WebhookEndpoint")
            .field("name", &self.name)
            .field("url", &crate::registry::redacted(&self.url))
            .field("headers", &headers)
            .field("subscription", &self.subscription)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl WebhookEndpoint {
    /// An endpoint `name` at `url` with every default: all records, no extra headers,
    /// [`DEFAULT_TIMEOUT`], [`Backoff::default`], [`DEFAULT_BATCH_SIZE`].
    pub fn new(name: impl Into<String>, url: url::Url) -> Self {
        WebhookEndpoint {
            name: name.into(),
            url,
            headers: BTreeMap::new(),
            subscription: Subscription::default(),
            timeout: DEFAULT_TIMEOUT,
            backoff: Backoff::default(),
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    /// Checks what the types cannot: the URL's scheme, the headers, the limits; returns
    /// the headers as sent.
    pub fn validate(&self) -> Result<reqwest::header::HeaderMap, WebhookError> {
        let endpoint = || self.name.clone();
        if !matches!(self.url.scheme(), "http" | "https") {
            return Err(WebhookError::Url {
                endpoint: endpoint(),
                url: crate::registry::redacted(&self.url),
            });
        }
        let limit = |key, reason| WebhookError::Limit {
            endpoint: endpoint(),
            key,
            reason,
        };
        if self.timeout.is_zero() {
            return Err(limit("timeout", "must not be 0"));
        }
        if self.batch_size == 0 {
            return Err(limit("batch_size", "must be at least 1"));
        }
        if self.backoff.initial.is_zero() {
            return Err(limit("backoff.initial", "must not be 0"));
        }
        if self.backoff.max < self.backoff.initial {
            return Err(limit(
                "backoff.max",
                "must not be less than backoff.initial",
            ));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            let bad = |reason: String| WebhookError::Header {
                endpoint: endpoint(),
                header: name.clone(),
                reason,
            };
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("is not a valid header name".into()))?;
            if header == reqwest::header::CONTENT_TYPE || header == reqwest::header::CONTENT_LENGTH
            {
                return Err(bad("is set by flagstate and cannot be configured".into()));
            }
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| bad("has characters not allowed in a header value".into()))?;
            // Extra headers usually carry credentials: keep them out of debug output.
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        Ok(headers)
    }
}

/// What one endpoint's deliveries came to since the process started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint's name.
    pub name: String,
    /// Records acknowledged (a redelivered record counts again).
    pub delivered: u64,
    /// Delivery attempts that failed (each retry counts).
    pub failed: u64,
    /// Times the endpoint's cursor had fallen behind retention, so records it never got
    /// were skipped.
    pub retention_skips: u64,
    /// How long the oldest record not yet acknowledged has waited; zero when caught up.
    pub lag: Duration,
}

/// The counters behind an [`EndpointStatus`], shared by the delivering task and readers.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    retention_skips: AtomicU64,
    /// The time (ms since the epoch) of the oldest unacknowledged record; `i64::MIN`
    /// when there is none.
    pending_since: AtomicI64,
}

impl Counters {
    fn new() -> Self {
        Counters {
            pending_since: AtomicI64::new(i64::MIN),
            ..Counters::default()
        }
    }

    fn pending(&self, since: Option<Timestamp>) {
        let millis = since.map_or(i64::MIN, Timestamp::as_millis);
        self.pending_since.store(millis, Ordering::Relaxed);
    }
}

/// The delivering tasks of every configured endpoint.
#[derive(Debug)]
pub struct Webhooks {
    monitor: WebhookMonitor,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Reads what the endpoints' deliveries came to (for metrics); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct WebhookMonitor {
    endpoints: Arc<Vec<(String, Arc<Counters>)>>,
}

impl Webhooks {
    /// Checks `endpoints` (unique names, [`WebhookEndpoint::validate`]) and starts one
    /// task per endpoint delivering `store`'s change log until `shutdown`. Events name
    /// the index's public registry URL as their `source` (the stored one, else
    /// `fallback_source`, as the feed does). Call it on the writer only.
    pub fn start(
        endpoints: Vec<WebhookEndpoint>,
        store: Arc<dyn Store>,
        fallback_source: String,
        shutdown: CancellationToken,
    ) -> Result<Webhooks, WebhookError> {
        let mut names = BTreeSet::new();
        let mut ready = Vec::new();
        for endpoint in endpoints {
            if !names.insert(endpoint.name.clone()) {
                return Err(WebhookError::DuplicateName(endpoint.name));
            }
            let client = deliverer::client(&endpoint)?;
            ready.push((endpoint, client, Arc::new(Counters::new())));
        }
        let monitor = WebhookMonitor {
            endpoints: Arc::new(
                ready
                    .iter()
                    .map(|(e, _, c)| (e.name.clone(), c.clone()))
                    .collect(),
            ),
        };
        // One watch of the generation wakes every caught-up endpoint.
        let watch = GenerationWatch::spawn_default(store.clone());
        let tasks = ready
            .into_iter()
            .map(|(endpoint, client, counters)| {
                let deliverer = deliverer::Deliverer {
                    endpoint,
                    client,
                    store: store.clone(),
                    fallback_source: fallback_source.clone(),
                    counters,
                    watch: watch.clone(),
                };
                tokio::spawn(deliverer.run(shutdown.child_token()))
            })
            .collect();
        Ok(Webhooks { monitor, tasks })
    }

    /// What the deliveries came to, for as long as the process runs.
    pub fn monitor(&self) -> WebhookMonitor {
        self.monitor.clone()
    }

    /// Waits for every task to end (they end when the shutdown token is cancelled).
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a webhook delivery task ended abnormally");
            }
        }
    }
}

impl WebhookMonitor {
    /// Each endpoint's deliveries so far, in configuration order.
    pub fn status(&self) -> Vec<EndpointStatus> {
        let now = Timestamp::now().as_millis();
        self.endpoints
            .iter()
            .map(|(name, c)| {
                let lag = match c.pending_since.load(Ordering::Relaxed) {
                    i64::MIN => Duration::ZERO,
                    since => Duration::from_millis(
                        u64::try_from(now.saturating_sub(since)).unwrap_or_default(),
                    ),
                };
                EndpointStatus {
                    name: name.clone(),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    retention_skips: c.retention_skips.load(Ordering::Relaxed),
                    lag,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
