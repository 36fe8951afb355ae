//! Fetching manifests by digest and turning them, their list children and their image
//! configs into [`Manifest`]s for the store.

use futures::stream::{self, StreamExt};

use super::{Indexer, IndexerError};
use crate::digest::Digest;
use crate::model::{Image, ImageList, ListEntry, Manifest, Platform};
use crate::registry::FetchedManifest;
use crate::registry::content::{self, ParsedManifest};

/// What resolving one digest gave.
pub(super) enum Resolved {
    /// The manifest (and for a list, its children the store did not have yet).
    Found(Vec<Manifest>),
    /// Not indexable (artifact, nested list, unreadable); remembered by digest.
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

impl Indexer {
    /// Fetches manifest `digest` of `repository` (unless `prefetched` already holds it);
    /// for a list also every child the store does not hold, dropping children that are
    /// not indexable images.
    pub(super) async fn resolve(
        &self,
        repository: &str,
        digest: &Digest,
        prefetched: Option<FetchedManifest>,
    ) -> Result<(Resolved, Tally), IndexerError> {
        let mut tally = Tally::default();
        if self.is_unsupported(digest) {
            return Ok((Resolved::Unsupported, tally));
        }
        let fetched = match prefetched {
            Some(f) => f,
            None => match self.client.get_manifest(repository, digest.as_str()).await {
                Ok(f) => {
                    tally.manifests += 1;
                    f
                }
                Err(e) if e.is_not_found() => return Ok((Resolved::Vanished, tally)),
                Err(e) => return Err(e.into()),
            },
        };
        match content::parse_manifest(&fetched.media_type, &fetched.bytes) {
            ParsedManifest::Unsupported { reason } => {
                tracing::debug!(repository, %digest, reason, "manifest is not indexed");
                self.remember_unsupported(digest.clone());
                Ok((Resolved::Unsupported, tally))
            }
            ParsedManifest::Image {
                config,
                annotations,
            } => {
                let (image, t) = self
                    .fetch_image(
                        repository,
                        fetched.digest,
                        fetched.media_type,
                        config,
                        annotations,
                        None,
                    )
                    .await?;
                tally.add(t);
                Ok((
                    match image {
                        Some(image) => Resolved::Found(vec![Manifest::Image(image)]),
                        None if self.is_unsupported(digest) => Resolved::Unsupported,
                        None => Resolved::Vanished,
                    },
                    tally,
                ))
            }
            ParsedManifest::List {
                annotations,
                entries,
            } => {
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
                let mut fetched_children = std::collections::HashSet::new();
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
                        digest: fetched.digest,
                        media_type: fetched.media_type,
                        annotations,
                        entries: kept,
                    }),
                );
                Ok((Resolved::Found(manifests), tally))
            }
        }
    }

    /// Fetches one list child; `None` when it is not an indexable image or is gone.
    async fn resolve_child(
        &self,
        repository: &str,
        digest: &Digest,
        listed: Option<&Platform>,
    ) -> Result<(Option<Image>, Tally), IndexerError> {
        let mut tally = Tally::default();
        if self.is_unsupported(digest) {
            return Ok((None, tally));
        }
        let fetched = match self.client.get_manifest(repository, digest.as_str()).await {
            Ok(f) => f,
            Err(e) if e.is_not_found() => {
                tracing::warn!(repository, %digest, "image list names a manifest the registry does not have");
                return Ok((None, tally));
            }
            Err(e) => return Err(e.into()),
        };
        tally.manifests += 1;
        match content::parse_manifest(&fetched.media_type, &fetched.bytes) {
            ParsedManifest::Image {
                config,
                annotations,
            } => {
                let (image, t) = self
                    .fetch_image(
                        repository,
                        fetched.digest,
                        fetched.media_type,
                        config,
                        annotations,
                        listed,
                    )
                    .await?;
                tally.add(t);
                Ok((image, tally))
            }
            ParsedManifest::List { .. } => {
                tracing::debug!(repository, %digest, "nested image list entry is not indexed");
                self.remember_unsupported(digest.clone());
                Ok((None, tally))
            }
            ParsedManifest::Unsupported { reason } => {
                tracing::debug!(repository, %digest, reason, "list entry is not indexed");
                self.remember_unsupported(digest.clone());
                Ok((None, tally))
            }
        }
    }

    /// Fetches and reads the config of an image manifest. `None` when the config is
    /// gone (404) or unreadable (then the manifest is remembered as unsupported).
    async fn fetch_image(
        &self,
        repository: &str,
        digest: Digest,
        media_type: String,
        config_digest: Digest,
        annotations: std::collections::BTreeMap<String, String>,
        listed: Option<&Platform>,
    ) -> Result<(Option<Image>, Tally), IndexerError> {
        let mut tally = Tally::default();
        let blob = match self.client.get_blob(repository, &config_digest).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                tracing::warn!(repository, %digest, config = %config_digest, "image config blob is missing");
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
                )),
                tally,
            )),
            Err(e) => {
                tracing::debug!(repository, %digest, error = %e, "image config unreadable; not indexed");
                self.remember_unsupported(digest);
                Ok((None, tally))
            }
        }
    }
}
