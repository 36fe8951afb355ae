//! [`MemoryStore`]: a complete [`Store`] kept in process memory.
//!
//! It is the simplest faithful implementation of the store contract: queries run the
//! reference semantics ([`IndexQuery::evaluate_repository`]) directly over its maps. It
//! serves small deployments that re-scan on start, tests, and as the yardstick the
//! conformance suite is checked against first.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use tokio::sync::RwLock;

use crate::changes::{
    ChangeCursor, ChangeFilter, ChangeKind, ChangePage, ChangeRecord, ChangeRetention, NewChange,
    PushedFacts, artifact_tagged, describe_artifacts, manifest_deleted, read_log, tag_changes,
    untagged_pushed,
};
use crate::digest::Digest;
use crate::discovery::{
    HistoryEntry, HistoryRetention, ManifestInfo, ManifestListing, RepositoryInfo,
    RepositoryListing, TagInfo, TagListing, is_reached, manifest_entries,
};
use crate::model::{
    Description, Manifest, PushedManifest, RepositorySnapshot, TagChange, check_list_entry,
};
use crate::name::{RepositoryName, Tag};
use crate::query::IndexQuery;
use crate::response::RepositoryEntry;
use crate::search::{Field, SearchDocument, words};
use crate::store::{
    Capabilities, GcStats, Generation, SearchHit, SearchPage, Store, StoreError, StoreNotReady,
};
use crate::timestamp::Timestamp;

/// Tag → digest map of one repository.
type Tags = BTreeMap<Tag, Digest>;

/// An in-memory [`Store`]. Cheap to create; everything is lost when it is dropped.
///
/// A `tokio` lock guards the state: writes validate and build their result before
/// touching the maps, so every method takes full effect or none.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    manifests: BTreeMap<Digest, Manifest>,
    repositories: BTreeMap<RepositoryName, Tags>,
    /// The times and tag history of each repository in `repositories`.
    times: BTreeMap<RepositoryName, Times>,
    generation: Generation,
    registry_url: Option<String>,
    /// The change log, oldest first, and the position retention dropped it up to.
    changes: Vec<ChangeRecord>,
    change_floor: ChangeCursor,
    /// Where deliveries to each webhook endpoint stand.
    deliveries: BTreeMap<String, ChangeCursor>,
}

/// When a repository and its tags changed, and the history of its tags.
#[derive(Debug)]
struct Times {
    created: Timestamp,
    updated: Timestamp,
    tags: BTreeMap<Tag, Timestamp>,
    history: BTreeMap<Tag, Vec<HistoryEntry>>,
    /// Manifests pushed by digest, until deleted.
    pushed: BTreeMap<Digest, PushedManifest>,
    /// Tags pointing at artifacts: each digest is one of `pushed`.
    artifact_tags: Tags,
}

impl Times {
    fn new(at: Timestamp) -> Self {
        Times {
            created: at,
            updated: at,
            tags: BTreeMap::new(),
            history: BTreeMap::new(),
            pushed: BTreeMap::new(),
            artifact_tags: Tags::new(),
        }
    }

    /// Holds `manifest` by digest, keeping the first push's facts when it already does;
    /// whether it is new.
    fn hold(&mut self, manifest: &PushedManifest) -> bool {
        if self.pushed.contains_key(&manifest.digest) {
            return false;
        }
        self.pushed
            .insert(manifest.digest.clone(), manifest.clone());
        true
    }

    /// Whether a tag pointing at an artifact reaches `digest`.
    fn artifact_reaches(&self, digest: &Digest) -> bool {
        self.artifact_tags.values().any(|d| d == digest)
    }

    /// What the repository holds of `digest` when an artifact tag points at it.
    fn artifact(&self, digest: &Digest) -> Option<PushedFacts> {
        if !self.artifact_reaches(digest) {
            return None;
        }
        self.pushed.get(digest).map(PushedFacts::from)
    }

    /// Records that `tag` now points at `digest`, since `at`.
    fn put(&mut self, tag: &Tag, digest: &Digest, at: Timestamp) {
        self.tags.insert(tag.clone(), at);
        self.history
            .entry(tag.clone())
            .or_default()
            .push(HistoryEntry {
                digest: digest.clone(),
                since: at,
            });
        self.touch(at);
    }

    fn delete(&mut self, tag: &Tag, at: Timestamp) {
        self.tags.remove(tag);
        self.touch(at);
    }

    /// The repository changed at `at` (its `updated` time never goes back).
    fn touch(&mut self, at: Timestamp) {
        self.updated = self.updated.max(at);
    }
}

impl MemoryStore {
    /// An empty store at generation 0.
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

impl State {
    /// Checks that `tag_digests` and the entries of every supplied list resolve, against
    /// stored manifests first (they are immutable) and then `supplied`. Returns the
    /// supplied manifests that are new, keyed by digest. The input itself has been
    /// validated already.
    fn admit(
        &self,
        repository: &RepositoryName,
        tag_digests: &[&Digest],
        supplied: &[Manifest],
    ) -> Result<BTreeMap<Digest, Manifest>, StoreError> {
        let mut new: BTreeMap<Digest, Manifest> = BTreeMap::new();
        for manifest in supplied {
            match self.manifests.get(manifest.digest()) {
                // First copy wins, like the stored copy wins over later ones.
                None => {
                    new.entry(manifest.digest().clone())
                        .or_insert_with(|| manifest.clone());
                }
                // A stored copy without a size (indexed before sizes were kept) takes
                // the supplied copy's size, and nothing else.
                Some(stored) if stored.size().is_none() && manifest.size().is_some() => {
                    let mut sized = stored.clone();
                    match &mut sized {
                        Manifest::Image(image) => image.size = manifest.size(),
                        Manifest::List(list) => list.size = manifest.size(),
                    }
                    new.entry(manifest.digest().clone()).or_insert(sized);
                }
                Some(_) => {}
            }
        }
        let resolve = |digest: &Digest| self.manifests.get(digest).or_else(|| new.get(digest));
        let missing = |digest: &Digest| StoreError::MissingManifest {
            repository: repository.to_string(),
            digest: digest.clone(),
        };
        let mut lists: Vec<&Manifest> = Vec::new();
        for digest in tag_digests {
            let manifest = resolve(digest).ok_or_else(|| missing(digest))?;
            lists.push(manifest);
        }
        lists.extend(new.values());
        for manifest in lists {
            let Manifest::List(list) = manifest else {
                continue;
            };
            for child in &list.entries {
                let is_list = resolve(&child.digest).map(|m| matches!(m, Manifest::List(_)));
                check_list_entry(repository, &list.digest, &child.digest, is_list)?;
            }
        }
        Ok(new)
    }

    /// The tags and times of `repository`, which is created (at `at`) when it is new.
    fn repository_mut(
        &mut self,
        repository: &RepositoryName,
        at: Timestamp,
    ) -> (&mut Tags, &mut Times) {
        let tags = self.repositories.entry(repository.clone()).or_default();
        let times = self
            .times
            .entry(repository.clone())
            .or_insert_with(|| Times::new(at));
        (tags, times)
    }

    fn bump(&mut self) -> Generation {
        self.generation += 1;
        self.generation
    }

    /// Bumps the generation and records `changes` of `repository` under it, at `at`.
    fn bump_with(
        &mut self,
        repository: &RepositoryName,
        changes: Vec<NewChange>,
        at: Timestamp,
    ) -> Generation {
        let generation = self.bump();
        for (index, change) in changes.into_iter().enumerate() {
            let media_type = change.media_type.or_else(|| {
                change
                    .digest
                    .as_ref()
                    .and_then(|d| self.manifests.get(d))
                    .map(|m| m.media_type().to_owned())
            });
            self.changes.push(ChangeRecord {
                cursor: ChangeCursor {
                    generation,
                    index: u32::try_from(index).unwrap_or(u32::MAX - 1),
                },
                time: at,
                kind: change.kind,
                repository: repository.clone(),
                tag: change.tag,
                digest: change.digest,
                previous_digest: change.previous_digest,
                media_type,
                subject: change.subject,
                artifact_type: change.artifact_type,
            });
        }
        generation
    }

    /// The search document of a repository: the images its tags reach, tags in bytewise
    /// order and list children in list order, so the result is deterministic.
    fn search_document(&self, name: &str, tags: &Tags) -> SearchDocument {
        let image = |digest: &Digest| match self.manifests.get(digest) {
            Some(Manifest::Image(image)) => Some((
                digest.clone(),
                Description::resolve(&image.labels, &image.annotations),
            )),
            _ => None,
        };
        let reached = tags
            .values()
            .flat_map(|digest| match self.manifests.get(digest) {
                Some(Manifest::List(list)) => list.entries.iter().map(|e| &e.digest).collect(),
                Some(Manifest::Image(_)) => vec![digest],
                None => Vec::new(),
            })
            .filter_map(image);
        SearchDocument::new(name, reached)
    }
}

/// The digest `tag` points at in a repository with `tags` and `times`: an image's or an
/// artifact's (a tag is one or the other).
fn tag_target(tags: &Tags, times: &Times, tag: &Tag) -> Option<Digest> {
    tags.get(tag)
        .or_else(|| times.artifact_tags.get(tag))
        .cloned()
}

/// Scores one repository for `terms`, or `None` when some term matches nowhere.
fn score(
    terms: &[String],
    name: &[String],
    title: &[String],
    description: &[String],
) -> Option<f64> {
    let hits = |term: &str, words: &[String]| words.iter().filter(|w| w.starts_with(term)).count();
    let mut total = 0.0;
    for term in terms {
        let term_score = Field::Name.weight() * hits(term, name) as f64
            + Field::Title.weight() * hits(term, title) as f64
            + Field::Description.weight() * hits(term, description) as f64;
        if term_score == 0.0 {
            return None;
        }
        total += term_score;
    }
    Some(total)
}

#[async_trait]
impl Store for MemoryStore {
    async fn replace_repository(
        &self,
        snapshot: &RepositorySnapshot,
    ) -> Result<Generation, StoreError> {
        snapshot.validate()?;
        let mut state = self.state.write().await;
        let digests: Vec<&Digest> = snapshot.tags.values().collect();
        let new = state.admit(&snapshot.name, &digests, &snapshot.manifests)?;
        state.manifests.extend(new);
        let created = !state.repositories.contains_key(&snapshot.name);
        let old_images = state
            .repositories
            .get(&snapshot.name)
            .cloned()
            .unwrap_or_default();
        let old_artifacts = state
            .times
            .get(&snapshot.name)
            .map(|t| t.artifact_tags.clone())
            .unwrap_or_default();
        let new_artifacts: Tags = snapshot
            .artifacts
            .iter()
            .map(|(tag, artifact)| (tag.clone(), artifact.digest.clone()))
            .collect();
        // A tag moving between image and artifact at the same digest changes what the
        // index answers (a write), not the tag map (no record, times kept).
        if created || old_images != snapshot.tags || old_artifacts != new_artifacts {
            let mut old = old_images;
            old.extend(old_artifacts);
            let new = snapshot.all_tags();
            let mut changes = Vec::new();
            if created {
                changes.push(NewChange::of_repository(ChangeKind::RepositoryCreated));
            }
            changes.extend(tag_changes(&old, &new));
            let at = snapshot.at;
            let times = state
                .times
                .entry(snapshot.name.clone())
                .or_insert_with(|| Times::new(at));
            for tag in old.keys().filter(|t| !new.contains_key(*t)) {
                times.delete(tag, at);
            }
            for (tag, digest) in &new {
                if old.get(tag) != Some(digest) {
                    times.put(tag, digest, at);
                }
            }
            for artifact in snapshot.artifacts.values() {
                if times.hold(artifact) {
                    changes.extend(untagged_pushed(false, true, artifact));
                }
            }
            times.artifact_tags = new_artifacts;
            describe_artifacts(&mut changes, |d| times.artifact(d));
            times.touch(at);
            state
                .repositories
                .insert(snapshot.name.clone(), snapshot.tags.clone());
            return Ok(state.bump_with(&snapshot.name, changes, at));
        }
        Ok(state.generation)
    }

    async fn remove_repository(&self, name: &RepositoryName) -> Result<Generation, StoreError> {
        let mut state = self.state.write().await;
        if state.repositories.remove(name).is_some() {
            state.times.remove(name);
            let changes = vec![NewChange::of_repository(ChangeKind::RepositoryDeleted)];
            return Ok(state.bump_with(name, changes, Timestamp::now()));
        }
        Ok(state.generation)
    }

    async fn apply(&self, change: &TagChange) -> Result<Generation, StoreError> {
        change.validate()?;
        let mut state = self.state.write().await;
        match change {
            TagChange::Put {
                repository,
                tag,
                digest,
                manifests,
                at,
            } => {
                let new = state.admit(repository, &[digest], manifests)?;
                state.manifests.extend(new);
                let created = !state.repositories.contains_key(repository);
                let (tags, times) = state.repository_mut(repository, *at);
                // A tag that pointed at an artifact now points at an image.
                let before = tag_target(tags, times, tag);
                if created || before.as_ref() != Some(digest) {
                    let moved = before.as_ref() != Some(digest);
                    let mut changes = Vec::new();
                    if created {
                        changes.push(NewChange::of_repository(ChangeKind::RepositoryCreated));
                    }
                    changes.extend(NewChange::of_tag(tag, before.as_ref(), Some(digest)));
                    tags.insert(tag.clone(), digest.clone());
                    times.artifact_tags.remove(tag);
                    if moved {
                        times.put(tag, digest, *at);
                    }
                    return Ok(state.bump_with(repository, changes, *at));
                }
            }
            TagChange::DeleteTag {
                repository,
                tag,
                at,
            } => {
                let removed = state
                    .repositories
                    .get_mut(repository)
                    .and_then(|tags| tags.remove(tag))
                    .or_else(|| {
                        let times = state.times.get_mut(repository)?;
                        times.artifact_tags.remove(tag)
                    });
                if let Some(previous) = removed {
                    if let Some(times) = state.times.get_mut(repository) {
                        times.delete(tag, *at);
                    }
                    let changes = NewChange::of_tag(tag, Some(&previous), None);
                    return Ok(state.bump_with(repository, changes.into_iter().collect(), *at));
                }
            }
            TagChange::PutUntagged {
                repository,
                manifest,
            } => {
                let at = manifest.pushed;
                let created = !state.repositories.contains_key(repository);
                let known = state
                    .times
                    .get(repository)
                    .is_some_and(|t| t.pushed.contains_key(&manifest.digest));
                if !known {
                    let empty = Tags::new();
                    let tags = state.repositories.get(repository).unwrap_or(&empty);
                    let reached =
                        is_reached(&manifest.digest, tags.values(), |d| state.manifests.get(d))
                            || state
                                .times
                                .get(repository)
                                .is_some_and(|t| t.artifact_reaches(&manifest.digest));
                    let changes = untagged_pushed(created, reached, manifest);
                    if created {
                        state.repositories.insert(repository.clone(), Tags::new());
                    }
                    let times = state
                        .times
                        .entry(repository.clone())
                        .or_insert_with(|| Times::new(at));
                    times.hold(manifest);
                    times.touch(at);
                    return Ok(state.bump_with(repository, changes, at));
                }
            }
            TagChange::PutArtifact {
                repository,
                tag,
                manifest,
                at,
            } => {
                let created = !state.repositories.contains_key(repository);
                let (tags, times) = state.repository_mut(repository, *at);
                let before = tag_target(tags, times, tag);
                if before.as_ref() != Some(&manifest.digest) {
                    // A manifest held already keeps its facts.
                    let held = times.hold(manifest);
                    let mut changes =
                        artifact_tagged(created, held, tag, before.as_ref(), manifest);
                    tags.remove(tag);
                    times
                        .artifact_tags
                        .insert(tag.clone(), manifest.digest.clone());
                    describe_artifacts(&mut changes, |d| times.artifact(d));
                    times.put(tag, &manifest.digest, *at);
                    return Ok(state.bump_with(repository, changes, *at));
                }
            }
            TagChange::DeleteManifest {
                repository,
                digest,
                at,
            } => {
                let mut removed = Vec::new();
                let mut reached = false;
                let fields = &mut *state;
                if let Some(tags) = fields.repositories.get_mut(repository) {
                    reached = is_reached(digest, tags.values(), |d| fields.manifests.get(d));
                    removed = tags
                        .iter()
                        .filter(|(_, d)| *d == digest)
                        .map(|(t, _)| t.clone())
                        .collect();
                    tags.retain(|_, d| d != digest);
                }
                if let Some(times) = fields.times.get_mut(repository) {
                    reached |= times.artifact_reaches(digest);
                    removed.extend(
                        times
                            .artifact_tags
                            .iter()
                            .filter(|(_, d)| *d == digest)
                            .map(|(t, _)| t.clone()),
                    );
                    times.artifact_tags.retain(|_, d| d != digest);
                }
                let pushed = state
                    .times
                    .get_mut(repository)
                    .and_then(|t| t.pushed.remove(digest));
                if !removed.is_empty() || pushed.is_some() {
                    if let Some(times) = state.times.get_mut(repository) {
                        for tag in &removed {
                            times.delete(tag, *at);
                        }
                        times.touch(*at);
                    }
                    let facts = pushed.as_ref().map(PushedFacts::from);
                    let changes = manifest_deleted(digest, removed, facts.as_ref(), reached);
                    return Ok(state.bump_with(repository, changes, *at));
                }
            }
        }
        Ok(state.generation)
    }

    async fn repositories(&self) -> Result<Vec<RepositoryName>, StoreError> {
        Ok(self
            .state
            .read()
            .await
            .repositories
            .keys()
            .cloned()
            .collect())
    }

    async fn repository_tags(&self, name: &RepositoryName) -> Result<Option<Tags>, StoreError> {
        Ok(self.state.read().await.repositories.get(name).cloned())
    }

    async fn known_manifests(&self, digests: &[Digest]) -> Result<BTreeSet<Digest>, StoreError> {
        let state = self.state.read().await;
        let sized = |digest: &Digest| {
            state
                .manifests
                .get(digest)
                .is_some_and(|m| m.size().is_some())
        };
        let complete = |digest: &Digest| match state.manifests.get(digest) {
            Some(manifest) => sized(digest) && manifest.children().all(sized),
            None => false,
        };
        Ok(digests.iter().filter(|d| complete(d)).cloned().collect())
    }

    async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>, StoreError> {
        Ok(self.state.read().await.manifests.get(digest).cloned())
    }

    async fn query(&self, query: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError> {
        let state = self.state.read().await;
        let candidates: Box<dyn Iterator<Item = (&RepositoryName, &Tags)>> =
            match query.repositories() {
                Some(names) => Box::new(
                    names
                        .iter()
                        .filter_map(|n| state.repositories.get_key_value(n.as_str())),
                ),
                None => Box::new(state.repositories.iter()),
            };
        // BTreeMap/BTreeSet iteration over names is bytewise, the order the index needs.
        Ok(candidates
            .filter_map(|(name, tags)| {
                query.evaluate_repository(name, tags, |d| state.manifests.get(d))
            })
            .collect())
    }

    async fn list_repositories(
        &self,
        listing: &RepositoryListing,
    ) -> Result<Vec<RepositoryInfo>, StoreError> {
        listing.listing.validate()?;
        let state = self.state.read().await;
        let all = state.repositories.iter().filter_map(|(name, tags)| {
            let times = state.times.get(name)?;
            Some(RepositoryInfo {
                name: name.clone(),
                tags: (tags.len() + times.artifact_tags.len()) as u64,
                created: times.created,
                updated: times.updated,
            })
        });
        Ok(listing.select(all))
    }

    async fn list_tags(
        &self,
        repository: &RepositoryName,
        listing: &TagListing,
    ) -> Result<Option<Vec<TagInfo>>, StoreError> {
        listing.listing.validate()?;
        let state = self.state.read().await;
        let (Some(tags), Some(times)) = (
            state.repositories.get(repository),
            state.times.get(repository),
        ) else {
            return Ok(None);
        };
        let updated = |tag: &Tag| times.tags.get(tag).copied().unwrap_or(times.created);
        let images = tags.iter().filter_map(|(tag, digest)| {
            let manifest = state.manifests.get(digest)?;
            Some(TagInfo {
                tag: tag.clone(),
                digest: digest.clone(),
                media_type: manifest.media_type().to_owned(),
                updated: updated(tag),
                created: match manifest {
                    Manifest::Image(image) => image.created.clone(),
                    Manifest::List(_) => None,
                },
                artifact_type: None,
            })
        });
        let artifacts = times.artifact_tags.iter().filter_map(|(tag, digest)| {
            let artifact = times.pushed.get(digest)?;
            Some(TagInfo {
                tag: tag.clone(),
                digest: digest.clone(),
                media_type: artifact.media_type.clone(),
                updated: updated(tag),
                created: None,
                artifact_type: artifact.artifact_type.clone(),
            })
        });
        Ok(Some(listing.select(images.chain(artifacts))))
    }

    async fn list_manifests(
        &self,
        repository: &RepositoryName,
        listing: &ManifestListing,
    ) -> Result<Option<Vec<ManifestInfo>>, StoreError> {
        let state = self.state.read().await;
        let (Some(tags), Some(times)) = (
            state.repositories.get(repository),
            state.times.get(repository),
        ) else {
            return Ok(None);
        };
        let all: Vec<ManifestInfo> =
            manifest_entries(tags, &times.artifact_tags, times.pushed.values(), |d| {
                state.manifests.get(d)
            });
        Ok(Some(listing.select(all)))
    }

    async fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<PushedManifest>>, StoreError> {
        let state = self.state.read().await;
        let Some(times) = state.times.get(repository) else {
            return Ok(None);
        };
        // `pushed` is keyed by digest: the answer comes in digest order.
        Ok(Some(
            times
                .pushed
                .values()
                .filter(|m| m.subject.as_ref() == Some(subject))
                .filter(|m| artifact_type.is_none_or(|t| m.artifact_type.as_deref() == Some(t)))
                .cloned()
                .collect(),
        ))
    }

    async fn tag_history(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let state = self.state.read().await;
        Ok(state
            .times
            .get(repository)
            .map(|times| times.history.get(tag).cloned().unwrap_or_default()))
    }

    async fn prune_history(
        &self,
        retention: &HistoryRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut state = self.state.write().await;
        let mut dropped = 0;
        for times in state.times.values_mut() {
            for history in times.history.values_mut() {
                let before = history.len();
                retention.keep(history, now);
                dropped += (before - history.len()) as u64;
            }
        }
        if dropped > 0 {
            state.bump();
        }
        Ok(dropped)
    }

    async fn changes_since(
        &self,
        after: ChangeCursor,
        filter: &ChangeFilter,
        limit: usize,
    ) -> Result<ChangePage, StoreError> {
        let state = self.state.read().await;
        // Records are appended in cursor order: start after `after` by binary search.
        let start = state.changes.partition_point(|r| r.cursor <= after);
        Ok(read_log(
            &state.changes[start..],
            after,
            filter,
            limit,
            state.change_floor,
        ))
    }

    async fn prune_changes(
        &self,
        retention: &ChangeRetention,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut state = self.state.write().await;
        let over = state.changes.len().saturating_sub(retention.max_records);
        let horizon = retention.horizon(now);
        let old = state
            .changes
            .iter()
            .take_while(|r| horizon.is_some_and(|h| r.time < h))
            .count();
        let dropped = over.max(old);
        if dropped > 0 {
            state.change_floor = state.changes[dropped - 1].cursor;
            state.changes.drain(..dropped);
        }
        Ok(dropped as u64)
    }

    async fn delivery_cursor(&self, endpoint: &str) -> Result<Option<ChangeCursor>, StoreError> {
        Ok(self.state.read().await.deliveries.get(endpoint).copied())
    }

    async fn set_delivery_cursor(
        &self,
        endpoint: &str,
        cursor: ChangeCursor,
    ) -> Result<(), StoreError> {
        let mut state = self.state.write().await;
        state.deliveries.insert(endpoint.to_owned(), cursor);
        Ok(())
    }

    async fn search(&self, text: &str, offset: u64, limit: u64) -> Result<SearchPage, StoreError> {
        let terms: Vec<String> = words(text).collect();
        if terms.is_empty() {
            return Ok(SearchPage::default());
        }
        let state = self.state.read().await;
        let mut hits = Vec::new();
        for (name, tags) in &state.repositories {
            let doc = state.search_document(name, tags);
            let found = score(
                &terms,
                &doc.words(Field::Name),
                &doc.words(Field::Title),
                &doc.words(Field::Description),
            );
            if let Some(score) = found {
                hits.push(SearchHit {
                    repository: name.to_string(),
                    title: doc.title().map(str::to_owned),
                    description: doc.description().map(str::to_owned),
                    score,
                });
            }
        }
        // Scores are sums of small integers times exact weights: never NaN.
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.repository.cmp(&b.repository))
        });
        let total = hits.len() as u64;
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let hits = hits.into_iter().skip(offset).take(limit).collect();
        Ok(SearchPage { total, hits })
    }

    async fn generation(&self) -> Result<Generation, StoreError> {
        Ok(self.state.read().await.generation)
    }

    async fn registry_url(&self) -> Result<Option<String>, StoreError> {
        Ok(self.state.read().await.registry_url.clone())
    }

    async fn set_registry_url(&self, url: &str) -> Result<Generation, StoreError> {
        let mut state = self.state.write().await;
        if state.registry_url.as_deref() == Some(url) {
            return Ok(state.generation);
        }
        state.registry_url = Some(url.to_owned());
        Ok(state.bump())
    }

    async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        let mut state = self.state.write().await;
        let mut live: BTreeSet<Digest> = BTreeSet::new();
        for digest in state.repositories.values().flat_map(|tags| tags.values()) {
            if live.insert(digest.clone())
                && let Some(manifest) = state.manifests.get(digest)
            {
                live.extend(manifest.children().cloned());
            }
        }
        let before = state.manifests.len();
        state.manifests.retain(|digest, _| live.contains(digest));
        Ok(GcStats {
            manifests_removed: (before - state.manifests.len()) as u64,
        })
    }

    /// Always ready: the data is in this process's memory, so reads and writes cannot be
    /// refused by anything outside it.
    async fn readiness(&self) -> Result<(), StoreNotReady> {
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Image, Platform};

    #[test]
    fn score_needs_every_term_and_weighs_names_most() {
        let w = |s: &str| words(s).collect::<Vec<_>>();
        let terms = w("calc tool");
        assert_eq!(score(&terms, &w("calc"), &[], &w("a tool")), Some(4.0));
        assert_eq!(score(&terms, &w("calc"), &[], &[]), None);
        let name = score(&w("calc"), &w("calculator"), &[], &[]);
        let title = score(&w("calc"), &[], &w("calculator"), &[]);
        let description = score(&w("calc"), &[], &[], &w("calculator"));
        assert!(name > title && title > description);
    }

    #[tokio::test]
    async fn empty_media_type_is_invalid() {
        let store = MemoryStore::new();
        let image = Image {
            digest: Digest::sha256_of(b"x"),
            media_type: String::new(),
            platform: Platform::new("linux", "amd64"),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            created: None,
            config_digest: None,
            size: Some(500),
        };
        let snapshot = RepositorySnapshot {
            artifacts: Default::default(),
            name: RepositoryName::parse("app").unwrap(),
            tags: BTreeMap::from([(Tag::parse("latest").unwrap(), image.digest.clone())]),
            manifests: vec![Manifest::Image(image)],
            at: Timestamp::from_millis(1),
        };
        let result = store.replace_repository(&snapshot).await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
        assert_eq!(store.generation().await.unwrap(), 0);
        assert!(store.repositories().await.unwrap().is_empty());
    }
}
