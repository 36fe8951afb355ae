//! One endpoint's delivery loop: read after the stored cursor, send a batch until it is
//! acknowledged, store the batch's end, wait for more.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Counters, WebhookEndpoint, WebhookError};
use crate::changes::{
    CLOUDEVENTS_BATCH_JSON, ChangeCursor, ChangeEvent, ChangePage, GenerationWatch,
};
use crate::store::{Generation, Store, StoreError, StoreExt};

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryFailure {
    #[error("the endpoint answered {0}")]
    Status(reqwest::StatusCode),
    #[error("{0}")]
    Request(#[source] reqwest::Error),
}

/// The HTTP client of `endpoint`: its timeout, no redirects (a redirect is a failure;
/// the extra headers, often credentials, go nowhere else).
pub(super) fn client(endpoint: &WebhookEndpoint) -> Result<reqwest::Client, WebhookError> {
    let headers = endpoint.validate()?;
    crate::registry::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(endpoint.timeout)
        .connect_timeout(endpoint.timeout)
        .user_agent(concat!("flagstate/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .map_err(|source| WebhookError::Client {
            endpoint: endpoint.name.clone(),
            source,
        })
}

/// The task of one endpoint.
pub(super) struct Deliverer {
    pub(super) endpoint: WebhookEndpoint,
    pub(super) client: reqwest::Client,
    pub(super) store: Arc<dyn Store>,
    pub(super) fallback_source: String,
    pub(super) counters: Arc<Counters>,
    /// The store generation's shared watch, which wakes a caught-up endpoint.
    pub(super) watch: GenerationWatch,
}

/// What a wait ended with.
enum Waited {
    Done,
    Shutdown,
}

async fn pause(shutdown: &CancellationToken, delay: Duration) -> Waited {
    tokio::select! {
        _ = shutdown.cancelled() => Waited::Shutdown,
        _ = tokio::time::sleep(delay) => Waited::Done,
    }
}

impl Deliverer {
    /// Delivers until `shutdown`. Store failures are retried with the endpoint's
    /// backoff, like delivery failures: the task never gives up.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let name = self.endpoint.name.clone();
        let Some((mut after, source)) = self.begin(&shutdown).await else {
            return;
        };
        // Credentials may be written into the URL; they never go to the log.
        let url = crate::registry::redacted(&self.endpoint.url);
        info!(endpoint = %name, %url, cursor = %after, "delivering the change log");
        let filter = self.endpoint.subscription.store_filter();
        let mut store_failures = 0;
        loop {
            let read = async {
                let generation = self.store.generation().await?;
                let page = self
                    .store
                    .changes_since(after, &filter, self.endpoint.batch_size)
                    .await?;
                Ok::<(Generation, ChangePage), StoreError>((generation, page))
            };
            let (seen, page) = tokio::select! {
                _ = shutdown.cancelled() => return,
                read = read => match read {
                    Ok(read) => read,
                    Err(e) => {
                        store_failures += 1;
                        warn!(endpoint = %name, error = %e, "reading the change log for a webhook failed; retrying");
                        match pause(&shutdown, self.endpoint.backoff.delay(store_failures)).await {
                            Waited::Done => continue,
                            Waited::Shutdown => return,
                        }
                    }
                },
            };
            store_failures = 0;
            if after < page.oldest {
                self.counters
                    .retention_skips
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    endpoint = %name, cursor = %after, oldest = %page.oldest,
                    "the endpoint fell behind the change log's retention: the records in between were never delivered; continuing from the oldest kept"
                );
                after = page.oldest;
                if !self.acknowledge(&shutdown, after).await {
                    return;
                }
                continue;
            }
            let full = page.records.len() >= self.endpoint.batch_size;
            let records: Vec<_> = page
                .records
                .into_iter()
                .filter(|r| self.endpoint.subscription.admits(r))
                .collect();
            if !records.is_empty() {
                self.counters.pending(records.first().map(|r| r.time));
                let count = records.len() as u64;
                let events: Vec<ChangeEvent> = records
                    .into_iter()
                    .map(|r| ChangeEvent::new(r, &source))
                    .collect();
                // Serialising plain strings cannot fail; an empty body would be refused.
                let body = serde_json::to_vec(&events).unwrap_or_default();
                if !self.send_until_acknowledged(&shutdown, body, &events).await {
                    return;
                }
                self.counters.delivered.fetch_add(count, Ordering::Relaxed);
            }
            if page.next != after {
                after = page.next;
                if !self.acknowledge(&shutdown, after).await {
                    return;
                }
            }
            if full {
                continue; // more may follow at once
            }
            self.counters.pending(None);
            if !self.wait_for_records(&shutdown, seen).await {
                return;
            }
        }
    }

    /// The stored cursor (for a new endpoint: the log's end, stored now) and the
    /// events' `source`; `None` on shutdown.
    async fn begin(&self, shutdown: &CancellationToken) -> Option<(ChangeCursor, String)> {
        let mut failures = 0;
        loop {
            let attempt = async {
                let source = self.store.public_registry(&self.fallback_source).await?;
                let cursor = match self.store.delivery_cursor(&self.endpoint.name).await? {
                    Some(cursor) => cursor,
                    None => {
                        let now = ChangeCursor::at_generation(self.store.generation().await?);
                        self.store
                            .set_delivery_cursor(&self.endpoint.name, now)
                            .await?;
                        info!(endpoint = %self.endpoint.name, cursor = %now, "new webhook endpoint: delivering changes from now on");
                        now
                    }
                };
                Ok::<_, StoreError>((cursor, source))
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return None,
                result = attempt => result,
            };
            match result {
                Ok(start) => return Some(start),
                Err(e) => {
                    failures += 1;
                    warn!(endpoint = %self.endpoint.name, error = %e, "reading the webhook's delivery cursor failed; retrying");
                    if let Waited::Shutdown =
                        pause(shutdown, self.endpoint.backoff.delay(failures)).await
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// Sends `body` until a 2xx answer; `false` on shutdown.
    async fn send_until_acknowledged(
        &self,
        shutdown: &CancellationToken,
        body: Vec<u8>,
        events: &[ChangeEvent],
    ) -> bool {
        let body = bytes::Bytes::from(body);
        let (first, last) = match (events.first(), events.last()) {
            (Some(first), Some(last)) => (first.id.as_str(), last.id.as_str()),
            _ => ("", ""),
        };
        let mut failures: u32 = 0;
        loop {
            let attempt = self.send(body.clone());
            let result = tokio::select! {
                _ = shutdown.cancelled() => return false,
                result = attempt => result,
            };
            match result {
                Ok(()) => {
                    debug!(endpoint = %self.endpoint.name, first, last, events = events.len(), "webhook batch acknowledged");
                    return true;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let delay = self.endpoint.backoff.delay(failures);
                    warn!(
                        endpoint = %self.endpoint.name, error = %e, attempt = failures,
                        retry_in = ?delay, first, last,
                        "webhook delivery failed; sending the same batch again later"
                    );
                    if let Waited::Shutdown = pause(shutdown, delay).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn send(&self, body: bytes::Bytes) -> Result<(), DeliveryFailure> {
        let response = self
            .client
            .post(self.endpoint.url.clone())
            .header(reqwest::header::CONTENT_TYPE, CLOUDEVENTS_BATCH_JSON)
            .body(body)
            .send()
            .await
            .map_err(DeliveryFailure::Request)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryFailure::Status(status))
        }
    }

    /// Stores `cursor` as delivered, retrying store failures; `false` on shutdown.
    async fn acknowledge(&self, shutdown: &CancellationToken, cursor: ChangeCursor) -> bool {
        let mut failures = 0;
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return false,
                result = self.store.set_delivery_cursor(&self.endpoint.name, cursor) => result,
            };
            match result {
                Ok(()) => return true,
                Err(e) => {
                    failures += 1;
                    warn!(endpoint = %self.endpoint.name, error = %e, %cursor, "storing the webhook's delivery cursor failed; retrying");
                    if let Waited::Shutdown =
                        pause(shutdown, self.endpoint.backoff.delay(failures)).await
                    {
                        return false;
                    }
                }
            }
        }
    }

    /// Waits until the store generation moves past `seen` (woken by the shared watch);
    /// `false` on shutdown.
    async fn wait_for_records(&self, shutdown: &CancellationToken, seen: Generation) -> bool {
        let mut watch = self.watch.clone();
        loop {
            watch.mark_seen();
            match self.store.generation().await {
                Ok(now) if now != seen => return true,
                Ok(_) => {}
                // The read after the wait reports and retries store failures.
                Err(_) => return true,
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = watch.changed() => {}
            }
        }
    }
}
