//! Fetching manifests by digest and turning them, their list children and their image
//! configs into [`Manifest`]s for the store.

use std::collections::{BTreeMap, HashSet};

use futures::stream::{self, StreamExt};

use super::{Indexer, IndexerError, lock};
use crate::digest::Digest;
use crate::model::{Image, ImageList, ListEntry, Manifest, Platform, PushedManifest};
use crate::name::RepositoryName;
use crate::registry::content::{self, ListChild, ParsedManifest};
use crate::registry::{FetchedManifest, RegistryError};
use crate::timestamp::Timestamp;

/// Entries of [`RecentManifests`] at most.
pub(super) const MAX_RECENT_MANIFESTS: usize = 256;
/// Bytes of manifest bodies [`RecentManifests`] holds at most.
pub(super) const MAX_RECENT_MANIFEST_BYTES: usize = 8 << 20;

/// Manifests read for pushes by digest, kept (per repository, least recently added
/// first out, bounded by count and bytes) for the tagged list that usually follows: a
/// multi-arch push sends its children by digest and then the list, and resolving the
/// list takes each child's body from here instead of a second `GET`. A body is taken
/// once; digests are immutable, so a kept body is always the one the registry serves.
pub(super) struct RecentManifests {
    entries: lru::LruCache<(RepositoryName, Digest), FetchedManifest>,
    bytes: usize,
}

impl RecentManifests {
    pub(super) fn new() -> Self {
        RecentManifests {
            entries: lru::LruCache::new(
                std::num::NonZeroUsize::new(MAX_RECENT_MANIFESTS)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            ),
            bytes: 0,
        }
    }

    /// Keeps `manifest`, read from `repository`, dropping the oldest past the bounds.
    pub(super) fn insert(&mut self, repository: &RepositoryName, manifest: FetchedManifest) {
        let size = manifest.bytes.len();
        if size > MAX_RECENT_MANIFEST_BYTES {
            return;
        }
        let key = (repository.clone(), manifest.digest.clone());
        self.bytes += size;
        if let Some((_, old)) = self.entries.push(key, manifest) {
            self.bytes -= old.bytes.len();
        }
        while self.bytes > MAX_RECENT_MANIFEST_BYTES {
            match self.entries.pop_lru() {
                Some((_, old)) => self.bytes -= old.bytes.len(),
                None => break,
            }
        }
    }

    /// Takes the body of `digest` read from `repository`, if kept.
    pub(super) fn take(
        &mut self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Option<FetchedManifest> {
        let taken = self.entries.pop(&(repository.clone(), digest.clone()))?;
        self.bytes -= taken.bytes.len();
        Some(taken)
    }
}

/// What a manifest read by digest, `fetched`, tells of it as a manifest the repository
/// holds by digest, stamped `at`: its size, and the artifact type, subject and
/// annotations its bytes state.
pub(super) fn pushed_manifest(fetched: FetchedManifest, at: Timestamp) -> PushedManifest {
    let facts = content::referrer_facts(&fetched.bytes);
    PushedManifest {
        size: fetched.bytes.len() as u64,
        digest: fetched.digest,
        media_type: fetched.media_type,
        pushed: at,
        artifact_type: facts.artifact_type,
        subject: facts.subject,
        annotations: facts.annotations,
    }
}

/// What resolving one digest gave.
pub(super) enum Resolved {
    /// The manifest (and for a list, its children the store did not have yet).
    Found(Vec<Manifest>),
    /// An artifact: not an image, but what a tag pointing at it is listed with
    /// (stamped with the time it was read).
    Artifact(PushedManifest),
    /// Not indexable (nested list, unknown media type); remembered by digest.
    Unsupported,
    /// Gone from the registry while being read (404).
    Vanished,
}

/// Bodies fetched and entries dropped while resolving.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tally {
    pub manifests: u64,
    pub blobs: u64,
    pub skipped: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.manifests += other.manifests;
        self.blobs += other.blobs;
        self.skipped += other.skipped;
    }
}

/// A manifest read by digest and parsed: the first half of resolving a tagged manifest
/// and a list child alike.
enum Read {
    /// The registry no longer has it (404).
    Gone,
    /// Not indexable; remembered by digest so it is never fetched again.
    Unsupported,
    /// An artifact, as its bytes describe it; remembered likewise.
    Artifact(PushedManifest),
    /// An image manifest; its config is still to be fetched.
    Image {
        fetched: FetchedManifest,
        config: Digest,
        annotations: BTreeMap<String, String>,
    },
    /// An image list.
    List {
        fetched: FetchedManifest,
        annotations: BTreeMap<String, String>,
        entries: Vec<ListChild>,
    },
}

impl Indexer {
    /// Reads manifest `digest` of `repository` — from `prefetched` when the caller already
    /// holds its body, else with a `GET` counted in `tally` — unless it is known to be
    /// unsupported.
    async fn read(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        prefetched: Option<FetchedManifest>,
        tally: &mut Tally,
    ) -> Result<Read, IndexerError> {
        if self.is_unsupported(digest) {
            return Ok(Read::Unsupported);
        }
        if let Some(artifact) = self.known_artifact(digest) {
            return Ok(Read::Artifact(artifact));
        }
        let prefetched = prefetched.or_else(|| lock(&self.recent).take(repository, digest));
        let fetched = match prefetched {
            Some(f) => f,
            None => match self.client.get_manifest(repository, digest.as_str()).await {
                Ok(f) => {
                    tally.manifests += 1;
                    f
                }
                Err(e) if e.is_not_found() => return Ok(Read::Gone),
                Err(e) => return Err(e.into()),
            },
        };
        Ok(
            match content::parse_manifest(&fetched.media_type, &fetched.bytes) {
                ParsedManifest::Artifact { config_media_type } => {
                    tracing::debug!(repository = %repository, %digest, config_media_type, "manifest is an artifact");
                    let artifact = pushed_manifest(fetched, Timestamp::now());
                    self.remember_artifact(artifact.clone());
                    Read::Artifact(artifact)
                }
                ParsedManifest::Unsupported { reason } => {
                    tracing::debug!(repository = %repository, %digest, reason, "manifest is not indexed");
                    self.remember_unsupported(digest.clone());
                    Read::Unsupported
                }
                ParsedManifest::Unreadable { reason } => {
                    // The registry's content is broken: a permanent failure that costs
                    // the tag (and is reported), not a silently skipped artifact.
                    return Err(RegistryError::InvalidResponse {
                        url: self
                            .client
                            .manifest_url(repository, digest.as_str())?
                            .into(),
                        reason,
                    }
                    .into());
                }
                ParsedManifest::Image {
                    config,
                    annotations,
                } => Read::Image {
                    fetched,
                    config,
                    annotations,
                },
                ParsedManifest::List {
                    annotations,
                    entries,
                } => Read::List {
                    fetched,
                    annotations,
                    entries,
                },
            },
        )
    }

    /// Fetches manifest `digest` of `repository` (unless `prefetched` already holds it);
    /// for a list also every child the store does not hold, dropping children that are
    /// not indexable images.
    pub(super) async fn resolve(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        prefetched: Option<FetchedManifest>,
    ) -> Result<(Resolved, Tally), IndexerError> {
        let mut tally = Tally::default();
        let (fetched, annotations, entries) = match self
            .read(repository, digest, prefetched, &mut tally)
            .await?
        {
            Read::Gone => return Ok((Resolved::Vanished, tally)),
            Read::Unsupported => return Ok((Resolved::Unsupported, tally)),
            Read::Artifact(artifact) => return Ok((Resolved::Artifact(artifact), tally)),
            Read::Image {
                fetched,
                config,
                annotations,
            } => {
                let (image, t) = self
                    .fetch_image(repository, fetched, config, annotations, None)
                    .await?;
                tally.add(t);
                let resolved = match image {
                    Some(image) => Resolved::Found(vec![Manifest::Image(image)]),
                    None => Resolved::Vanished,
                };
                return Ok((resolved, tally));
            }
            Read::List {
                fetched,
                annotations,
                entries,
            } => (fetched, annotations, entries),
        };
        let children: Vec<Digest> = entries.iter().map(|e| e.digest.clone()).collect();
        let known = self.store.known_manifests(&children).await?;
        let wanted: Vec<_> = entries
            .iter()
            .filter(|e| !known.contains(&e.digest))
            .cloned()
            .collect();
        let results: Vec<_> = stream::iter(wanted)
            .map(|child| async move {
                let r = self
                    .resolve_child(repository, &child.digest, child.platform.as_ref())
                    .await;
                (child.digest, r)
            })
            .buffer_unordered(self.cfg.concurrency)
            .collect()
            .await;
        let mut manifests = Vec::with_capacity(results.len() + 1);
        let mut fetched_children = HashSet::new();
        for (child, result) in results {
            let (image, t) = result?;
            tally.add(t);
            if let Some(image) = image {
                fetched_children.insert(child);
                manifests.push(Manifest::Image(image));
            }
        }
        let mut kept = Vec::with_capacity(entries.len());
        for entry in entries {
            if known.contains(&entry.digest) || fetched_children.contains(&entry.digest) {
                kept.push(ListEntry {
                    digest: entry.digest,
                    platform: entry.platform,
                });
            } else {
                tally.skipped += 1;
            }
        }
        manifests.insert(
            0,
            Manifest::List(ImageList {
                size: Some(fetched.bytes.len() as u64),
                digest: fetched.digest,
                media_type: fetched.media_type,
                annotations,
                entries: kept,
            }),
        );
        Ok((Resolved::Found(manifests), tally))
    }

    /// Fetches one list child; `None` when it is not an indexable image or is gone.
    async fn resolve_child(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        listed: Option<&Platform>,
    ) -> Result<(Option<Image>, Tally), IndexerError> {
        let mut tally = Tally::default();
        match self.read(repository, digest, None, &mut tally).await? {
            Read::Gone => {
                tracing::warn!(repository = %repository, %digest, "image list names a manifest the registry does not have");
                Ok((None, tally))
            }
            // An artifact in a list (a build attestation, say) is not one of its images.
            Read::Unsupported | Read::Artifact(_) => Ok((None, tally)),
            Read::Image {
                fetched,
                config,
                annotations,
            } => {
                let (image, t) = self
                    .fetch_image(repository, fetched, config, annotations, listed)
                    .await?;
                tally.add(t);
                Ok((image, tally))
            }
            Read::List { .. } => {
                tracing::debug!(repository = %repository, %digest, "nested image list entry is not indexed");
                self.remember_unsupported(digest.clone());
                Ok((None, tally))
            }
        }
    }

    /// Fetches and reads the config of an image manifest. `None` when the config is
    /// gone (404). A config that cannot be read (not JSON, nested too deep) is a
    /// permanent failure ([`RegistryError::InvalidResponse`]): the tag is reported
    /// failed rather than silently dropped.
    async fn fetch_image(
        &self,
        repository: &RepositoryName,
        fetched: FetchedManifest,
        config_digest: Digest,
        annotations: BTreeMap<String, String>,
        listed: Option<&Platform>,
    ) -> Result<(Option<Image>, Tally), IndexerError> {
        let mut tally = Tally::default();
        let size = fetched.bytes.len() as u64;
        let FetchedManifest {
            digest, media_type, ..
        } = fetched;
        let blob = match self.client.get_blob(repository, &config_digest).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                tracing::warn!(repository = %repository, %digest, config = %config_digest, "image config blob is missing");
                return Ok((None, tally));
            }
            Err(e) => return Err(e.into()),
        };
        tally.blobs += 1;
        match content::parse_image_config(&blob) {
            Ok(config) => Ok((
                Some(content::build_image(
                    digest,
                    media_type,
                    annotations,
                    config_digest,
                    config,
                    listed,
                    size,
                )),
                tally,
            )),
            Err(e) => Err(RegistryError::InvalidResponse {
                url: self.client.blob_url(repository, &config_digest)?.into(),
                reason: format!("config of manifest {digest}: {e}"),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(seed: &str, size: usize) -> FetchedManifest {
        let bytes = vec![b'x'; size];
        FetchedManifest {
            digest: Digest::sha256_of(seed.as_bytes()),
            media_type: crate::model::OCI_MANIFEST.into(),
            bytes: bytes.into(),
        }
    }

    #[test]
    fn recent_manifests_are_taken_once_per_repository_within_their_bounds() {
        let app: RepositoryName = "app".parse().unwrap();
        let other: RepositoryName = "other".parse().unwrap();
        let mut recent = RecentManifests::new();
        let a = body("a", 10);
        recent.insert(&app, a.clone());
        assert_eq!(
            recent.take(&other, &a.digest),
            None,
            "only for its repository"
        );
        assert_eq!(recent.take(&app, &a.digest), Some(a.clone()));
        assert_eq!(recent.take(&app, &a.digest), None, "taken once");

        // The byte bound drops the oldest first.
        let half = MAX_RECENT_MANIFEST_BYTES / 2;
        let (first, second, third) = (body("1", half), body("2", half), body("3", half));
        for b in [&first, &second, &third] {
            recent.insert(&app, b.clone());
        }
        assert_eq!(
            recent.take(&app, &first.digest),
            None,
            "over the byte bound"
        );
        assert!(recent.take(&app, &second.digest).is_some());
        assert!(recent.take(&app, &third.digest).is_some());
        assert_eq!(recent.bytes, 0);
        recent.insert(&app, body("huge", MAX_RECENT_MANIFEST_BYTES + 1));
        assert_eq!(recent.bytes, 0, "a body larger than the bound is not kept");

        // The count bound likewise.
        for i in 0..=MAX_RECENT_MANIFESTS {
            recent.insert(&app, body(&i.to_string(), 1));
        }
        assert_eq!(recent.take(&app, &Digest::sha256_of(b"0")), None);
        assert!(recent.take(&app, &Digest::sha256_of(b"1")).is_some());
    }
}
