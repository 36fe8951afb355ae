//! Referrers named by tags: registries without the OCI 1.1 referrers API keep a
//! manifest's referrers under tags of the referrers tag schema (`sha256-<hex>`, an index
//! of them) or, as cosign does, one attachment per tag (`sha256-<hex>.sig`, `.att`,
//! `.sbom`). A scan reads what such a tag points at and records each referrer as a
//! manifest the repository holds by digest, with its `subject` and artifact type
//! ([`TagChange::PutUntagged`]), so the referrers listing and the change feed see them
//! exactly like referrers pushed with a `subject`.
//!
//! A tag's manifest is read once per process (digests are immutable): the pairs read
//! are remembered, up to a bound, so a rescan of an unchanged registry costs nothing
//! more. Writing is idempotent: a referrer the store holds already is not recorded again.

use std::collections::HashMap;

use futures::stream::{self, StreamExt};

use super::fetch::pushed_manifest;
use super::{Indexer, IndexerError, lock, remember};
use crate::digest::Digest;
use crate::model::{PushedManifest, TagChange, is_list_media_type};
use crate::name::{RepositoryName, Tag};
use crate::registry::FetchedManifest;
use crate::registry::content::{
    self, ReferrerTag, cosign_artifact_type, is_image_config_media_type,
};
use crate::timestamp::Timestamp;

/// Entries of the memory of referrer tags read, before it is reset.
pub(super) const MAX_REFERRER_TAGS_READ: usize = 100_000;

/// The referrers `fetched` (what a referrer tag points at) names, as the manifests the
/// repository holds by digest, stamped `at`.
pub(super) fn referrers_of(
    tag: &ReferrerTag,
    fetched: &FetchedManifest,
    at: Timestamp,
) -> Vec<PushedManifest> {
    match tag {
        ReferrerTag::Index { subject } => {
            if !is_list_media_type(&fetched.media_type) {
                return Vec::new();
            }
            content::referrers_index(&fetched.bytes)
                .into_iter()
                .map(|r| PushedManifest {
                    digest: r.digest,
                    media_type: r.media_type,
                    size: r.size,
                    pushed: at,
                    artifact_type: r.artifact_type,
                    subject: Some(subject.clone()),
                    annotations: r.annotations,
                })
                .collect()
        }
        ReferrerTag::Attachment { subject, name } => {
            vec![attachment(
                pushed_manifest(fetched.clone(), at),
                subject,
                name,
            )]
        }
    }
}

/// What the cosign attachment tag `sha256-<subject>.<name>` says of the manifest it
/// points at: it refers to `subject`, and — when its config type says nothing (a
/// cosign attachment is an image manifest with a placeholder image config) — its tag's
/// name says what it is.
fn attachment(mut manifest: PushedManifest, subject: &Digest, name: &str) -> PushedManifest {
    let artifact_type = manifest
        .artifact_type
        .take()
        .filter(|t| !is_image_config_media_type(t))
        .unwrap_or_else(|| cosign_artifact_type(name));
    manifest.artifact_type = Some(artifact_type);
    manifest.subject = Some(subject.clone());
    manifest
}

/// An artifact as the tag `tag` points at it: a cosign attachment tag adds what its name
/// says ([`attachment`]); any other tag leaves it as its bytes describe it.
pub(super) fn tagged_artifact(tag: &Tag, artifact: PushedManifest) -> PushedManifest {
    match ReferrerTag::parse(tag.as_str()) {
        Some(ReferrerTag::Attachment { subject, name }) => attachment(artifact, &subject, &name),
        _ => artifact,
    }
}

impl Indexer {
    /// Records the referrers that the referrer tags of `name` (each with the digest the
    /// scan read for it) point at, reading each tag's manifest unless this process read
    /// it before; `bodies` holds the manifests the scan fetched already. Returns how
    /// many manifests it fetched. Nothing is written when an event touched the
    /// repository after `since`: the scan the event scheduled reads the tags again.
    pub(super) async fn index_referrer_tags(
        &self,
        name: &RepositoryName,
        tags: Vec<(ReferrerTag, Digest)>,
        mut bodies: HashMap<Digest, FetchedManifest>,
        since: u64,
    ) -> Result<u64, IndexerError> {
        let wanted: Vec<(ReferrerTag, Digest, Option<FetchedManifest>)> = {
            let read = lock(&self.referrer_tags_read);
            tags.into_iter()
                .filter(|(_, digest)| !read.contains_key(&(name.clone(), digest.clone())))
                .map(|(tag, digest)| {
                    let body = bodies.remove(&digest);
                    (tag, digest, body)
                })
                .collect()
        };
        if wanted.is_empty() {
            return Ok(0);
        }
        let fetched: Vec<_> = stream::iter(wanted)
            .map(|(tag, digest, body)| async move {
                let fetched = match body {
                    Some(body) => Ok((Some(body), false)),
                    None => match self.client.get_manifest(name, digest.as_str()).await {
                        Ok(f) => Ok((Some(f), true)),
                        Err(e) if e.is_not_found() => Ok((None, true)),
                        Err(e) => Err(e),
                    },
                };
                (tag, digest, fetched)
            })
            .buffer_unordered(self.cfg.concurrency)
            .collect()
            .await;
        let mut requests = 0;
        let mut found = Vec::new();
        let at = Timestamp::now();
        for (tag, digest, result) in fetched {
            let (manifest, requested) = match result {
                Ok(r) => r,
                Err(e) if e.is_permanent() => {
                    tracing::warn!(repository = %name, %digest, error = %e, "referrer tag's manifest is unreadable; its referrers are not indexed");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            requests += u64::from(requested);
            // Gone since the listing: the next scan sees the tag's new state.
            let Some(manifest) = manifest else { continue };
            found.push((digest, referrers_of(&tag, &manifest, at)));
        }
        let _guard = self.write_guard(name).await;
        if self.touched_since(name, since) {
            return Ok(requests);
        }
        for (digest, referrers) in found {
            for manifest in referrers {
                tracing::debug!(repository = %name, referrer = %manifest.digest, "referrer named by a tag");
                self.store
                    .apply(&TagChange::PutUntagged {
                        repository: name.clone(),
                        manifest,
                    })
                    .await?;
            }
            remember(
                &self.referrer_tags_read,
                (name.clone(), digest),
                (),
                MAX_REFERRER_TAGS_READ,
            );
        }
        Ok(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OCI_INDEX, OCI_MANIFEST};
    use crate::registry::content::OCI_IMAGE_CONFIG;

    fn fetched(media_type: &str, json: serde_json::Value) -> FetchedManifest {
        let bytes = serde_json::to_vec(&json).unwrap();
        FetchedManifest {
            digest: Digest::sha256_of(&bytes),
            media_type: media_type.into(),
            bytes: bytes.into(),
        }
    }

    #[test]
    fn an_attachment_tag_names_its_manifest_with_the_cosign_type() {
        let subject = Digest::sha256_of(b"image");
        let tag = ReferrerTag::Attachment {
            subject: subject.clone(),
            name: "sig".into(),
        };
        let legacy = fetched(
            OCI_MANIFEST,
            serde_json::json!({
                "schemaVersion": 2,
                "config": {"mediaType": OCI_IMAGE_CONFIG, "digest": Digest::sha256_of(b"c").to_string(), "size": 2},
                "layers": [],
                "annotations": {"dev.cosignproject.cosign/signature": "MEUC"}
            }),
        );
        let found = referrers_of(&tag, &legacy, Timestamp::from_millis(1));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].digest, legacy.digest);
        assert_eq!(found[0].subject.as_ref(), Some(&subject));
        assert_eq!(
            found[0].artifact_type.as_deref(),
            Some("application/vnd.dev.cosign.artifact.sig.v1+json")
        );
        assert_eq!(found[0].size, legacy.bytes.len() as u64);
        assert!(
            found[0]
                .annotations
                .contains_key("dev.cosignproject.cosign/signature")
        );
        let typed = fetched(
            OCI_MANIFEST,
            serde_json::json!({"schemaVersion": 2, "artifactType": "application/example",
                               "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                          "digest": Digest::sha256_of(b"{}").to_string(), "size": 2}}),
        );
        assert_eq!(
            referrers_of(&tag, &typed, Timestamp::from_millis(1))[0]
                .artifact_type
                .as_deref(),
            Some("application/example"),
            "a stated artifact type wins"
        );
    }

    #[test]
    fn an_index_tag_names_the_manifests_it_lists() {
        let subject = Digest::sha256_of(b"image");
        let tag = ReferrerTag::Index {
            subject: subject.clone(),
        };
        let sbom = Digest::sha256_of(b"sbom");
        let index = fetched(
            OCI_INDEX,
            serde_json::json!({"schemaVersion": 2, "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": sbom.to_string(), "size": 9,
                 "artifactType": "application/spdx+json"}
            ]}),
        );
        let found = referrers_of(&tag, &index, Timestamp::from_millis(1));
        assert_eq!(
            found
                .iter()
                .map(|r| (&r.digest, r.subject.as_ref(), r.artifact_type.as_deref()))
                .collect::<Vec<_>>(),
            [(&sbom, Some(&subject), Some("application/spdx+json"))]
        );
        let not_an_index = fetched(OCI_MANIFEST, serde_json::json!({"manifests": []}));
        assert!(referrers_of(&tag, &not_an_index, Timestamp::from_millis(1)).is_empty());
    }
}
