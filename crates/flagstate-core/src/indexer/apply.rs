//! Applying registry events to the store.
//!
//! Rules (see the protocol notes on the distribution registry's events):
//! - push of a manifest with a tag → `Put` straight from the event's (repository, tag,
//!   digest): the registry sends the event *before* it links the tag, so listing tags
//!   right now could miss it;
//! - push of a manifest by digest only (a list's children, an artifact, `skopeo copy` by
//!   digest) → `PutUntagged` with what `GET` by digest serves (media type, size): the
//!   repository holds the manifest, which the manifest listing shows while no tag
//!   reaches it; a digest the registry does not serve is ignored;
//! - delete with a tag → `DeleteTag`;
//! - delete with only a digest → `DeleteManifest`. Delete events do not say whether a
//!   manifest or a blob went; deleting a blob digest as a manifest is harmless because no
//!   tag points at a blob;
//! - blob pushes (`application/octet-stream` and other non-manifest types), pulls,
//!   mounts and unknown actions → ignored;
//! - deletes in a repository the store does not know, and pushes of a manifest the
//!   registry does not have in such a repository → ignored, without a re-scan: nothing
//!   indexed can be wrong, and made-up names must not cost registry requests.
//!
//! Every applied change is durable when [`Indexer::apply_events`] returns; after that the
//! touched repositories are re-scanned (debounced) to catch what events cannot say, such
//! as which tag an overwritten digest lost.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use super::fetch::Resolved;
use super::{EventsOutcome, Indexer, IndexerError, lock};
use crate::digest::Digest;
use crate::events::{EventAction, RegistryEvent};
use crate::model::{PushedManifest, TagChange};
use crate::name::{RepositoryName, Tag};
use crate::registry::content::{ReferrerTag, is_manifest_media_type};
use crate::timestamp::Timestamp;

/// What one event asks of the store.
enum Plan {
    Put {
        tag: String,
        digest: Digest,
    },
    DeleteTag {
        tag: String,
    },
    DeleteManifest {
        digest: Digest,
    },
    PutUntagged {
        digest: Digest,
    },
    /// Nothing to write, but the repository deserves a re-scan.
    Reconcile,
    Ignore(&'static str),
}

fn plan(event: &RegistryEvent) -> Plan {
    let manifest_type = event
        .media_type
        .as_deref()
        .is_none_or(is_manifest_media_type);
    match (&event.action, &event.tag, &event.digest) {
        (EventAction::Push, _, _) if !manifest_type => Plan::Ignore("blob or artifact push"),
        (EventAction::Push, Some(tag), Some(digest)) => Plan::Put {
            tag: tag.clone(),
            digest: digest.clone(),
        },
        (EventAction::Push, Some(_), None) => Plan::Reconcile,
        (EventAction::Push, None, Some(digest)) => Plan::PutUntagged {
            digest: digest.clone(),
        },
        (EventAction::Push, None, None) => Plan::Ignore("push naming nothing"),
        (EventAction::Delete, Some(tag), _) => Plan::DeleteTag { tag: tag.clone() },
        (EventAction::Delete, None, Some(_)) if !manifest_type => Plan::Ignore("blob delete"),
        (EventAction::Delete, None, Some(digest)) => Plan::DeleteManifest {
            digest: digest.clone(),
        },
        (EventAction::Delete, None, None) => Plan::Ignore("delete naming nothing"),
        (EventAction::Pull, _, _) => Plan::Ignore("pull"),
        (EventAction::Mount, _, _) => Plan::Ignore("mount"),
        (EventAction::Other(_), _, _) => Plan::Ignore("unknown action"),
    }
}

impl Indexer {
    /// Applies events in order. Each relevant event is written to the store before the
    /// call returns; fetching what a pushed tag points at (manifest, list children,
    /// configs) as needed. An event that can never be applied
    /// ([`IndexerError::is_permanent`]) is counted in [`EventsOutcome::failed`], logged,
    /// and skipped. On the first other failure the call returns the error (so the
    /// webhook can answer 5xx and the registry retries the batch; re-applying the
    /// events already written is harmless). Touched repositories are then scheduled for
    /// a debounced re-scan — also when a later event failed.
    pub async fn apply_events(
        &self,
        events: &[RegistryEvent],
    ) -> Result<EventsOutcome, IndexerError> {
        let mut outcome = EventsOutcome::default();
        let mut touched = BTreeSet::new();
        let mut result = Ok(());
        for (index, event) in events.iter().enumerate() {
            match self.apply_event(event).await {
                Ok(Some(repository)) => {
                    touched.insert(repository);
                    outcome.applied += 1;
                }
                Ok(None) => outcome.ignored += 1,
                Err(source) if source.is_permanent() => {
                    self.status.events_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        id = %event.id,
                        repository = %event.repository,
                        error = %source,
                        "event cannot be applied; left to the repository's re-scan"
                    );
                    touched.extend(RepositoryName::parse(event.repository.as_str()).ok());
                    outcome.failed += 1;
                }
                Err(source) => {
                    self.status.events_failed.fetch_add(1, Ordering::Relaxed);
                    touched.extend(RepositoryName::parse(event.repository.as_str()).ok());
                    result = Err(IndexerError::Event {
                        index,
                        id: event.id.clone(),
                        repository: event.repository.clone(),
                        source: Box::new(source),
                    });
                    break;
                }
            }
        }
        self.status
            .events_applied
            .fetch_add(outcome.applied, Ordering::Relaxed);
        self.status
            .events_ignored
            .fetch_add(outcome.ignored, Ordering::Relaxed);
        touched.retain(|repository| self.queue.schedule(repository));
        outcome.reconcile_scheduled = touched.into_iter().collect();
        result.map(|()| outcome)
    }

    /// Whether the store knows `repository`.
    async fn indexed(&self, repository: &RepositoryName) -> Result<bool, IndexerError> {
        Ok(self.store.repository_tags(repository).await?.is_some())
    }

    /// Applies one event; returns the repository it touched, or `None` if ignored. The
    /// event's repository and tag are parsed here: an event naming an invalid one is
    /// ignored.
    async fn apply_event(
        &self,
        event: &RegistryEvent,
    ) -> Result<Option<RepositoryName>, IndexerError> {
        let plan = plan(event);
        if let Plan::Ignore(why) = plan {
            tracing::trace!(id = %event.id, repository = %event.repository, why, "event ignored");
            return Ok(None);
        }
        let repository = match RepositoryName::parse(event.repository.as_str()) {
            Ok(repository) => repository,
            Err(e) => {
                let reason = e.problem();
                tracing::warn!(id = %event.id, repository = %event.repository, reason, "event names an invalid repository; ignored");
                return Ok(None);
            }
        };
        let repository = &repository;
        // The sender's clock, but never ahead of ours: a time in the future would sort
        // the change after every later one.
        let now = Timestamp::now();
        let at = event.timestamp.map_or(now, |t| t.min(now));
        let change = match plan {
            Plan::Ignore(_) => return Ok(None),
            Plan::Reconcile => return Ok(Some(repository.clone())),
            Plan::Put { tag, digest } => {
                let tag = match Tag::parse(tag.as_str()) {
                    Ok(tag) => tag,
                    Err(e) => {
                        let reason = e.problem();
                        tracing::warn!(id = %event.id, repository = %repository, tag, reason, "event names an invalid tag; ignored");
                        return Ok(None);
                    }
                };
                // A cosign attachment tag names an artifact, whatever its placeholder
                // config says (as scans read it).
                if matches!(
                    ReferrerTag::parse(tag.as_str()),
                    Some(ReferrerTag::Attachment { .. })
                ) {
                    let (artifact, requests) =
                        self.read_artifact(repository, &digest, None).await?;
                    self.status
                        .manifests_fetched
                        .fetch_add(requests, Ordering::Relaxed);
                    let Some(artifact) = artifact else {
                        // Deleted again already; the re-scan settles the tag.
                        return Ok(self.indexed(repository).await?.then(|| repository.clone()));
                    };
                    let change = put_artifact(repository, tag, artifact, at);
                    return self.commit(repository, change).await;
                }
                let known = self
                    .store
                    .known_manifests(std::slice::from_ref(&digest))
                    .await?;
                let manifests = if known.contains(&digest) {
                    Vec::new()
                } else {
                    let (resolved, tally) = self.resolve(repository, &digest, None).await?;
                    self.status
                        .manifests_fetched
                        .fetch_add(tally.manifests, Ordering::Relaxed);
                    self.status
                        .blobs_fetched
                        .fetch_add(tally.blobs, Ordering::Relaxed);
                    match resolved {
                        Resolved::Found(manifests) => manifests,
                        Resolved::Artifact(artifact) => {
                            let change = put_artifact(repository, tag, artifact, at);
                            return self.commit(repository, change).await;
                        }
                        Resolved::Unsupported => {
                            tracing::debug!(repository = %repository, tag = %tag, %digest, "pushed manifest is not indexable; ignored");
                            return Ok(None);
                        }
                        Resolved::Vanished => {
                            // Deleted again already; the re-scan settles the tag — if
                            // the repository is indexed at all. A manifest the registry
                            // does not have in a repository nobody indexed is a name made
                            // up by the sender, not worth registry requests.
                            return Ok(self.indexed(repository).await?.then(|| repository.clone()));
                        }
                    }
                };
                TagChange::Put {
                    repository: repository.clone(),
                    tag,
                    digest,
                    manifests,
                    at,
                }
            }
            Plan::PutUntagged { digest } => {
                let fetched = match self.client.get_manifest(repository, digest.as_str()).await {
                    Ok(fetched) => fetched,
                    Err(e) if e.is_not_found() => {
                        tracing::debug!(id = %event.id, repository = %repository, %digest, "manifest pushed by digest is not served; ignored");
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                };
                self.status
                    .manifests_fetched
                    .fetch_add(1, Ordering::Relaxed);
                // A multi-arch push names its children by digest first: the list that
                // follows takes their bodies from here rather than reading them again.
                lock(&self.recent).insert(repository, fetched.clone());
                TagChange::PutUntagged {
                    repository: repository.clone(),
                    manifest: super::fetch::pushed_manifest(fetched, at),
                }
            }
            Plan::DeleteTag { .. } | Plan::DeleteManifest { .. }
                if !self.indexed(repository).await? =>
            {
                tracing::trace!(id = %event.id, repository = %repository, "delete in a repository not indexed; ignored");
                return Ok(None);
            }
            Plan::DeleteTag { tag } => match Tag::parse(tag.as_str()) {
                Ok(tag) => TagChange::DeleteTag {
                    repository: repository.clone(),
                    tag,
                    at,
                },
                // No such tag can be indexed: like any delete of an absent tag, it
                // writes nothing but counts as applied and re-scans the repository.
                Err(e) => {
                    let reason = e.problem();
                    tracing::trace!(id = %event.id, repository = %repository, tag, reason, "delete of an invalid tag; nothing to delete");
                    let _guard = self.write_guard(repository).await;
                    self.mark_event(repository);
                    return Ok(Some(repository.clone()));
                }
            },
            Plan::DeleteManifest { digest } => TagChange::DeleteManifest {
                repository: repository.clone(),
                digest,
                at,
            },
        };
        self.commit(repository, change).await
    }

    /// Writes the change an event of `repository` made, under the repository's write
    /// guard and marked as the event's.
    async fn commit(
        &self,
        repository: &RepositoryName,
        change: TagChange,
    ) -> Result<Option<RepositoryName>, IndexerError> {
        let _guard = self.write_guard(repository).await;
        self.mark_event(repository);
        self.store.apply(&change).await?;
        Ok(Some(repository.clone()))
    }
}

/// The change an event makes that points `tag` at `artifact`, pushed `at`.
fn put_artifact(
    repository: &RepositoryName,
    tag: Tag,
    artifact: PushedManifest,
    at: Timestamp,
) -> TagChange {
    TagChange::PutArtifact {
        repository: repository.clone(),
        manifest: PushedManifest {
            pushed: at,
            ..super::referrers::tagged_artifact(&tag, artifact)
        },
        tag,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        action: EventAction,
        tag: Option<&str>,
        digest: bool,
        media: Option<&str>,
    ) -> RegistryEvent {
        RegistryEvent {
            id: "x".into(),
            action,
            repository: "r".into(),
            tag: tag.map(str::to_owned),
            digest: digest.then(|| Digest::sha256_of(b"m")),
            timestamp: None,
            media_type: media.map(str::to_owned),
        }
    }

    #[test]
    fn plans() {
        use EventAction::*;
        let m = Some(crate::model::OCI_MANIFEST);
        let blob = Some("application/octet-stream");
        assert!(matches!(
            plan(&event(Push, Some("t"), true, m)),
            Plan::Put { .. }
        ));
        assert!(matches!(
            plan(&event(Push, Some("t"), true, None)),
            Plan::Put { .. }
        ));
        assert!(matches!(
            plan(&event(Push, None, true, m)),
            Plan::PutUntagged { .. }
        ));
        assert!(matches!(
            plan(&event(Push, None, false, m)),
            Plan::Ignore(_)
        ));
        assert!(matches!(
            plan(&event(Push, None, true, blob)),
            Plan::Ignore(_)
        ));
        assert!(matches!(
            plan(&event(Push, Some("t"), false, m)),
            Plan::Reconcile
        ));
        assert!(matches!(
            plan(&event(Delete, Some("t"), false, None)),
            Plan::DeleteTag { .. }
        ));
        assert!(matches!(
            plan(&event(Delete, None, true, None)),
            Plan::DeleteManifest { .. }
        ));
        assert!(matches!(
            plan(&event(Delete, None, true, blob)),
            Plan::Ignore(_)
        ));
        assert!(matches!(
            plan(&event(Pull, Some("t"), true, m)),
            Plan::Ignore(_)
        ));
        assert!(matches!(
            plan(&event(Mount, None, true, blob)),
            Plan::Ignore(_)
        ));
        assert!(matches!(
            plan(&event(Other("x".into()), None, true, m)),
            Plan::Ignore(_)
        ));
    }
}
