//! Keeps a store's view of the generation current without a round trip per call.
//!
//! [`Store::generation`](flagstate_core::Store::generation) never reads the database: it
//! answers from core's [`GenerationCache`], which two background tasks keep current.
//!
//! - **The poller** reads the generation row every
//!   [`PgOptions::generation_poll`](crate::PgOptions::generation_poll), on a connection of
//!   its own (so queries holding the pool cannot delay it). Each successful read
//!   *confirms* the value. This is what a replica on a hot standby relies on, where
//!   `NOTIFY` is never delivered: another process's commit is seen within one interval
//!   (plus the standby's replay lag). It runs on every server, because it is also the
//!   only proof that a quiet server is still there.
//! - **The listener** (on a primary): every bump of the generation row fires
//!   `pg_notify('flagstate_generation', '<schema>:<generation>')` from a trigger, in the
//!   same transaction as the change, so the listener hears about a commit as soon as it
//!   is visible and records it at once. On a server in recovery (`pg_is_in_recovery()`)
//!   it does not try to `LISTEN` (refused there) and checks again now and then, for a
//!   standby promoted to primary.
//!
//! **The rule for a database that went away:** a value the poller has not confirmed for
//! [`PgOptions::unconfirmed_limit`](crate::PgOptions::unconfirmed_limit) is refused with
//! [`StoreError::Unavailable`] (HTTP 503) instead of served: a replica whose standby stopped answers 503 within that time, not
//! stale answers forever, and serves again after the next successful poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstate_core::generation::{GenerationCache, Unconfirmed};
use flagstate_core::{Generation, StoreError};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use crate::error::{PgError, SqlContext};

/// The notification channel the generation trigger uses (see the first migration).
pub(crate) const CHANNEL: &str = "flagstate_generation";
/// Wait before re-establishing a lost listener connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between attempts when listening keeps failing, and between checks
/// whether a standby was promoted.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// The generation this process knows, and how long it may go unconfirmed.
#[derive(Debug)]
pub(crate) struct GenerationWatch {
    cache: GenerationCache,
    limit: Duration,
}

impl GenerationWatch {
    /// A watch confirmed by polls every `poll`, refusing a value unconfirmed for `limit`.
    pub(crate) fn new(poll: Duration, limit: Duration) -> Self {
        GenerationWatch {
            cache: GenerationCache::new(poll),
            limit,
        }
    }

    /// Records a generation this process saw committed (own write, notification). The
    /// value only grows, so a late notification cannot move it back.
    pub(crate) fn observe(&self, generation: Generation) -> Generation {
        self.cache.wrote(generation)
    }

    /// Records a generation read from the row by a read sent at `started`.
    pub(crate) fn confirm(&self, generation: Generation, started: Instant) -> Generation {
        self.cache.confirm(generation, started)
    }

    /// The known generation, unless it has gone unconfirmed for too long.
    pub(crate) fn current(&self) -> Result<Generation, StoreError> {
        self.cache
            .confirmed_within(self.limit)
            .map_err(|Unconfirmed { since }| {
                PgError::Unconfirmed {
                    since,
                    limit: self.limit,
                }
                .into()
            })
    }

    fn poll_interval(&self) -> Duration {
        self.cache.refresh()
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

/// Reads the generation row and confirms what it found.
pub(crate) async fn refresh(
    pool: &PgPool,
    watch: &GenerationWatch,
) -> Result<Generation, StoreError> {
    let started = Instant::now();
    let generation = read_generation(pool).await?;
    Ok(watch.confirm(generation, started))
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

/// The connections the watcher uses: each task holds one of its own, so neither takes
/// one away from queries nor waits behind them.
pub(crate) struct WatchPools {
    /// The query pool (recovery checks).
    pub(crate) pool: PgPool,
    /// One connection, held by the listener for good.
    pub(crate) listen: PgPool,
    /// One connection, for the poller.
    pub(crate) poll: PgPool,
}

/// Starts the listener and the poller for the store in `schema`.
pub(crate) fn spawn(pools: WatchPools, schema: String, watch: Arc<GenerationWatch>) -> Watcher {
    let listener = tokio::spawn(listen(pools.listen, pools.pool, schema, watch.clone()));
    let poller = tokio::spawn(poll(pools.poll, watch));
    Watcher {
        tasks: vec![listener, poller],
    }
}

async fn in_recovery(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let (recovering,): (bool,) = sqlx::query_as("SELECT pg_is_in_recovery()")
        .fetch_one(pool)
        .await?;
    Ok(recovering)
}

async fn listen(listen_pool: PgPool, pool: PgPool, schema: String, watch: Arc<GenerationWatch>) {
    let mut delay = RECONNECT_DELAY;
    let mut told_standby = false;
    while !pool.is_closed() {
        match in_recovery(&pool).await {
            Ok(true) => {
                if !told_standby {
                    tracing::info!(
                        poll = ?watch.poll_interval(),
                        "PostgreSQL is a hot standby (in recovery), which delivers no \
                         notifications: following the generation by polling"
                    );
                    told_standby = true;
                }
                tokio::time::sleep(MAX_RECONNECT_DELAY).await;
                continue;
            }
            Ok(false) => told_standby = false,
            Err(error) => {
                // The server is away; the poller notices and reports it.
                tracing::debug!(%error, "cannot ask the server whether it is in recovery");
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        match subscribe(&listen_pool).await {
            Ok(mut listener) => {
                delay = RECONNECT_DELAY;
                // Catch up with bumps made while nobody was listening.
                let _ = refresh(&pool, &watch).await;
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
            }
            Err(error) => {
                // The poller keeps the generation current meanwhile.
                tracing::debug!(%error, "cannot listen for generation changes");
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
        tokio::time::sleep(delay).await;
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Report a lost connection instead of silently reconnecting, so the catch-up read
    // runs after the reconnect.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn poll(pool: PgPool, watch: Arc<GenerationWatch>) {
    let mut interval = tokio::time::interval(watch.poll_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    while !pool.is_closed() {
        interval.tick().await;
        // A read slower than the limit is given up: the value is refused by then anyway,
        // and the next attempt may find the server back.
        let outcome = match tokio::time::timeout(watch.limit, refresh(&pool, &watch)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", watch.limit)),
        };
        match outcome {
            Ok(()) if failing => {
                tracing::info!("the generation is confirmed again");
                failing = false;
            }
            Ok(()) => {}
            Err(error) if !failing => {
                tracing::warn!(
                    %error,
                    "cannot read the generation; the store counts as unavailable once it \
                     has gone {:?} unconfirmed",
                    watch.limit
                );
                failing = true;
            }
            Err(_) => {}
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
    fn generation_only_grows_and_needs_confirmation() {
        let watch = GenerationWatch::new(Duration::from_millis(1), Duration::from_millis(4));
        watch.observe(5);
        assert!(
            matches!(watch.current(), Err(StoreError::Unavailable { .. })),
            "never confirmed"
        );
        watch.confirm(3, Instant::now());
        assert_eq!(watch.current().ok(), Some(5));
        std::thread::sleep(Duration::from_millis(10));
        let refused = watch.current().unwrap_err().to_string();
        assert!(refused.contains("not confirmed"), "{refused}");
    }
}
