//! One reader of the change log shared by every follower of one server.
//!
//! After each write, every follower of the feed (an event stream, a long poll) would
//! otherwise read the log from the store on its own: a hundred streams make a hundred
//! store reads per change. A [`ChangeHub`] reads the log once, when the store generation
//! moves, and keeps the newest records in a window in memory; followers whose position
//! lies inside the window take their records from it (filtering in memory) and wait for
//! the hub to publish more. A follower behind the window — one resuming from an old
//! cursor — reads the store itself until it is inside (and gets the store's answer about
//! retention), so the window only ever saves reads, never changes what is read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::{ChangeCursor, ChangeFilter, ChangeRecord};
use crate::store::{Generation, Store};
use crate::sync::lock;

/// Records a hub holds by default.
pub const DEFAULT_HUB_RECORDS: usize = 10_000;
/// How many records the hub reads from the store at a time.
const HUB_PAGE: usize = 1_000;

/// A shared reader of one store's change log; clone it for each follower.
#[derive(Debug, Clone)]
pub struct ChangeHub {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    window: Mutex<Window>,
    /// Bumped each time the window moves on.
    published: watch::Sender<u64>,
    fallback: Duration,
}

/// The newest records of the log: every record in `(start, end]`, in order.
#[derive(Debug)]
struct Window {
    records: VecDeque<ChangeRecord>,
    start: ChangeCursor,
    end: ChangeCursor,
    capacity: usize,
    /// `false` until the hub has read the store's generation once.
    ready: bool,
}

/// What a follower read from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRead {
    /// The records after the position that pass the filter, at most the limit.
    pub records: Vec<ChangeRecord>,
    /// Where the reader continues: the last record read (passing the filter or not), or
    /// the end of what the hub holds.
    pub next: ChangeCursor,
}

impl ChangeHub {
    /// Starts the hub's reader (on the current tokio runtime) over `store`: it looks at
    /// the generation every `interval` and, when it moved, reads the new records into a
    /// window of at most `capacity` (at least 1). Followers waiting on it also look by
    /// themselves every `fallback`. The reader ends once every clone of the hub is
    /// dropped.
    pub fn spawn(
        store: Arc<dyn Store>,
        capacity: usize,
        interval: Duration,
        fallback: Duration,
    ) -> Self {
        let (published, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            window: Mutex::new(Window {
                records: VecDeque::new(),
                start: ChangeCursor::default(),
                end: ChangeCursor::default(),
                capacity: capacity.max(1),
                ready: false,
            }),
            published,
            fallback,
        });
        tokio::spawn(read_log(store, Arc::downgrade(&shared), interval));
        ChangeHub { shared }
    }

    /// Marks what the hub has published as seen: a later [`changed`](Self::changed)
    /// waits for more. Take a receiver with [`subscribe`](Self::subscribe) first.
    pub fn subscribe(&self) -> HubSubscription {
        HubSubscription {
            receiver: self.shared.published.subscribe(),
            fallback: self.shared.fallback,
        }
    }

    /// The records after `after` that `filter` admits, at most `limit`, when the window
    /// covers `after` (the hub holds every record after it); `None` when it does not,
    /// and the reader must ask the store.
    pub fn read(
        &self,
        after: ChangeCursor,
        filter: &ChangeFilter,
        limit: usize,
    ) -> Option<HubRead> {
        let window = lock(&self.shared.window);
        if !window.ready || after < window.start {
            return None;
        }
        let mut read = HubRead {
            records: Vec::new(),
            next: after,
        };
        if limit == 0 {
            return Some(read);
        }
        // Records are in cursor order: skip to the first after `after`.
        let first = window.records.partition_point(|r| r.cursor <= after);
        for record in window.records.iter().skip(first) {
            read.next = record.cursor;
            if filter.admits(record) {
                read.records.push(record.clone());
                if read.records.len() == limit {
                    return Some(read);
                }
            }
        }
        read.next = read.next.max(window.end);
        Some(read)
    }
}

/// One follower's view of what a [`ChangeHub`] publishes.
#[derive(Debug)]
pub struct HubSubscription {
    receiver: watch::Receiver<u64>,
    fallback: Duration,
}

impl HubSubscription {
    /// Marks everything published so far as seen; call it before reading the hub.
    pub fn mark_seen(&mut self) {
        self.receiver.borrow_and_update();
    }

    /// Waits until the hub published more since [`mark_seen`](Self::mark_seen), or for
    /// the fallback period.
    pub async fn changed(&mut self) {
        let _ = tokio::time::timeout(self.fallback, self.receiver.changed()).await;
    }
}

/// The hub's reader: follows the generation and reads what each move added.
async fn read_log(store: Arc<dyn Store>, shared: Weak<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<Generation> = None;
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Ok(now) = store.generation().await else {
            continue;
        };
        if seen == Some(now) {
            continue;
        }
        let start = {
            let window = lock(&shared.window);
            if window.ready { Some(window.end) } else { None }
        };
        let Some(mut end) = start else {
            // The first look: the window starts (empty) at the current generation.
            let mut window = lock(&shared.window);
            window.start = ChangeCursor::at_generation(now);
            window.end = window.start;
            window.ready = true;
            seen = Some(now);
            continue;
        };
        // Every record of a generation up to `now` is committed: read them all.
        let mut records = Vec::new();
        let mut failed = false;
        loop {
            match store
                .changes_since(end, &ChangeFilter::default(), HUB_PAGE)
                .await
            {
                Ok(page) if end < page.oldest => {
                    // Retention passed the window's end: start again after the gap.
                    records.clear();
                    let mut window = lock(&shared.window);
                    window.records.clear();
                    window.start = page.oldest.max(ChangeCursor::at_generation(now));
                    window.end = window.start;
                    end = window.end;
                    break;
                }
                Ok(page) => {
                    let full = page.records.len() == HUB_PAGE;
                    end = page.next;
                    records.extend(page.records);
                    if !full {
                        end = end.max(ChangeCursor::at_generation(now));
                        break;
                    }
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        {
            let mut window = lock(&shared.window);
            window.records.extend(records);
            window.end = window.end.max(end);
            while window.records.len() > window.capacity {
                if let Some(dropped) = window.records.pop_front() {
                    window.start = dropped.cursor;
                }
            }
        }
        if !failed {
            seen = Some(now);
        }
        shared.published.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RepositoryName;
    use crate::changes::{ChangeKind, test_push};
    use crate::memory::MemoryStore;

    /// Waits (up to 20 s) until the hub reads `want` records after `after`.
    async fn until_read(hub: &ChangeHub, after: ChangeCursor, want: usize) -> HubRead {
        let mut subscription = hub.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            subscription.mark_seen();
            if let Some(read) = hub.read(after, &ChangeFilter::default(), 100)
                && read.records.len() >= want
            {
                return read;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the hub never read {want} records"
            );
            subscription.changed().await;
        }
    }

    #[tokio::test]
    async fn the_window_serves_readers_inside_it_and_sends_others_to_the_store() {
        let store = Arc::new(MemoryStore::new());
        store
            .apply(&test_push("early", "before the hub"))
            .await
            .unwrap();
        let start = ChangeCursor::at_generation(store.generation().await.unwrap());
        let hub = ChangeHub::spawn(
            store.clone(),
            4,
            Duration::from_millis(5),
            Duration::from_millis(50),
        );
        // Ready, empty: a reader at the start gets nothing yet, one before it the store.
        let empty = until_read(&hub, start, 0).await;
        assert!(empty.records.is_empty());
        assert_eq!(empty.next, start);
        assert_eq!(
            hub.read(ChangeCursor::at_generation(0), &ChangeFilter::default(), 10),
            None,
            "a record from before the window is the store's to answer"
        );

        store.apply(&test_push("app", "one")).await.unwrap();
        store.apply(&test_push("lib", "two")).await.unwrap();
        let read = until_read(&hub, start, 4).await;
        let kinds: Vec<_> = read
            .records
            .iter()
            .map(|r| (r.kind, r.repository.to_string()))
            .collect();
        assert_eq!(
            kinds,
            [
                (ChangeKind::RepositoryCreated, "app".to_owned()),
                (ChangeKind::ManifestUntaggedCreated, "app".to_owned()),
                (ChangeKind::RepositoryCreated, "lib".to_owned()),
                (ChangeKind::ManifestUntaggedCreated, "lib".to_owned()),
            ],
            "in log order"
        );
        // The same as the store answers, filter and limit included.
        let filter = ChangeFilter {
            repository: Some(RepositoryName::parse("app").unwrap()),
            ..ChangeFilter::default()
        };
        let from_hub = hub.read(start, &filter, 1).unwrap();
        let from_store = store.changes_since(start, &filter, 1).await.unwrap();
        assert_eq!(from_hub.records, from_store.records);
        assert_eq!(from_hub.next, from_store.next);

        // Past its capacity the window lets its oldest records go: a reader there goes
        // to the store, one after them is still served.
        store.apply(&test_push("lib", "three")).await.unwrap();
        let after_first = read.records[0].cursor;
        until_read(&hub, after_first, 4).await;
        assert_eq!(hub.read(start, &ChangeFilter::default(), 10), None);
        let all = store
            .changes_since(start, &ChangeFilter::default(), 100)
            .await
            .unwrap();
        assert_eq!(
            hub.read(after_first, &ChangeFilter::default(), 100)
                .unwrap()
                .records,
            all.records[1..]
        );
    }
}
