//! Background work: the debounced reconcile queue and its worker, periodic full scans
//! and periodic garbage collection.
//!
//! The queue is a map, not a channel: a repository is pending at most once (later
//! requests fold into it) and runs at most once at a time, so a burst of events for one
//! repository costs one or two re-scans, and the queue never blocks the event path. It
//! holds at most [`max_pending_reconciles`](super::IndexerConfig::max_pending_reconciles)
//! repositories: a request for another one beyond that is dropped and counted, and the
//! periodic full scan covers it, so a flood of notifications naming many repositories
//! cannot turn into an unbounded number of registry requests.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Indexer, NoProgress, lock};
use crate::name::RepositoryName;
use crate::timestamp::Timestamp;

/// Delay before retrying a full scan that failed outright.
const FAILED_SCAN_RETRY: Duration = Duration::from_secs(30);

/// Repositories waiting for a re-scan, each with the time it becomes due.
pub(super) struct ReconcileQueue {
    debounce: Duration,
    capacity: usize,
    pending: Mutex<HashMap<RepositoryName, Instant>>,
    dropped: AtomicU64,
    wake: Notify,
}

/// A view of the reconcile queue, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileQueueStats {
    /// Repositories waiting.
    pub pending: u64,
}

impl ReconcileQueue {
    pub fn new(debounce: Duration, capacity: usize) -> Self {
        ReconcileQueue {
            debounce,
            capacity,
            pending: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    /// Asks for a re-scan of `repository` after the debounce delay; false when the queue
    /// is full and the request was dropped. An already pending request keeps its
    /// (earlier) due time, so a steady stream of events cannot postpone the re-scan
    /// forever.
    pub fn schedule(&self, repository: &RepositoryName) -> bool {
        let due = Instant::now() + self.debounce;
        {
            let mut pending = lock(&self.pending);
            if !pending.contains_key(repository) && pending.len() >= self.capacity {
                drop(pending);
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // One line per thousand dropped: a flood must not flood the log too.
                if dropped % 1000 == 1 {
                    tracing::warn!(
                        repository = %repository,
                        dropped,
                        capacity = self.capacity,
                        "reconcile queue full; the next full scan covers the repositories dropped"
                    );
                }
                return false;
            }
            pending.entry(repository.clone()).or_insert(due);
        }
        self.wake.notify_one();
        true
    }

    /// Requests dropped since start because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn pending_len(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Takes up to `room` due repositories that are not running; returns them and the
    /// earliest due time of what remains.
    fn take_due(
        &self,
        running: &HashSet<RepositoryName>,
        room: usize,
    ) -> (Vec<RepositoryName>, Option<Instant>) {
        let now = Instant::now();
        let mut pending = lock(&self.pending);
        let mut due: Vec<RepositoryName> = Vec::new();
        let mut next: Option<Instant> = None;
        for (name, at) in pending.iter() {
            if running.contains(name) {
                continue;
            }
            if *at <= now && due.len() < room {
                due.push(name.clone());
            } else {
                next = Some(next.map_or(*at, |n| n.min(*at)));
            }
        }
        for name in &due {
            pending.remove(name);
        }
        (due, next)
    }
}

impl Indexer {
    /// Starts the background work and returns its handle; it ends when `shutdown` is
    /// cancelled. Runs a full scan at once, then every
    /// [`full_scan_interval`](super::IndexerConfig::full_scan_interval); garbage
    /// collection every [`gc_interval`](super::IndexerConfig::gc_interval); and the
    /// reconcile worker, which re-scans repositories touched by events once their
    /// debounce delay has passed.
    pub fn spawn(self: Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        self.start(shutdown, false)
    }

    /// Like [`spawn`](Self::spawn), for a store a full scan has just brought up to date
    /// (its caller ran [`full_scan`](Self::full_scan) itself, e.g. to report progress):
    /// the first periodic scan waits a whole interval instead of repeating it at once.
    pub fn spawn_after_scan(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.start(shutdown, true)
    }

    fn start(
        self: Arc<Self>,
        shutdown: CancellationToken,
        scanned: bool,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::join!(
                self.clone().full_scan_loop(shutdown.clone(), scanned),
                self.clone().gc_loop(shutdown.clone()),
                self.clone().reconcile_loop(shutdown.clone()),
            );
        })
    }

    async fn full_scan_loop(self: Arc<Self>, shutdown: CancellationToken, scanned: bool) {
        if scanned {
            let Some(interval) = self.cfg.full_scan_interval else {
                return;
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        loop {
            let succeeded = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = self.full_scan(&NoProgress) => match result {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "full scan failed");
                        false
                    }
                },
            };
            // A scan that could not even list the repositories (registry down at start)
            // is retried soon rather than after a whole interval, or never.
            let wait = match (succeeded, self.cfg.full_scan_interval) {
                (true, None) => return,
                (true, Some(interval)) => interval,
                (false, interval) => {
                    interval.map_or(FAILED_SCAN_RETRY, |i| i.min(FAILED_SCAN_RETRY))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn gc_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(interval) = self.cfg.gc_interval else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.store.collect_garbage().await {
                Ok(stats) => {
                    self.status
                        .gc_manifests_removed
                        .fetch_add(stats.manifests_removed, Ordering::Relaxed);
                    tracing::debug!(removed = stats.manifests_removed, "garbage collected");
                }
                Err(e) => tracing::error!(error = %e, "garbage collection failed"),
            }
            let retention = &self.cfg.history_retention;
            match self.store.prune_history(retention, Timestamp::now()).await {
                Ok(dropped) => tracing::debug!(dropped, "tag history pruned"),
                Err(e) => tracing::error!(error = %e, "pruning tag history failed"),
            }
            let retention = &self.cfg.change_retention;
            match self.store.prune_changes(retention, Timestamp::now()).await {
                Ok(dropped) => tracing::debug!(dropped, "change log pruned"),
                Err(e) => tracing::error!(error = %e, "pruning the change log failed"),
            }
        }
    }

    async fn reconcile_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut running: HashSet<RepositoryName> = HashSet::new();
        let mut tasks: JoinSet<RepositoryName> = JoinSet::new();
        loop {
            let room = self.cfg.concurrency.saturating_sub(tasks.len());
            let (due, next) = self.queue.take_due(&running, room);
            for name in due {
                running.insert(name.clone());
                let indexer = self.clone();
                self.status
                    .reconciles_running
                    .fetch_add(1, Ordering::SeqCst);
                tasks.spawn(async move {
                    let _running = RunningGuard(&indexer);
                    indexer.status.reconciles.fetch_add(1, Ordering::Relaxed);
                    // A panic must not lose the repository's place in `running`.
                    let scan = AssertUnwindSafe(indexer.scan_repository(&name)).catch_unwind();
                    match scan.await {
                        Ok(Ok(outcome)) => tracing::debug!(?outcome, "repository reconciled"),
                        Ok(Err(e)) => {
                            indexer
                                .status
                                .reconciles_failed
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "repository reconcile failed");
                        }
                        Err(_) => {
                            indexer
                                .status
                                .reconciles_failed
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::error!(repository = %name, "repository reconcile panicked");
                        }
                    }
                    name
                });
            }
            // Sleeping until the next due time is only useful when there is room to
            // start it; otherwise a finishing task wakes the loop.
            let sleep_until = match next {
                Some(at) if tasks.len() < self.cfg.concurrency => at,
                _ => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tasks.abort_all();
                    return;
                }
                _ = self.queue.wake.notified() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(name) = done {
                        running.remove(&name);
                    }
                }
                _ = tokio::time::sleep_until(sleep_until) => {}
            }
        }
    }

    /// Runs the reconcile worker until no repository is pending or running, or until
    /// `timeout`; returns whether the queue drained. For tests and one-shot tools that
    /// apply events without [`spawn`](Indexer::spawn)ning the background work.
    pub async fn drain_reconciles(self: &Arc<Self>, timeout: Duration) -> bool {
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(self.clone().reconcile_loop(shutdown.clone()));
        let deadline = Instant::now() + timeout;
        let drained = loop {
            if self.queue.pending_len() == 0
                && self.status.reconciles_running.load(Ordering::SeqCst) == 0
            {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        shutdown.cancel();
        let _ = worker.await;
        drained
    }

    /// A view of the reconcile queue.
    pub fn reconcile_queue(&self) -> ReconcileQueueStats {
        ReconcileQueueStats {
            pending: self.queue.pending_len() as u64,
        }
    }
}

/// Counts a re-scan as running until dropped — also when the task is aborted.
struct RunningGuard<'a>(&'a Indexer);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0
            .status
            .reconciles_running
            .fetch_sub(1, Ordering::SeqCst);
    }
}
