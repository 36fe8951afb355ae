//! One watch of a store's generation shared by every follower of the change log.
//!
//! A follower (an event stream, a long poll, a webhook endpoint) has nothing to do until
//! the store generation moves. Instead of each follower reading it on a timer of its
//! own — a hundred streams at 50 ms are 2,000 wake-ups a second, and a new record waits
//! half a period on average — one task reads [`Store::generation`] every short
//! `interval` and wakes the followers only when it moved. The watch is only a wake-up:
//! followers still read the generation and the log from the store, and also look again
//! every `fallback` if no wake-up comes (a task stopped with its runtime), so a missed
//! wake-up costs time, never a record.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Generation, Store};

/// How often [`GenerationWatch::spawn`]'s task reads the generation by default.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(10);
/// How long a follower waits for a wake-up before it looks by itself, by default.
pub const DEFAULT_WATCH_FALLBACK: Duration = Duration::from_secs(1);

/// A shared watch of one store's generation; clone it for each follower.
#[derive(Debug, Clone)]
pub struct GenerationWatch {
    receiver: watch::Receiver<Generation>,
    fallback: Duration,
}

impl GenerationWatch {
    /// Starts the task (on the current tokio runtime) that reads `store`'s generation
    /// every `interval` and publishes it when it moved. The task ends once every clone
    /// of the watch is dropped. A failed read keeps the last value (followers read the
    /// store themselves and see the failure).
    pub fn spawn(store: Arc<dyn Store>, interval: Duration, fallback: Duration) -> Self {
        let (sender, receiver) = watch::channel(Generation::default());
        let interval = interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = sender.closed() => return,
                    _ = ticks.tick() => {}
                }
                if let Ok(now) = store.generation().await {
                    sender.send_if_modified(|seen| {
                        let moved = *seen != now;
                        *seen = now;
                        moved
                    });
                }
            }
        });
        GenerationWatch { receiver, fallback }
    }

    /// [`spawn`](Self::spawn) with [`DEFAULT_WATCH_INTERVAL`] and
    /// [`DEFAULT_WATCH_FALLBACK`].
    pub fn spawn_default(store: Arc<dyn Store>) -> Self {
        Self::spawn(store, DEFAULT_WATCH_INTERVAL, DEFAULT_WATCH_FALLBACK)
    }

    /// Marks the current value seen: a later [`changed`](Self::changed) waits for a move
    /// after this call. Call it before reading the store, so that a move between the
    /// read and the wait is not missed.
    pub fn mark_seen(&mut self) {
        self.receiver.borrow_and_update();
    }

    /// Waits until the generation moved since [`mark_seen`](Self::mark_seen), or for
    /// the fallback period, whichever comes first.
    pub async fn changed(&mut self) {
        let _ = tokio::time::timeout(self.fallback, self.receiver.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::test_push;
    use crate::memory::MemoryStore;

    #[tokio::test]
    async fn a_write_wakes_the_waiter_and_a_quiet_store_falls_back() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut watch = GenerationWatch::spawn(
            store.clone(),
            Duration::from_millis(5),
            Duration::from_secs(30),
        );
        watch.mark_seen();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                store.apply(&test_push("app", "one")).await.unwrap();
            })
        };
        let started = tokio::time::Instant::now();
        watch.changed().await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the write woke the waiter, not the 30 s fallback"
        );
        writer.await.unwrap();

        let mut quiet = GenerationWatch::spawn(
            store.clone(),
            Duration::from_millis(5),
            Duration::from_millis(20),
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        quiet.mark_seen();
        // Nothing moves: the wait ends at the fallback, and returns.
        quiet.changed().await;
    }
}
