//! Fetching manifests by digest and turning them, their list children and their image
//! configs into [`Manifest`]s for the store.

use std::collections::{BTreeMap, HashSet};

use futures::stream::{self, StreamExt};

use super::{Indexer, IndexerError};
use crate::digest::Digest;
use crate::model::{Image, ImageList, ListEntry, Manifest, Platform};
use crate::name::RepositoryName;
use crate::registry::content::{self, ListChild, ParsedManifest};
use crate::registry::{FetchedManifest, RegistryError};

/// What resolving one digest gave.
pub(super) enum Resolved {
    /// The manifest (and for a list, its children the store did not have yet).
    Found(Vec<Manifest>),
    /// Not indexable (artifact, nested list, unknown media type); remembered by digest.
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
            Read::Unsupported => Ok((None, tally)),
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
