//! Full scans and single-repository scans.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::stream::{self, StreamExt};

use super::fetch::{Resolved, Tally, pushed_manifest};
use super::referrers::tagged_artifact;
use super::{
    Indexer, IndexerError, RepositoryError, RepositoryFailure, RepositoryOutcome, ScanProgress,
    ScanReport, lock,
};
use crate::digest::Digest;
use crate::discovery::{ListOrder, ManifestInfo, ManifestListing, TagListing, Untagged};
use crate::model::{PushedManifest, RepositorySnapshot, TagChange};
use crate::name::{RepositoryName, Tag};
use crate::registry::content::ReferrerTag;
use crate::registry::{FetchedManifest, Listing, ManifestCheck, RegistryError};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

/// What reading one listed tag found.
enum TagRead {
    /// Its digest, with the manifest body when the answer carried it.
    Found(Digest, Option<FetchedManifest>),
    /// Deleted between listing and reading.
    Gone,
    /// The registry's answer is unusable however often it is asked; the error.
    Unreadable(String),
}

impl Indexer {
    /// Reads one listed tag. A repository new to the store needs every manifest body
    /// anyway: its tags are read with GET, which saves one request per tag on a first
    /// scan. A tag the store knows is checked against its digest (`304` when unchanged,
    /// the new body when it moved); a tag new to a known repository is read with HEAD,
    /// since its manifest is often one the store already has under another tag.
    async fn read_tag(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        previous: Option<&BTreeMap<Tag, Digest>>,
    ) -> Result<TagRead, RegistryError> {
        let Some(previous) = previous else {
            return match self.client.get_manifest(name, tag).await {
                Ok(m) => Ok(TagRead::Found(m.digest.clone(), Some(m))),
                Err(e) if e.is_not_found() => Ok(TagRead::Gone),
                Err(e) => Err(e),
            };
        };
        Ok(match previous.get(tag) {
            Some(known) => match self.client.check_manifest(name, tag, known).await? {
                ManifestCheck::Unchanged => TagRead::Found(known.clone(), None),
                ManifestCheck::Moved { digest, manifest } => TagRead::Found(digest, manifest),
                ManifestCheck::Missing => TagRead::Gone,
            },
            None => match self.client.head_manifest(name, tag).await? {
                Some((digest, _)) => TagRead::Found(digest, None),
                None => TagRead::Gone,
            },
        })
    }

    /// Scans the whole registry into the store. See the module docs for the steps.
    ///
    /// One repository's failure never aborts the scan: it is reported in
    /// [`ScanReport::repositories_failed`] and left in the store as it was. The call
    /// fails only when the list of repositories cannot be had at all, or when the
    /// registry becomes [unreachable](RegistryError::Unreachable) (its retry budget is
    /// spent): then no further repository is started, nothing is removed, and the scan
    /// fails with that one error. Concurrent calls run one after the other.
    pub async fn full_scan(&self, progress: &dyn ScanProgress) -> Result<ScanReport, IndexerError> {
        let _one_at_a_time = self.scan_lock.lock().await;
        let status = &self.status;
        status.scanning.store(true, Ordering::Relaxed);
        status.repositories_done.store(0, Ordering::Relaxed);
        status.repositories_total.store(0, Ordering::Relaxed);
        let result = self.full_scan_inner(progress).await;
        status.scanning.store(false, Ordering::Relaxed);
        match &result {
            Ok(report) => {
                status.first_scan_done.store(true, Ordering::Relaxed);
                status.full_scans.fetch_add(1, Ordering::Relaxed);
                *lock(&status.last_scan_duration) = Some(report.duration);
                *lock(&status.last_scan_finished_at) = Some(std::time::SystemTime::now());
                *lock(&status.last_scan_error) =
                    report.repositories_failed.first().map(|failure| {
                        format!(
                            "{} of {} repositories failed; first: {failure}",
                            report.repositories_failed.len(),
                            report.repositories_total
                        )
                    });
            }
            Err(e) => *lock(&status.last_scan_error) = Some(e.to_string()),
        }
        result
    }

    async fn full_scan_inner(
        &self,
        progress: &dyn ScanProgress,
    ) -> Result<ScanReport, IndexerError> {
        let started = Instant::now();
        tracing::info!(
            registry = %crate::registry::redacted(self.client.base_url()),
            "full scan started"
        );
        let scan_seq = self.event_seq();
        let (listing, catalog_complete) = match self.client.catalog().await {
            Ok(listing) => (listing, true),
            Err(e @ RegistryError::CatalogUnavailable { .. }) => {
                if self.client.configured_repositories().is_empty() {
                    return Err(IndexerError::NoRepositories(e));
                }
                tracing::info!(error = %e, "catalog unavailable; scanning the configured repositories");
                let configured = Listing {
                    valid: self.client.configured_repositories().to_vec(),
                    invalid: Vec::new(),
                };
                (configured, false)
            }
            Err(e) => return Err(e.into()),
        };
        let mut report = ScanReport {
            catalog_complete,
            ..ScanReport::default()
        };
        let mut seen: HashSet<RepositoryName> = HashSet::with_capacity(listing.valid.len());
        let mut valid = Vec::with_capacity(listing.valid.len());
        for name in listing.valid {
            if seen.insert(name.clone()) {
                valid.push(name);
            }
        }
        let mut invalid_seen: HashSet<String> = HashSet::new();
        for (name, source) in listing.invalid {
            if invalid_seen.insert(name.clone()) {
                report.repositories_failed.push(RepositoryFailure {
                    repository: name.clone(),
                    error: RepositoryError::InvalidName { name, source },
                });
            }
        }
        report.repositories_total = (valid.len() + report.repositories_failed.len()) as u64;
        self.status
            .repositories_total
            .store(report.repositories_total, Ordering::Relaxed);
        progress.total_repositories(report.repositories_total);

        // Once the registry is unreachable, no further repository is started and the
        // scan fails with that one error instead of reporting every repository.
        let stop = AtomicBool::new(false);
        let stop = &stop;
        let mut unreachable: Option<IndexerError> = None;
        let mut last_progress_log = Instant::now();
        let mut done: u64 = report.repositories_failed.len() as u64;
        let mut outcomes = stream::iter(valid)
            .map(|name| async move {
                if stop.load(Ordering::Relaxed) {
                    return (name, None);
                }
                let outcome = self.scan_repository(&name).await;
                (name, Some(outcome))
            })
            .buffer_unordered(self.cfg.concurrency);
        while let Some((name, outcome)) = outcomes.next().await {
            let Some(outcome) = outcome else {
                continue;
            };
            self.status
                .repositories_done
                .fetch_add(1, Ordering::Relaxed);
            done += 1;
            match outcome {
                Ok(o) => {
                    report.repositories_scanned += 1;
                    report.manifests_fetched += o.manifests_fetched;
                    report.blobs_fetched += o.blobs_fetched;
                    report.tags_seen += o.tags_seen;
                    if o.removed {
                        report.repositories_removed.push(name.clone());
                    }
                    progress.repository_done(&name, o.manifests_fetched);
                    if !o.unreadable.is_empty() {
                        report.repositories_failed.push(RepositoryFailure {
                            repository: name.to_string(),
                            error: RepositoryError::TagsUnreadable { tags: o.unreadable },
                        });
                    }
                }
                Err(e) => match registry_unreachable(e) {
                    Ok(e) => {
                        stop.store(true, Ordering::Relaxed);
                        unreachable.get_or_insert(e);
                    }
                    Err(e) => {
                        tracing::warn!(repository = %name, error = %e, "repository scan failed");
                        progress.repository_done(&name, 0);
                        report.repositories_failed.push(RepositoryFailure {
                            repository: name.to_string(),
                            error: RepositoryError::from_scan(&name, e),
                        });
                    }
                },
            }
            if last_progress_log.elapsed() >= self.cfg.progress_log_interval {
                last_progress_log = Instant::now();
                tracing::info!(
                    done,
                    total = report.repositories_total,
                    tags = report.tags_seen,
                    failed = report.repositories_failed.len(),
                    elapsed = ?started.elapsed(),
                    "full scan progress: {done} of {} repositories",
                    report.repositories_total
                );
            }
        }
        drop(outcomes);
        if let Some(e) = unreachable {
            // Nothing is removed: a scan that could not reach the registry lists nothing.
            return Err(e);
        }

        if catalog_complete {
            for name in self.store.repositories().await? {
                if seen.contains(&name) {
                    continue;
                }
                let _guard = self.write_guard(&name).await;
                if self.touched_since(&name, scan_seq) {
                    // Created by an event after the catalog was read.
                    continue;
                }
                self.store.remove_repository(&name).await?;
                tracing::info!(repository = %name, "repository gone from the registry; removed");
                report.repositories_removed.push(name);
            }
        }
        report.repositories_removed.sort();
        report.duration = started.elapsed();
        tracing::info!(
            repositories = report.repositories_total,
            tags = report.tags_seen,
            failed = report.repositories_failed.len(),
            removed = report.repositories_removed.len(),
            manifests_fetched = report.manifests_fetched,
            duration = ?report.duration,
            "full scan finished"
        );
        Ok(report)
    }

    /// Re-reads one repository from the registry and replaces it in the store. A
    /// repository the registry does not know (404) is removed from the store.
    pub async fn scan_repository(
        &self,
        name: &RepositoryName,
    ) -> Result<RepositoryOutcome, IndexerError> {
        self.scan_repository_inner(name)
            .await
            .map_err(|source| IndexerError::Repository {
                repository: name.to_string(),
                source: Box::new(source),
            })
    }

    async fn scan_repository_inner(
        &self,
        name: &RepositoryName,
    ) -> Result<RepositoryOutcome, IndexerError> {
        let mut outcome = RepositoryOutcome::new(name.clone());
        let since = self.event_seq();
        let tags = match self.client.tags(name).await {
            Ok(tags) => tags,
            Err(e) if e.is_not_found() => {
                // A repository holding only manifests pushed by digest has no tags
                // list; it stays while the registry still serves one of them.
                let (gone, served) = self.check_untagged(name).await?;
                let _guard = self.write_guard(name).await;
                if self.touched_since(name, since) {
                    outcome.superseded = true;
                    self.queue.schedule(name);
                    return Ok(outcome);
                }
                if served > 0 {
                    self.forget_untagged(name, gone).await?;
                    let snapshot = RepositorySnapshot {
                        artifacts: Default::default(),
                        name: name.clone(),
                        tags: BTreeMap::new(),
                        manifests: Vec::new(),
                        at: Timestamp::now(),
                    };
                    self.store.replace_repository(&snapshot).await?;
                } else if self.store.repository_tags(name).await?.is_some() {
                    self.store.remove_repository(name).await?;
                    outcome.removed = true;
                }
                return Ok(outcome);
            }
            Err(e) => return Err(e.into()),
        };
        outcome.tags_seen = tags.len() as u64;
        for (tag, _) in &tags.invalid {
            tracing::warn!(repository = %name, tag = %tag, "registry lists an invalid tag; skipped");
        }
        let tags: Vec<Tag> = tags.valid;
        // What the store has decides how each tag is read (see `read_tag`), and what an
        // unreadable tag keeps.
        let previous = self.store.repository_tags(name).await?;
        let previous = previous.as_ref();
        let listed: Vec<(Tag, TagRead)> = stream::iter(tags)
            .map(|tag| async move {
                let read = self.read_tag(name, &tag, previous).await;
                match read {
                    Ok(read) => Ok((tag, read)),
                    Err(e) if e.is_permanent() => Ok((tag, TagRead::Unreadable(e.to_string()))),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(self.cfg.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, RegistryError>>()?;
        let mut total = Tally::default();
        let mut tags: BTreeMap<Tag, Digest> = BTreeMap::new();
        let mut prefetched: HashMap<Digest, FetchedManifest> = HashMap::new();
        let mut unreadable: BTreeMap<Tag, String> = BTreeMap::new();
        // Referrers tag schema indexes (`sha256-<hex>`, see the `referrers` module), with
        // their digests and the bodies read for them.
        let mut referrer_tags: Vec<(ReferrerTag, Digest)> = Vec::new();
        let mut referrer_bodies: HashMap<Digest, FetchedManifest> = HashMap::new();
        // Cosign attachment tags (`sha256-<hex>.<name>`): artifacts, whatever their
        // placeholder config says.
        let mut attachments: Vec<(Tag, Digest, Option<FetchedManifest>)> = Vec::new();
        for (tag, read) in listed {
            match read {
                TagRead::Found(digest, body) => {
                    if body.is_some() {
                        total.manifests += 1;
                    }
                    match ReferrerTag::parse(tag.as_str()) {
                        Some(ReferrerTag::Attachment { .. }) => {
                            attachments.push((tag, digest, body));
                            continue;
                        }
                        Some(index @ ReferrerTag::Index { .. }) => {
                            if let Some(body) = &body {
                                referrer_bodies.insert(digest.clone(), body.clone());
                            }
                            referrer_tags.push((index, digest.clone()));
                        }
                        None => {}
                    }
                    if let Some(body) = body {
                        prefetched.insert(digest.clone(), body);
                    }
                    tags.insert(tag, digest);
                }
                // Deleted between listing and reading.
                TagRead::Gone => outcome.skipped += 1,
                TagRead::Unreadable(error) => {
                    unreadable.insert(tag, error);
                }
            }
        }

        let mut artifacts: BTreeMap<Tag, PushedManifest> = BTreeMap::new();
        let read_attachments: Vec<_> = stream::iter(attachments)
            .map(|(tag, digest, body)| async move {
                let read = self.read_artifact(name, &digest, body).await;
                (tag, read)
            })
            .buffer_unordered(self.cfg.concurrency)
            .collect()
            .await;
        for (tag, read) in read_attachments {
            match read {
                Ok((Some(artifact), requests)) => {
                    total.manifests += requests;
                    artifacts.insert(tag.clone(), tagged_artifact(&tag, artifact));
                }
                // Gone since the listing.
                Ok((None, requests)) => {
                    total.manifests += requests;
                    outcome.skipped += 1;
                }
                Err(e) if e.is_permanent() => {
                    unreadable.insert(tag, e.to_string());
                }
                Err(e) => return Err(e.into()),
            }
        }
        for attempt in 0..2 {
            let digests: Vec<Digest> = tags
                .values()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let known = self.store.known_manifests(&digests).await?;
            let wanted: Vec<Digest> = digests.into_iter().filter(|d| !known.contains(d)).collect();
            let work: Vec<_> = wanted
                .into_iter()
                .map(|d| {
                    let body = prefetched.remove(&d);
                    (d, body)
                })
                .collect();
            let resolved: Vec<_> = stream::iter(work)
                .map(|(digest, body)| async move {
                    let r = self.resolve(name, &digest, body).await;
                    (digest, r)
                })
                .buffer_unordered(self.cfg.concurrency)
                .collect()
                .await;
            let mut manifests = Vec::new();
            let mut found_artifacts: HashMap<Digest, PushedManifest> = HashMap::new();
            let mut dropped: HashSet<Digest> = HashSet::new();
            let mut failed: HashMap<Digest, String> = HashMap::new();
            for (digest, result) in resolved {
                let (resolved, tally) = match result {
                    Ok(r) => r,
                    Err(e) if e.is_permanent() => {
                        failed.insert(digest, e.to_string());
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                total.add(tally);
                match resolved {
                    Resolved::Found(found) => manifests.extend(found),
                    Resolved::Artifact(artifact) => {
                        found_artifacts.insert(digest, artifact);
                    }
                    Resolved::Unsupported | Resolved::Vanished => {
                        dropped.insert(digest);
                    }
                }
            }
            // Tags pointing at artifacts move to the snapshot's artifact tags.
            tags.retain(|tag, d| match found_artifacts.get(d) {
                Some(artifact) => {
                    artifacts.insert(tag.clone(), tagged_artifact(tag, artifact.clone()));
                    false
                }
                None => true,
            });
            let before = tags.len();
            tags.retain(|_, d| !dropped.contains(d));
            total.skipped += (before - tags.len()) as u64;
            tags.retain(|tag, d| match failed.get(d) {
                Some(error) => {
                    unreadable.insert(tag.clone(), error.clone());
                    false
                }
                None => true,
            });
            // An unreadable tag keeps what the store had for it (never lost because of
            // an error), image or artifact; one the store did not have stays out.
            for tag in unreadable.keys() {
                if let Some(known) = previous.and_then(|p| p.get(tag)) {
                    tags.insert(tag.clone(), known.clone());
                }
            }
            let unknown = unreadable
                .keys()
                .any(|tag| previous.is_some_and(|p| !p.contains_key(tag)));
            if unknown {
                for (tag, artifact) in self.stored_artifact_tags(name).await? {
                    if unreadable.contains_key(&tag) {
                        artifacts.insert(tag, artifact);
                    }
                }
            }
            if previous.is_none()
                && tags.is_empty()
                && let Some((tag, error)) = unreadable.iter().next()
            {
                return Err(IndexerError::UnreadableTag {
                    tag: tag.clone(),
                    error: error.clone(),
                });
            }
            let snapshot = RepositorySnapshot {
                artifacts: artifacts.clone(),
                name: name.clone(),
                tags: tags.clone(),
                manifests,
                at: Timestamp::now(),
            };
            let _guard = self.write_guard(name).await;
            if self.touched_since(name, since) {
                outcome.superseded = true;
                self.queue.schedule(name);
                break;
            }
            match self.store.replace_repository(&snapshot).await {
                Ok(_) => {
                    outcome.tags_indexed = tags.len() as u64;
                    drop(_guard);
                    let (gone, _) = self.check_untagged(name).await?;
                    let _guard = self.write_guard(name).await;
                    if !self.touched_since(name, since) {
                        self.forget_untagged(name, gone).await?;
                    }
                    drop(_guard);
                    total.manifests += self
                        .index_referrer_tags(
                            name,
                            std::mem::take(&mut referrer_tags),
                            std::mem::take(&mut referrer_bodies),
                            since,
                        )
                        .await?;
                    break;
                }
                Err(StoreError::MissingManifest { digest, .. }) if attempt == 0 => {
                    // Garbage collection removed a manifest between `known_manifests`
                    // and the write; the second round fetches it again.
                    tracing::debug!(repository = %name, %digest, "manifest collected during scan; refetching");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (tag, error) in &unreadable {
            tracing::warn!(
                repository = %name,
                tag = %tag,
                error,
                "tag's manifest is unusable; the tag keeps its indexed state"
            );
        }
        outcome.unreadable = unreadable.into_iter().collect();
        outcome.manifests_fetched = total.manifests;
        outcome.blobs_fetched = total.blobs;
        outcome.skipped += total.skipped;
        self.status
            .manifests_fetched
            .fetch_add(total.manifests, Ordering::Relaxed);
        self.status
            .blobs_fetched
            .fetch_add(total.blobs, Ordering::Relaxed);
        Ok(outcome)
    }
}

impl Indexer {
    /// What manifest `digest` of `name` is as an artifact, from `body` when the caller
    /// holds it, else as remembered, else read with a `GET` (counted in the second
    /// value); `None` when the registry no longer has it.
    pub(super) async fn read_artifact(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        body: Option<FetchedManifest>,
    ) -> Result<(Option<PushedManifest>, u64), RegistryError> {
        if body.is_none()
            && let Some(known) = self.known_artifact(digest)
        {
            return Ok((Some(known), 0));
        }
        let (fetched, requests) = match body {
            Some(body) => (body, 0),
            None => match self.client.get_manifest(name, digest.as_str()).await {
                Ok(fetched) => (fetched, 1),
                Err(e) if e.is_not_found() => return Ok((None, 1)),
                Err(e) => return Err(e),
            },
        };
        let artifact = pushed_manifest(fetched, Timestamp::now());
        self.remember_artifact(artifact.clone());
        Ok((Some(artifact), requests))
    }

    /// The artifact tags the store holds for `name`, each with what the repository holds
    /// of its artifact as far as the tag listing tells it. Writing one back leaves the
    /// held artifact as it is (the first push's facts stay).
    async fn stored_artifact_tags(
        &self,
        name: &RepositoryName,
    ) -> Result<Vec<(Tag, PushedManifest)>, IndexerError> {
        let every_tag = TagListing::all(crate::discovery::Listing::first(
            ListOrder::Name,
            usize::MAX,
        ));
        let listed = self.store.list_tags(name, &every_tag).await?;
        Ok(listed
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.artifact_type.is_some())
            .map(|t| {
                let artifact = PushedManifest {
                    digest: t.digest,
                    media_type: t.media_type,
                    size: 0,
                    pushed: t.updated,
                    artifact_type: t.artifact_type,
                    subject: None,
                    annotations: BTreeMap::new(),
                };
                (t.tag, artifact)
            })
            .collect())
    }

    /// Asks the registry (`HEAD` by digest) about every manifest the store holds as
    /// untagged in `name`: returns those it no longer serves, and how many it does.
    async fn check_untagged(
        &self,
        name: &RepositoryName,
    ) -> Result<(Vec<Digest>, usize), IndexerError> {
        let mut untagged = Vec::new();
        let mut listing = ManifestListing {
            untagged: Untagged::Only,
            after: None,
            limit: UNTAGGED_PAGE,
        };
        loop {
            let page = self
                .store
                .list_manifests(name, &listing)
                .await?
                .unwrap_or_default();
            let full = page.len() == UNTAGGED_PAGE;
            listing.after = page.last().map(ManifestInfo::position);
            untagged.extend(page.into_iter().map(|m| m.digest));
            if !full {
                break;
            }
        }
        let checked: Vec<(Digest, bool)> = stream::iter(untagged)
            .map(|digest| async move {
                let served = self.client.head_manifest(name, digest.as_str()).await;
                served.map(|head| (digest, head.is_some()))
            })
            .buffer_unordered(self.cfg.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, RegistryError>>()?;
        let served = checked.iter().filter(|(_, served)| *served).count();
        let gone = checked
            .into_iter()
            .filter(|(_, served)| !served)
            .map(|(digest, _)| digest)
            .collect();
        Ok((gone, served))
    }

    /// Removes untagged manifests the registry no longer serves from `name`. The caller
    /// holds the repository's write guard.
    async fn forget_untagged(
        &self,
        name: &RepositoryName,
        gone: Vec<Digest>,
    ) -> Result<(), IndexerError> {
        for digest in gone {
            tracing::debug!(repository = %name, %digest, "untagged manifest is gone from the registry");
            let change = TagChange::DeleteManifest {
                repository: name.clone(),
                digest,
                at: Timestamp::now(),
            };
            self.store.apply(&change).await?;
        }
        Ok(())
    }
}

/// How many untagged manifests a scan reads from the store at a time.
const UNTAGGED_PAGE: usize = 1000;

/// The registry error of a repository scan that failed because the registry is
/// unreachable (`Ok`), or the error unchanged (`Err`).
fn registry_unreachable(e: IndexerError) -> Result<IndexerError, IndexerError> {
    match e {
        IndexerError::Registry(r) if r.is_unreachable() => Ok(IndexerError::Registry(r)),
        IndexerError::Repository { source, .. } if matches!(&*source, IndexerError::Registry(r) if r.is_unreachable()) => {
            Ok(*source)
        }
        other => Err(other),
    }
}
