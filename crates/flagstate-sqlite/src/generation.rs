//! The generation as this process knows it, so that answering from a cache costs no
//! database read.
//!
//! The store's own writes record the generation they committed at once. Commits of other
//! processes on the same file (a writer beside a read-only server, or `flagstate scan`
//! beside `serve`) are learnt by reading the `meta` row again once the last read is older
//! than [`SqliteOptions::generation_refresh`](crate::SqliteOptions::generation_refresh):
//! that interval is the bound on how stale another process's commit can be seen. Only
//! one read is in flight at a time; callers arriving meanwhile take the known value.
//! Generations only grow, so a slow read that finishes after a newer commit was recorded
//! cannot move the value back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flagstate_core::Generation;

/// The cached generation and when the database was last read for it.
#[derive(Debug)]
pub(crate) struct GenerationCache {
    value: AtomicU64,
    /// When the database was last read, as a [`GenerationCache::stamp`]; 0 until the
    /// first read. Atomic, so a fresh answer takes no lock.
    checked: AtomicU64,
    /// What stamps count from.
    epoch: Instant,
    refreshing: AtomicBool,
    refresh: Duration,
}

/// Clears the in-flight flag when the read ends, however it ends (a dropped future
/// included), so a cancelled read never stops later ones.
pub(crate) struct Refresh<'a> {
    cache: &'a GenerationCache,
    /// The stamp of when the read began.
    started: u64,
}

impl GenerationCache {
    /// A cache that reads the database again once its value is older than `refresh`
    /// (`Duration::ZERO`: on every call).
    pub(crate) fn new(refresh: Duration) -> Self {
        GenerationCache {
            value: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            epoch: Instant::now(),
            refreshing: AtomicBool::new(false),
            refresh,
        }
    }

    /// `at` as nanoseconds after `epoch`, plus one so that no stamp is 0 ("never").
    fn stamp(&self, at: Instant) -> u64 {
        let nanos = at.duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    /// The known generation when it is fresh enough (or another caller is reading it
    /// right now); otherwise a [`Refresh`] the caller completes with [`Refresh::done`]
    /// after reading the database.
    pub(crate) fn current(&self) -> Result<Generation, Refresh<'_>> {
        let now = self.stamp(Instant::now());
        let checked = self.checked.load(Ordering::Acquire);
        if checked != 0 {
            let age = Duration::from_nanos(now.saturating_sub(checked));
            let fresh = !self.refresh.is_zero() && age < self.refresh;
            if fresh || self.refreshing.swap(true, Ordering::AcqRel) {
                return Ok(self.value.load(Ordering::Acquire));
            }
        } else {
            // Nothing known yet: every caller reads, none waits on another.
            self.refreshing.store(true, Ordering::Release);
        }
        Err(Refresh {
            cache: self,
            started: now,
        })
    }

    /// Records a generation this store's own write committed.
    pub(crate) fn wrote(&self, generation: Generation) -> Generation {
        self.value.fetch_max(generation, Ordering::AcqRel);
        generation
    }
}

impl Refresh<'_> {
    /// Records the generation read from the database; returns the value now known.
    pub(crate) fn done(self, read: Generation) -> Generation {
        let known = self.cache.value.fetch_max(read, Ordering::AcqRel).max(read);
        self.cache.checked.fetch_max(self.started, Ordering::AcqRel);
        known
    }
}

impl Drop for Refresh<'_> {
    fn drop(&mut self) {
        self.cache.refreshing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_once_per_interval_and_never_goes_back() {
        let cache = GenerationCache::new(Duration::from_secs(3600));
        let first = cache.current().unwrap_err();
        assert_eq!(first.done(5), 5);
        assert_eq!(cache.current().ok(), Some(5), "fresh: no second read");
        assert_eq!(cache.wrote(7), 7);
        assert_eq!(cache.current().ok(), Some(7), "own writes are seen at once");
    }

    #[test]
    fn zero_interval_reads_every_time_and_a_stale_read_cannot_win() {
        let cache = GenerationCache::new(Duration::ZERO);
        cache.current().unwrap_err().done(3);
        let slow = cache.current().unwrap_err();
        // A concurrent caller takes the known value instead of a second read.
        assert_eq!(cache.current().ok(), Some(3));
        cache.wrote(4);
        assert_eq!(slow.done(3), 4, "a read older than a recorded write loses");
        assert!(cache.current().is_err(), "the next call reads again");
    }

    #[test]
    fn a_dropped_read_does_not_block_later_ones() {
        let cache = GenerationCache::new(Duration::ZERO);
        cache.current().unwrap_err().done(1);
        drop(cache.current().unwrap_err());
        assert!(cache.current().is_err());
    }
}
