//! The change log: one record per visible change of the index, in the order the changes
//! became visible, so a client can list once and then follow every change after that
//! (list-then-watch), from any registry behind the index.
//!
//! A record is written in the same store transaction as the change it describes, so the
//! log never shows a change the index does not, nor misses one it does. A write that
//! changes nothing visible (a rescan of unchanged tags) writes no record.
//!
//! Records are ordered by [`ChangeCursor`]: the store generation of the transaction that
//! made the change and the record's position within it. Generations are assigned under
//! the store's write lock, so cursors grow in commit order; a reader that has seen every
//! record up to a cursor never later finds an older one.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::digest::Digest;
use crate::model::PushedManifest;
use crate::name::{RepositoryName, Tag};
use crate::store::Generation;
use crate::timestamp::Timestamp;

mod event;
mod hub;
mod watch;

pub use event::{CLOUDEVENTS_BATCH_JSON, CLOUDEVENTS_JSON, ChangeData, ChangeEvent};
pub use hub::{ChangeHub, DEFAULT_HUB_RECORDS, HubRead, HubSubscription};
pub use watch::{DEFAULT_WATCH_FALLBACK, DEFAULT_WATCH_INTERVAL, GenerationWatch};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// The index saw the repository for the first time.
    RepositoryCreated,
    /// The repository was removed, with all its tags.
    RepositoryDeleted,
    /// A tag appeared.
    TagCreated,
    /// A tag moved to another digest (`previous_digest` says from where).
    TagUpdated,
    /// A tag was removed (`previous_digest` says what it pointed at).
    TagDeleted,
    /// A manifest no tag reaches was pushed by digest (`digest`, `media_type`).
    ManifestUntaggedCreated,
    /// A manifest pushed by digest that no tag reached was deleted (`digest`).
    ManifestUntaggedDeleted,
    /// A manifest that refers to another (OCI 1.1 `subject`: a signature, an SBOM) was
    /// pushed (`digest`, `subject`, `artifact_type`).
    ReferrerCreated,
    /// A manifest that referred to another was deleted (`digest`, `subject`,
    /// `artifact_type`).
    ReferrerDeleted,
}

impl ChangeKind {
    /// Every kind, in [`as_str`](Self::as_str) order of the docs.
    pub const ALL: [ChangeKind; 9] = [
        ChangeKind::RepositoryCreated,
        ChangeKind::RepositoryDeleted,
        ChangeKind::TagCreated,
        ChangeKind::TagUpdated,
        ChangeKind::TagDeleted,
        ChangeKind::ManifestUntaggedCreated,
        ChangeKind::ManifestUntaggedDeleted,
        ChangeKind::ReferrerCreated,
        ChangeKind::ReferrerDeleted,
    ];

    /// The name of the kind: `repository.created`, `tag.updated`, …; the CloudEvents
    /// type is `io.flagstate.` followed by it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::RepositoryCreated => "repository.created",
            ChangeKind::RepositoryDeleted => "repository.deleted",
            ChangeKind::TagCreated => "tag.created",
            ChangeKind::TagUpdated => "tag.updated",
            ChangeKind::TagDeleted => "tag.deleted",
            ChangeKind::ManifestUntaggedCreated => "manifest.untagged.created",
            ChangeKind::ManifestUntaggedDeleted => "manifest.untagged.deleted",
            ChangeKind::ReferrerCreated => "referrer.created",
            ChangeKind::ReferrerDeleted => "referrer.deleted",
        }
    }

    /// The kind [`as_str`](Self::as_str) names.
    pub fn parse(text: &str) -> Option<Self> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The stored code of the kind (stable: stores persist it).
    pub fn code(self) -> i64 {
        match self {
            ChangeKind::RepositoryCreated => 1,
            ChangeKind::RepositoryDeleted => 2,
            ChangeKind::TagCreated => 3,
            ChangeKind::TagUpdated => 4,
            ChangeKind::TagDeleted => 5,
            ChangeKind::ManifestUntaggedCreated => 6,
            ChangeKind::ManifestUntaggedDeleted => 7,
            ChangeKind::ReferrerCreated => 8,
            ChangeKind::ReferrerDeleted => 9,
        }
    }

    /// The kind a stored code names.
    pub fn from_code(code: i64) -> Option<Self> {
        ChangeKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// The position of a record in the log: the generation its change made visible, and the
/// record's place among that generation's records (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChangeCursor {
    /// The store generation of the change.
    pub generation: Generation,
    /// Position within the generation.
    pub index: u32,
}

impl ChangeCursor {
    /// The position before every record of a store at `generation`: following from it
    /// gives exactly the changes made after the index was at that generation.
    pub fn at_generation(generation: Generation) -> Self {
        ChangeCursor {
            generation,
            index: u32::MAX,
        }
    }

    /// The cursor stored as two integer columns (SQL stores keep generation and
    /// position apart, so reading after a cursor is a range scan of their key).
    pub fn from_columns(generation: i64, position: i64) -> Self {
        ChangeCursor {
            generation: Generation::try_from(generation).unwrap_or_default(),
            index: u32::try_from(position).unwrap_or(u32::MAX),
        }
    }

    /// The two integer columns [`from_columns`](Self::from_columns) reads back.
    pub fn columns(self) -> (i64, i64) {
        (
            i64::try_from(self.generation).unwrap_or(i64::MAX),
            i64::from(self.index),
        )
    }

    /// Reads the text [`Display`](fmt::Display) writes (`G.I`, or `G` for
    /// [`at_generation`](Self::at_generation)).
    pub fn parse(text: &str) -> Option<Self> {
        let (generation, index) = match text.split_once('.') {
            Some((g, i)) => (g, i.parse().ok()?),
            None => (text, u32::MAX),
        };
        if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ChangeCursor {
            generation: generation.parse().ok()?,
            index,
        })
    }
}

impl fmt::Display for ChangeCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.index == u32::MAX {
            write!(f, "{}", self.generation)
        } else {
            write!(f, "{}.{}", self.generation, self.index)
        }
    }
}

/// One change of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Where it is in the log.
    pub cursor: ChangeCursor,
    /// When it happened (the write's time, as the tag's `updated` says).
    pub time: Timestamp,
    /// What happened.
    pub kind: ChangeKind,
    /// The repository.
    pub repository: RepositoryName,
    /// The tag, for tag changes.
    pub tag: Option<Tag>,
    /// The digest the tag points at now (created, updated).
    pub digest: Option<Digest>,
    /// The digest it pointed at before (updated, deleted).
    pub previous_digest: Option<Digest>,
    /// The media type of `digest`'s manifest.
    pub media_type: Option<String>,
    /// The manifest `digest` refers to (its OCI 1.1 `subject`), for manifests pushed by
    /// digest and referrers.
    pub subject: Option<Digest>,
    /// The artifact type of `digest`'s manifest (its `artifactType`, else its config's
    /// media type), where the index knows it.
    pub artifact_type: Option<String>,
}

/// A change a store is about to record; the store adds the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChange {
    /// What happened.
    pub kind: ChangeKind,
    /// The tag, for tag changes.
    pub tag: Option<Tag>,
    /// The digest the tag points at now.
    pub digest: Option<Digest>,
    /// The digest it pointed at before.
    pub previous_digest: Option<Digest>,
    /// The media type of `digest`, when the writer knows it; else the store looks it up
    /// among its manifests.
    pub media_type: Option<String>,
    /// The manifest `digest` refers to (OCI 1.1 `subject`).
    pub subject: Option<Digest>,
    /// The artifact type of `digest`'s manifest.
    pub artifact_type: Option<String>,
}

/// What the change log says of a manifest a repository holds by digest: the facts of a
/// [`PushedManifest`] its records carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedFacts {
    /// Its media type.
    pub media_type: String,
    /// Its artifact type, where known.
    pub artifact_type: Option<String>,
    /// The manifest it refers to, for a referrer.
    pub subject: Option<Digest>,
}

impl From<&PushedManifest> for PushedFacts {
    fn from(manifest: &PushedManifest) -> Self {
        PushedFacts {
            media_type: manifest.media_type.clone(),
            artifact_type: manifest.artifact_type.clone(),
            subject: manifest.subject.clone(),
        }
    }
}

impl NewChange {
    /// The change of `tag` from `before` to `after` (`None`: absent), or `None` when
    /// they are equal.
    pub fn of_tag(tag: &Tag, before: Option<&Digest>, after: Option<&Digest>) -> Option<Self> {
        let kind = match (before, after) {
            (None, Some(_)) => ChangeKind::TagCreated,
            (Some(b), Some(a)) if a != b => ChangeKind::TagUpdated,
            (Some(_), None) => ChangeKind::TagDeleted,
            _ => return None,
        };
        Some(NewChange {
            kind,
            tag: Some(tag.clone()),
            digest: after.cloned(),
            previous_digest: before.cloned(),
            media_type: None,
            subject: None,
            artifact_type: None,
        })
    }

    /// A repository-level change.
    pub fn of_repository(kind: ChangeKind) -> Self {
        NewChange {
            kind,
            tag: None,
            digest: None,
            previous_digest: None,
            media_type: None,
            subject: None,
            artifact_type: None,
        }
    }

    /// A change of a manifest held by digest: an untagged manifest's
    /// ([`ChangeKind::ManifestUntaggedCreated`], [`ChangeKind::ManifestUntaggedDeleted`])
    /// or a referrer's ([`ChangeKind::ReferrerCreated`], [`ChangeKind::ReferrerDeleted`]).
    pub fn of_pushed(kind: ChangeKind, digest: &Digest, facts: &PushedFacts) -> Self {
        NewChange {
            kind,
            tag: None,
            digest: Some(digest.clone()),
            previous_digest: None,
            media_type: Some(facts.media_type.clone()),
            subject: facts.subject.clone(),
            artifact_type: facts.artifact_type.clone(),
        }
    }
}

/// What a push by digest that added `manifest` to a repository records, the one rule
/// every store follows: the repository's creation when it is new, then the untagged
/// manifest's creation unless a tag already reaches it, then — for a manifest with a
/// `subject` — the referrer's creation (a referrer is listed whether a tag reaches it or
/// not).
pub fn untagged_pushed(
    repository_created: bool,
    reached: bool,
    manifest: &PushedManifest,
) -> Vec<NewChange> {
    let facts = PushedFacts::from(manifest);
    let mut changes = Vec::new();
    if repository_created {
        changes.push(NewChange::of_repository(ChangeKind::RepositoryCreated));
    }
    if !reached {
        changes.push(NewChange::of_pushed(
            ChangeKind::ManifestUntaggedCreated,
            &manifest.digest,
            &facts,
        ));
    }
    if facts.subject.is_some() {
        changes.push(NewChange::of_pushed(
            ChangeKind::ReferrerCreated,
            &manifest.digest,
            &facts,
        ));
    }
    changes
}

/// What deleting manifest `digest` from a repository records, the one rule every store
/// follows: the deletion of each tag that pointed at it, in tag order; then, when the
/// repository held it as pushed by digest (`pushed`), the untagged manifest's deletion
/// if no tag reached it before the delete (`reached`), and the referrer's deletion if it
/// had a `subject`.
pub fn manifest_deleted(
    digest: &Digest,
    mut tags: Vec<Tag>,
    pushed: Option<&PushedFacts>,
    reached: bool,
) -> Vec<NewChange> {
    tags.sort();
    let mut changes: Vec<NewChange> = tags
        .iter()
        .filter_map(|tag| NewChange::of_tag(tag, Some(digest), None))
        .collect();
    if let Some(facts) = pushed {
        if !reached {
            changes.push(NewChange::of_pushed(
                ChangeKind::ManifestUntaggedDeleted,
                digest,
                facts,
            ));
        }
        if facts.subject.is_some() {
            changes.push(NewChange::of_pushed(
                ChangeKind::ReferrerDeleted,
                digest,
                facts,
            ));
        }
    }
    changes
}

/// What pointing `tag` (at `before` until now) at the artifact `manifest` records, the
/// one rule every store follows: when the repository did not hold the artifact yet
/// (`newly_held`), what a push of it by digest records, as reached — the repository's
/// creation when it is new, the referrer's creation for an artifact with a `subject` —
/// then the tag's change. The store then describes the records
/// ([`describe_artifacts`]).
pub fn artifact_tagged(
    repository_created: bool,
    newly_held: bool,
    tag: &Tag,
    before: Option<&Digest>,
    manifest: &PushedManifest,
) -> Vec<NewChange> {
    let mut changes = if newly_held {
        untagged_pushed(repository_created, true, manifest)
    } else {
        Vec::new()
    };
    changes.extend(NewChange::of_tag(tag, before, Some(&manifest.digest)));
    changes
}

/// Fills in the media type and artifact type of each record in `changes` whose digest is
/// an artifact the repository holds (`artifact` tells what it holds of it), which the
/// stored manifests cannot tell: the one rule every store describes artifact tags'
/// records with.
pub fn describe_artifacts(
    changes: &mut [NewChange],
    artifact: impl Fn(&Digest) -> Option<PushedFacts>,
) {
    for change in changes {
        if let Some(held) = change.digest.as_ref().and_then(&artifact) {
            change.media_type = Some(held.media_type);
            change.artifact_type = held.artifact_type;
        }
    }
}

/// The tag changes that take a repository from `before` to `after`, in tag order: the
/// one rule every store records replacements with.
pub fn tag_changes(
    before: &std::collections::BTreeMap<Tag, Digest>,
    after: &std::collections::BTreeMap<Tag, Digest>,
) -> Vec<NewChange> {
    let tags: BTreeSet<&Tag> = before.keys().chain(after.keys()).collect();
    tags.into_iter()
        .filter_map(|tag| NewChange::of_tag(tag, before.get(tag), after.get(tag)))
        .collect()
}

/// Which records a reader wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeFilter {
    /// Only repositories under `NAMESPACE/`.
    pub namespace: Option<String>,
    /// Only this repository.
    pub repository: Option<RepositoryName>,
    /// Only these kinds; empty: all.
    pub kinds: BTreeSet<ChangeKind>,
}

impl ChangeFilter {
    /// Whether `record` passes the filter.
    pub fn admits(&self, record: &ChangeRecord) -> bool {
        let name = record.repository.as_str();
        self.repository.as_ref().is_none_or(|r| r.as_str() == name)
            && self.namespace.as_ref().is_none_or(|ns| {
                name.strip_prefix(ns.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            && (self.kinds.is_empty() || self.kinds.contains(&record.kind))
    }
}

/// A read of the log: the records after a cursor, and where the log stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangePage {
    /// The records after the cursor that pass the filter, in order, at most the limit.
    pub records: Vec<ChangeRecord>,
    /// Where a reader continues: the last record read (passing the filter or not), or
    /// the cursor given when nothing followed it.
    pub next: ChangeCursor,
    /// The oldest position the log can still continue from: a cursor before it asks for
    /// records retention has dropped.
    pub oldest: ChangeCursor,
}

/// How much of the log a store keeps, applied by
/// [`Store::prune_changes`](crate::Store::prune_changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRetention {
    /// At most this many records, the newest.
    pub max_records: usize,
    /// Records older than this are dropped; `None` keeps them however old.
    pub max_age: Option<Duration>,
}

impl Default for ChangeRetention {
    /// 100,000 records, however old.
    fn default() -> Self {
        ChangeRetention {
            max_records: 100_000,
            max_age: None,
        }
    }
}

impl ChangeRetention {
    /// The oldest time [`max_age`](Self::max_age) keeps at `now`.
    pub fn horizon(&self, now: Timestamp) -> Option<Timestamp> {
        let millis = i64::try_from(self.max_age?.as_millis()).unwrap_or(i64::MAX);
        Some(Timestamp::from_millis(
            now.as_millis().saturating_sub(millis),
        ))
    }
}

/// The reference read over `log` (every record, in order), as every store must answer
/// [`Store::changes_since`](crate::Store::changes_since): the records after `after` that
/// `filter` admits, at most `limit`; `next` is the last record *read* — stopping at the
/// limit, or at the log's end — so a filtered reader does not re-read what it skipped.
/// `floor` is the position retention has dropped everything up to (the oldest position
/// still continuable).
pub fn read_log<'a>(
    log: impl IntoIterator<Item = &'a ChangeRecord>,
    after: ChangeCursor,
    filter: &ChangeFilter,
    limit: usize,
    floor: ChangeCursor,
) -> ChangePage {
    let mut page = ChangePage {
        records: Vec::new(),
        next: after,
        oldest: floor,
    };
    if limit == 0 {
        return page;
    }
    for record in log.into_iter().filter(|r| r.cursor > after) {
        page.next = record.cursor;
        if filter.admits(record) {
            page.records.push(record.clone());
            if page.records.len() == limit {
                break;
            }
        }
    }
    page
}

/// Follows the change log from a cursor, waiting for new records: the one implementation
/// behind the HTTP event stream, for embedders too.
///
/// New records are noticed by watching [`Store::generation`](crate::Store::generation)
/// every `poll` (every store keeps it in process, so this is cheap), or by waiting on a
/// shared [`GenerationWatch`] ([`with_watch`](Self::with_watch)), then reading the log
/// after the last record handed out. A store failure is returned and the follower can be
/// asked again: it resumes where it was.
#[derive(Debug)]
pub struct ChangeFollower<S> {
    store: S,
    after: ChangeCursor,
    filter: ChangeFilter,
    batch: usize,
    poll: Duration,
    /// The generation up to which everything was read, when known.
    read_up_to: Option<Generation>,
    pending: std::collections::VecDeque<ChangeRecord>,
    /// The shared wake-up, when given; else the follower looks every `poll`.
    watch: Option<GenerationWatch>,
    /// The shared reader of the log, when given: records come from its window while the
    /// follower's position lies inside it.
    hub: Option<(ChangeHub, HubSubscription)>,
}

impl<S: std::ops::Deref<Target = D>, D: crate::Store + ?Sized> ChangeFollower<S> {
    /// Follows `store` after `since`, the records `filter` admits, reading up to `batch`
    /// at once and looking for more every `poll`.
    pub fn new(
        store: S,
        since: ChangeCursor,
        filter: ChangeFilter,
        batch: usize,
        poll: Duration,
    ) -> Self {
        ChangeFollower {
            store,
            after: since,
            filter,
            batch: batch.max(1),
            poll,
            read_up_to: None,
            pending: std::collections::VecDeque::new(),
            watch: None,
            hub: None,
        }
    }

    /// Takes records from `hub` (shared by every follower of the store) while the
    /// follower's position lies inside its window, and waits on it; behind the window it
    /// reads the store itself.
    pub fn with_hub(mut self, hub: ChangeHub) -> Self {
        let subscription = hub.subscribe();
        self.hub = Some((hub, subscription));
        self
    }

    /// Waits on `watch` (shared by every follower of the store) instead of looking
    /// every `poll`.
    pub fn with_watch(mut self, watch: GenerationWatch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Where the follower is: the last record it read (handed out or filtered away).
    pub fn position(&self) -> ChangeCursor {
        self.after
    }

    /// The next record, waiting as long as it takes. A cursor retention has passed is
    /// [`StoreError::Invalid`](crate::StoreError::Invalid) naming the oldest valid one.
    pub async fn next(&mut self) -> Result<ChangeRecord, crate::StoreError> {
        loop {
            if let Some(record) = self.pending.pop_front() {
                return Ok(record);
            }
            if let Some((hub, subscription)) = &mut self.hub {
                subscription.mark_seen();
                if let Some(read) = hub.read(self.after, &self.filter, self.batch) {
                    self.after = read.next;
                    self.pending.extend(read.records);
                    if self.pending.is_empty() {
                        subscription.changed().await;
                    }
                    continue;
                }
            }
            if let Some(watch) = &mut self.watch {
                watch.mark_seen();
            }
            let generation = self.store.generation().await?;
            if self.read_up_to != Some(generation) {
                let page = self
                    .store
                    .changes_since(self.after, &self.filter, self.batch)
                    .await?;
                if self.after < page.oldest {
                    return Err(crate::StoreError::Invalid(format!(
                        "change cursor {} is older than the log keeps; the oldest still kept is {}",
                        self.after, page.oldest
                    )));
                }
                // A full batch may have more behind it: read again before waiting.
                self.after = page.next;
                if page.records.len() < self.batch {
                    self.read_up_to = Some(generation);
                    // Every record up to `generation` is read (it was committed before
                    // the read began), which may bring the position into a hub's window.
                    self.after = self.after.max(ChangeCursor::at_generation(generation));
                }
                self.pending.extend(page.records);
                if !self.pending.is_empty() {
                    continue;
                }
            }
            match (&mut self.hub, &mut self.watch) {
                // The hub publishes each move of the generation it read.
                (Some((_, subscription)), _) => subscription.changed().await,
                (None, Some(watch)) => watch.changed().await,
                (None, None) => tokio::time::sleep(self.poll).await,
            }
        }
    }
}

/// A push by digest of a manifest made from `seed` into `repository`: a write that
/// records changes, for the tests of the followers.
#[cfg(test)]
fn test_push(repository: &str, seed: &str) -> crate::TagChange {
    crate::TagChange::PutUntagged {
        repository: RepositoryName::parse(repository).unwrap(),
        manifest: PushedManifest {
            digest: Digest::sha256_of(seed.as_bytes()),
            media_type: crate::model::OCI_MANIFEST.to_owned(),
            size: 2,
            pushed: Timestamp::now(),
            artifact_type: None,
            subject: None,
            annotations: Default::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_order_and_round_trip() {
        let a = ChangeCursor {
            generation: 7,
            index: 0,
        };
        let b = ChangeCursor {
            generation: 7,
            index: 1,
        };
        let at = ChangeCursor::at_generation(6);
        assert!(at < a && a < b && b < ChangeCursor::at_generation(7));
        for cursor in [a, b, at] {
            assert_eq!(ChangeCursor::parse(&cursor.to_string()), Some(cursor));
        }
        assert_eq!(at.to_string(), "6");
        for bad in ["", "x", "7.x", "-1", "7.", ".3", "1e3"] {
            assert_eq!(ChangeCursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn kinds_round_trip_by_name_and_code() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
            assert_eq!(ChangeKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ChangeKind::parse("tag.moved"), None);
    }

    #[tokio::test]
    async fn a_follower_hands_out_every_record_once_and_waits_for_more() {
        async fn put(store: &crate::MemoryStore, tag: &str) {
            use crate::Store;
            let image = crate::Image {
                digest: Digest::sha256_of(tag.as_bytes()),
                media_type: crate::model::OCI_MANIFEST.to_owned(),
                platform: crate::Platform::new("linux", "amd64"),
                labels: Default::default(),
                annotations: Default::default(),
                created: None,
                config_digest: None,
                size: Some(500),
            };
            let change = crate::TagChange::Put {
                repository: RepositoryName::parse("app").unwrap(),
                tag: Tag::parse(tag).unwrap(),
                digest: image.digest.clone(),
                manifests: vec![crate::Manifest::Image(image)],
                at: Timestamp::now(),
            };
            store.apply(&change).await.unwrap();
        }
        let store = std::sync::Arc::new(crate::MemoryStore::new());
        for tag in ["a", "b", "c"] {
            put(&store, tag).await;
        }
        let mut follower = ChangeFollower::new(
            store.clone(),
            ChangeCursor::at_generation(0),
            ChangeFilter::default(),
            2,
            Duration::from_millis(5),
        );
        let mut kinds = Vec::new();
        for _ in 0..4 {
            kinds.push(follower.next().await.unwrap().kind);
        }
        assert_eq!(
            kinds,
            [
                ChangeKind::RepositoryCreated,
                ChangeKind::TagCreated,
                ChangeKind::TagCreated,
                ChangeKind::TagCreated
            ]
        );
        let waiting = tokio::spawn(async move { follower.next().await.map(|r| r.tag) });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "nothing new yet");
        put(&store, "d").await;
        let tag = waiting.await.unwrap().unwrap();
        assert_eq!(tag.as_ref().map(|t| t.as_str()), Some("d"));

        // With a shared watch, a follower that would otherwise look once a minute is
        // woken by the write.
        let dyn_store: std::sync::Arc<dyn crate::Store> = store.clone();
        let watch =
            GenerationWatch::spawn(dyn_store, Duration::from_millis(5), Duration::from_secs(60));
        let mut watching = ChangeFollower::new(
            store.clone(),
            ChangeCursor::at_generation(crate::Store::generation(&*store).await.unwrap()),
            ChangeFilter::default(),
            2,
            Duration::from_secs(60),
        )
        .with_watch(watch);
        let waiting = tokio::spawn(async move { watching.next().await.map(|r| r.tag) });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "nothing new yet");
        put(&store, "e").await;
        let tag = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("the watch woke the follower long before its 60 s poll")
            .unwrap()
            .unwrap();
        assert_eq!(tag.as_ref().map(|t| t.as_str()), Some("e"));

        // With a hub whose window holds only the newest 2 records, a follower from the
        // start of the log reads the store until it is inside the window, then the hub:
        // every record once, in order, with no gap at the hand-over.
        let dyn_store: std::sync::Arc<dyn crate::Store> = store.clone();
        let hub = ChangeHub::spawn(
            dyn_store,
            2,
            Duration::from_millis(5),
            Duration::from_secs(60),
        );
        for tag in ["f", "g", "h"] {
            put(&store, tag).await;
        }
        let mut from_start = ChangeFollower::new(
            store.clone(),
            ChangeCursor::at_generation(0),
            ChangeFilter::default(),
            3,
            Duration::from_secs(60),
        )
        .with_hub(hub);
        let mut tags = Vec::new();
        for _ in 0..9 {
            let record = tokio::time::timeout(Duration::from_secs(20), from_start.next())
                .await
                .unwrap_or_else(|_| panic!("every record is handed out at once; had {tags:?}"))
                .unwrap();
            tags.extend(record.tag.map(|t| t.to_string()));
        }
        assert_eq!(tags, ["a", "b", "c", "d", "e", "f", "g", "h"]);
        let waiting = tokio::spawn(async move { from_start.next().await.map(|r| r.tag) });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "nothing new yet");
        put(&store, "i").await;
        let tag = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("the hub woke the follower long before its 60 s poll")
            .unwrap()
            .unwrap();
        assert_eq!(tag.as_ref().map(|t| t.as_str()), Some("i"));
    }
}
