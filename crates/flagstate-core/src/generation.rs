//! The generation as a store's process knows it, so that answering from a
//! generation-keyed cache costs no database read. Shared by the SQL stores.
//!
//! The rule, in one place: a store's own writes record the generation they committed at
//! once; commits of other processes (a writer beside a read-only server) are learnt by
//! reading the database again, which *confirms* the value. A value confirmed less than
//! the refresh interval ago is current; an older one is read again. Generations only grow,
//! so a slow read that finishes after a newer commit was recorded cannot move the value
//! back.
//!
//! Two ways to keep the value confirmed use this one type:
//!
//! - **On demand** ([`GenerationCache::current`], the SQLite store): the caller that finds
//!   the value older than the interval reads the database itself; only one read is in
//!   flight at a time, callers arriving meanwhile take the known value.
//! - **In the background** ([`GenerationCache::confirm`] from a poller,
//!   [`GenerationCache::confirmed_within`] on each call, the PostgreSQL store): no caller
//!   ever waits for the database, and a value nobody could confirm for longer than a
//!   limit is refused instead of served, so a replica whose database went away stops
//!   answering with what it knew last.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Generation;

/// The cached generation and when the database last confirmed it.
#[derive(Debug)]
pub struct GenerationCache {
    value: AtomicU64,
    /// When the database last confirmed the value, as a [`GenerationCache::stamp`]; 0
    /// until the first read. Atomic, so a fresh answer takes no lock.
    checked: AtomicU64,
    /// What stamps count from.
    epoch: Instant,
    refreshing: AtomicBool,
    refresh: Duration,
}

/// An on-demand read the caller owes the cache (see [`GenerationCache::current`]).
///
/// Clears the in-flight flag when the read ends, however it ends (a dropped future
/// included), so a cancelled read never stops later ones.
#[derive(Debug)]
pub struct Refresh<'a> {
    cache: &'a GenerationCache,
    /// The stamp of when the read began.
    started: u64,
}

/// A known generation that the database has not confirmed for too long (see
/// [`GenerationCache::confirmed_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unconfirmed {
    /// Time since the last confirmation; `None` when there never was one.
    pub since: Option<Duration>,
}

impl GenerationCache {
    /// A cache whose value is current for `refresh` after each confirmation
    /// (`Duration::ZERO`: never, so [`current`](Self::current) reads on every call).
    pub fn new(refresh: Duration) -> Self {
        GenerationCache {
            value: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            epoch: Instant::now(),
            refreshing: AtomicBool::new(false),
            refresh,
        }
    }

    /// The refresh interval the cache was made with.
    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// `at` as nanoseconds after `epoch`, plus one so that no stamp is 0 ("never").
    fn stamp(&self, at: Instant) -> u64 {
        let nanos = at.duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    /// How long ago the value was last confirmed, measured at stamp `now`; `None` before
    /// the first confirmation.
    fn age(&self, now: u64) -> Option<Duration> {
        let checked = self.checked.load(Ordering::Acquire);
        (checked != 0).then(|| Duration::from_nanos(now.saturating_sub(checked)))
    }

    /// On demand: the known generation when it is fresh enough (or another caller is
    /// reading it right now); otherwise a [`Refresh`] the caller completes with
    /// [`Refresh::done`] after reading the database.
    pub fn current(&self) -> Result<Generation, Refresh<'_>> {
        let now = self.stamp(Instant::now());
        if let Some(age) = self.age(now) {
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

    /// In the background: the known generation if the database confirmed it at most
    /// `limit` ago, otherwise how long it has gone unconfirmed.
    pub fn confirmed_within(&self, limit: Duration) -> Result<Generation, Unconfirmed> {
        // The value is loaded before the age: a confirmation landing in between makes
        // the value older than the age says, never newer than the database.
        let value = self.value.load(Ordering::Acquire);
        match self.age(self.stamp(Instant::now())) {
            Some(age) if age <= limit => Ok(value),
            since => Err(Unconfirmed { since }),
        }
    }

    /// Records a generation read from the database by a read that began at `started`
    /// (so a read that was slow confirms only up to when it was sent); returns the value
    /// now known.
    pub fn confirm(&self, read: Generation, started: Instant) -> Generation {
        self.record(read, self.stamp(started))
    }

    /// Takes a read's value (only ever growing) and its start stamp as the confirmation.
    fn record(&self, read: Generation, started: u64) -> Generation {
        let known = self.value.fetch_max(read, Ordering::AcqRel).max(read);
        self.checked.fetch_max(started, Ordering::AcqRel);
        known
    }

    /// Records a generation this store's own write committed.
    pub fn wrote(&self, generation: Generation) -> Generation {
        self.value.fetch_max(generation, Ordering::AcqRel);
        generation
    }
}

impl Refresh<'_> {
    /// Records the generation read from the database; returns the value now known.
    pub fn done(self, read: Generation) -> Generation {
        self.cache.record(read, self.started)
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

    #[test]
    fn background_confirmation_expires_after_the_limit() {
        let cache = GenerationCache::new(Duration::from_millis(10));
        assert_eq!(
            cache.confirmed_within(Duration::from_secs(3600)),
            Err(Unconfirmed { since: None }),
            "never confirmed"
        );
        let now = Instant::now();
        assert_eq!(cache.confirm(4, now), 4);
        assert_eq!(cache.confirmed_within(Duration::from_secs(3600)), Ok(4));
        // Own writes move the value but do not confirm it.
        cache.wrote(6);
        assert_eq!(cache.confirmed_within(Duration::from_secs(3600)), Ok(6));
        assert_eq!(
            cache.confirm(5, now),
            6,
            "an older read cannot move it back"
        );
        std::thread::sleep(Duration::from_millis(5));
        match cache.confirmed_within(Duration::from_millis(1)) {
            Err(Unconfirmed { since: Some(since) }) => {
                assert!(since >= Duration::from_millis(5), "{since:?}")
            }
            other => panic!("expected unconfirmed, got {other:?}"),
        }
        // A new confirmation makes it usable again.
        cache.confirm(6, Instant::now());
        assert_eq!(cache.confirmed_within(Duration::from_secs(1)), Ok(6));
    }
}
