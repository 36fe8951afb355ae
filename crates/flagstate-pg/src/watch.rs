//! Keeps a store's view of the generation current without a round trip per call.
//!
//! Every bump of the generation row fires `pg_notify('flagstate_generation',
//! '<schema>:<generation>')` from a trigger, in the same transaction as the change, so a
//! replica hears about a commit as soon as it is visible. A listener task feeds those
//! notifications into an atomic; while it is not connected (startup, connection loss),
//! [`Store::generation`](flagstate_core::Store::generation) reads the row directly instead.
//! A slow poll runs as well, as a backstop for a listener connection that died silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flagstate_core::{Generation, StoreError};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use crate::error::SqlContext;

/// The notification channel the generation trigger uses (see the first migration).
pub(crate) const CHANNEL: &str = "flagstate_generation";
/// Wait before re-establishing a lost listener connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between attempts when listening keeps failing.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);
/// Interval of the backstop poll.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The last generation seen, and whether notifications are currently flowing.
#[derive(Debug, Default)]
pub(crate) struct GenerationWatch {
    value: AtomicU64,
    listening: AtomicBool,
}

impl GenerationWatch {
    /// Records a generation seen anywhere (own commit, notification, poll). The value only
    /// grows, so a late notification cannot move it back.
    pub(crate) fn observe(&self, generation: Generation) {
        self.value.fetch_max(generation, Ordering::AcqRel);
    }

    /// The cached generation, when notifications are flowing and so it is current.
    pub(crate) fn current(&self) -> Option<Generation> {
        self.listening
            .load(Ordering::Acquire)
            .then(|| self.value.load(Ordering::Acquire))
    }
}

/// Reads the generation row.
pub(crate) async fn read_generation(pool: &PgPool) -> Result<Generation, StoreError> {
    let (generation,): (i64,) = sqlx::query_as("SELECT generation FROM meta")
        .fetch_one(pool)
        .await
        .during("reading the generation")?;
    Ok(generation_from_db(generation))
}

/// Generations are stored as `bigint` with a `CHECK (generation >= 0)`.
pub(crate) fn generation_from_db(value: i64) -> Generation {
    Generation::try_from(value).unwrap_or(0)
}

/// Parses `<schema>:<generation>`, keeping only notifications for `schema`.
fn parse_payload(payload: &str, schema: &str) -> Option<Generation> {
    let (from, generation) = payload.rsplit_once(':')?;
    (from == schema).then(|| generation.parse().ok())?
}

/// The background tasks of one store; aborted when dropped.
#[derive(Debug)]
pub(crate) struct Watcher {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the listener and the backstop poll for the store in `schema`. The listener
/// holds its connection for good, so it gets a pool of its own (`listen_pool`) rather than
/// taking one away from queries.
pub(crate) fn spawn(
    pool: PgPool,
    listen_pool: PgPool,
    schema: String,
    watch: Arc<GenerationWatch>,
) -> Watcher {
    let listener = tokio::spawn(listen(listen_pool, pool.clone(), schema, watch.clone()));
    let poller = tokio::spawn(poll(pool, watch));
    Watcher {
        tasks: vec![listener, poller],
    }
}

async fn listen(listen_pool: PgPool, pool: PgPool, schema: String, watch: Arc<GenerationWatch>) {
    let mut delay = RECONNECT_DELAY;
    while !pool.is_closed() {
        match subscribe(&listen_pool).await {
            Ok(mut listener) => {
                delay = RECONNECT_DELAY;
                // Catch up with bumps made while nobody was listening; only then is the
                // cached value trustworthy.
                if let Ok(generation) = read_generation(&pool).await {
                    watch.observe(generation);
                    watch.listening.store(true, Ordering::Release);
                }
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            if let Some(g) = parse_payload(notification.payload(), &schema) {
                                watch.observe(g);
                            }
                        }
                        Ok(None) => {
                            tracing::info!("generation listener lost its connection");
                            break;
                        }
                        Err(error) => {
                            tracing::info!(%error, "generation listener failed");
                            break;
                        }
                    }
                }
                watch.listening.store(false, Ordering::Release);
            }
            Err(error) => {
                // Backs off: a server that refuses LISTEN (a hot standby) keeps refusing,
                // and `generation()` reads the row directly meanwhile.
                tracing::debug!(%error, "cannot listen for generation changes");
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
        tokio::time::sleep(delay).await;
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Report a lost connection instead of silently reconnecting, so `listening` is
    // cleared and the catch-up read runs after the reconnect.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn poll(pool: PgPool, watch: Arc<GenerationWatch>) {
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pool.is_closed() {
        interval.tick().await;
        if let Ok(generation) = read_generation(&pool).await {
            watch.observe(generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(parse_payload("s1:42", "s1"), Some(42));
        assert_eq!(parse_payload("s2:42", "s1"), None);
        assert_eq!(parse_payload("s1:x", "s1"), None);
        assert_eq!(parse_payload("garbage", "s1"), None);
    }

    #[test]
    fn generation_only_grows() {
        let watch = GenerationWatch::default();
        watch.observe(5);
        watch.observe(3);
        assert_eq!(watch.current(), None, "not listening yet");
        watch.listening.store(true, Ordering::Release);
        assert_eq!(watch.current(), Some(5));
    }
}
