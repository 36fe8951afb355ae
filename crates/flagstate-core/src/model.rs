//! The indexed data model: images, image lists and the tags of a repository.
//!
//! One store indexes one registry (see `docs/architecture.md` for why). Manifests are
//! immutable and identified by [`Digest`], so they are shared by every repository that
//! holds them; tags belong to exactly one repository and point at one digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::name::{RepositoryName, Tag};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of a Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether `media_type` names an image list (OCI index or Docker manifest list).
pub fn is_list_media_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Where an image runs: GOOS / GOARCH values, plus the optional CPU variant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// CPU variant, e.g. `v8`, when the registry states one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform stored as nullable columns: `None` unless both the OS and the
    /// architecture are present (a list's row, or a manifest the index does not hold).
    pub fn from_columns(
        os: Option<String>,
        architecture: Option<String>,
        variant: Option<String>,
    ) -> Option<Self> {
        Some(Platform {
            os: os?,
            architecture: architecture?,
            variant,
        })
    }

    /// A platform without variant.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Self {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

/// A single-platform image: a manifest plus what its config blob says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Digest of the manifest.
    pub digest: Digest,
    /// Media type of the manifest (never empty).
    pub media_type: String,
    /// Platform as stated by the image config.
    pub platform: Platform,
    /// String-valued labels of the image config (`config.Labels`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the manifest.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `created` from the image config, verbatim (RFC 3339), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Digest of the config blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<Digest>,
    /// Size of the manifest in bytes, as the registry serves it; `None` only for
    /// manifests indexed before sizes were kept (the next scan fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// One entry of an image list: a child image and the platform the list states for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// Digest of the child image manifest.
    pub digest: Digest,
    /// Platform given by the list's `manifests[].platform`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// A multi-platform image list (OCI image index or Docker manifest list).
///
/// Only entries that are indexable images are kept: nested indexes and non-image
/// artifacts are dropped by the indexer, so every entry resolves to an [`Image`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    /// Digest of the list manifest.
    pub digest: Digest,
    /// Media type of the list (never empty).
    pub media_type: String,
    /// Annotations of the list manifest.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The child images, in the order the list names them.
    pub entries: Vec<ListEntry>,
    /// Size of the list manifest in bytes, as the registry serves it; `None` only for
    /// lists indexed before sizes were kept (the next scan fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Anything a tag can point at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Manifest {
    /// A single-platform image.
    Image(Image),
    /// A multi-platform image list.
    List(ImageList),
}

impl Manifest {
    /// Digest of the manifest.
    pub fn digest(&self) -> &Digest {
        match self {
            Manifest::Image(i) => &i.digest,
            Manifest::List(l) => &l.digest,
        }
    }

    /// Media type of the manifest.
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image(i) => &i.media_type,
            Manifest::List(l) => &l.media_type,
        }
    }

    /// Size of the manifest in bytes, when known.
    pub fn size(&self) -> Option<u64> {
        match self {
            Manifest::Image(i) => i.size,
            Manifest::List(l) => l.size,
        }
    }

    /// The platform of an image; `None` for a list.
    pub fn platform(&self) -> Option<&Platform> {
        match self {
            Manifest::Image(i) => Some(&i.platform),
            Manifest::List(_) => None,
        }
    }

    /// Digests this manifest needs to be resolvable: the children of a list.
    pub fn children(&self) -> impl Iterator<Item = &Digest> {
        let entries: &[ListEntry] = match self {
            Manifest::Image(_) => &[],
            Manifest::List(l) => &l.entries,
        };
        entries.iter().map(|e| &e.digest)
    }
}

/// The complete indexed state of one repository, as a full scan sees it.
///
/// `tags` is authoritative: after [`Store::replace_repository`](crate::Store::replace_repository)
/// the repository has exactly these tags. `manifests` carries the manifests the store may
/// not know yet; manifests the store already holds (by digest) may be left out, which is
/// what makes a re-scan of an unchanged registry cheap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySnapshot {
    /// Repository name, e.g. `fedora/flatpak-runtime`.
    pub name: RepositoryName,
    /// Tag → digest of the manifest it points at.
    pub tags: BTreeMap<Tag, Digest>,
    /// Manifests (images, lists and list children) the tags need.
    pub manifests: Vec<Manifest>,
    /// Tag → the artifact it points at: a manifest that is not an image or image list
    /// (a Helm chart, a signature, an SBOM, a WASM module). Authoritative like `tags`;
    /// no tag may be in both. The repository holds each such manifest by digest, with
    /// what its bytes state; artifact tags are listed by the discovery listings and never
    /// appear in index answers.
    pub artifacts: BTreeMap<Tag, PushedManifest>,
    /// When the scan read these tags: the `updated` time of every tag this snapshot adds
    /// or moves, and of the repository when anything changed (its `created` time when it
    /// is new). Tags the store already holds at the same digest keep their times.
    pub at: Timestamp,
}

/// One incremental change, typically derived from a registry notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagChange {
    /// `repository:tag` now points at `digest`. `manifests` carries the manifest and, for a
    /// list, its children, unless the store already has them.
    Put {
        /// Repository name.
        repository: RepositoryName,
        /// Tag name.
        tag: Tag,
        /// Digest the tag points at.
        digest: Digest,
        /// Manifests the store may not have yet.
        manifests: Vec<Manifest>,
        /// When it happened (the notification's timestamp, else when it was seen).
        at: Timestamp,
    },
    /// `repository:tag` no longer exists.
    DeleteTag {
        /// Repository name.
        repository: RepositoryName,
        /// Tag name.
        tag: Tag,
        /// When it happened (the notification's timestamp, else when it was seen).
        at: Timestamp,
    },
    /// The manifest `digest` was pushed to `repository` by digest, without a tag (a
    /// list's child, an artifact, `skopeo copy` by digest). The store keeps it with the
    /// repository until a [`DeleteManifest`](TagChange::DeleteManifest) removes it; while
    /// no tag reaches it, the manifest listing shows it as untagged. It never appears in
    /// index answers, which list tagged content only.
    PutUntagged {
        /// Repository name.
        repository: RepositoryName,
        /// What the registry serves for the digest.
        manifest: PushedManifest,
    },
    /// `repository:tag` now points at an artifact (see [`RepositorySnapshot::artifacts`]):
    /// the repository holds `manifest` by digest (as [`PutUntagged`](TagChange::PutUntagged)
    /// would, keeping the first push's facts when it already does) and the tag points at it.
    PutArtifact {
        /// Repository name.
        repository: RepositoryName,
        /// Tag name.
        tag: Tag,
        /// What the registry serves for the tag.
        manifest: PushedManifest,
        /// When it happened (the notification's timestamp, else when it was seen).
        at: Timestamp,
    },
    /// The manifest `digest` was deleted from `repository`: every tag of that repository
    /// pointing at it is gone.
    DeleteManifest {
        /// Repository name.
        repository: RepositoryName,
        /// Digest of the deleted manifest.
        digest: Digest,
        /// When it happened (the notification's timestamp, else when it was seen).
        at: Timestamp,
    },
}

impl TagChange {
    /// The repository the change applies to.
    pub fn repository(&self) -> &RepositoryName {
        match self {
            TagChange::Put { repository, .. }
            | TagChange::PutUntagged { repository, .. }
            | TagChange::PutArtifact { repository, .. }
            | TagChange::DeleteTag { repository, .. }
            | TagChange::DeleteManifest { repository, .. } => repository,
        }
    }

    /// When the change happened.
    pub fn at(&self) -> Timestamp {
        match self {
            TagChange::Put { at, .. }
            | TagChange::PutArtifact { at, .. }
            | TagChange::DeleteTag { at, .. }
            | TagChange::DeleteManifest { at, .. } => *at,
            TagChange::PutUntagged { manifest, .. } => manifest.pushed,
        }
    }
}

/// A manifest a repository holds by digest: what a push by digest (or the registry's
/// `HEAD`) tells about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedManifest {
    /// Digest of the manifest.
    pub digest: Digest,
    /// Its media type (never empty).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was pushed (the notification's timestamp, else when it was seen).
    pub pushed: Timestamp,
    /// What the referrers API filters on: its `artifactType`, else the media type of
    /// its config (an image manifest's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifest it refers to (`subject`, OCI 1.1): a signature's image, an SBOM's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// Its annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// [`StoreError::Invalid`] for `what` (which input is wrong) and `problem` (why).
fn invalid(what: impl std::fmt::Display, problem: &str) -> StoreError {
    StoreError::Invalid(format!("{what}: {problem}"))
}

/// Checks manifests supplied for `repository`: every media type must be non-empty.
fn check_supplied(repository: &RepositoryName, manifests: &[Manifest]) -> Result<(), StoreError> {
    match manifests.iter().find(|m| m.media_type().is_empty()) {
        Some(manifest) => Err(invalid(
            format_args!("repository {repository}: manifest {}", manifest.digest()),
            "media type is empty",
        )),
        None => Ok(()),
    }
}

/// Checks one entry of `list`, written for `repository`, against what it resolved to:
/// `None` when the entry is neither supplied nor stored ([`StoreError::MissingManifest`]),
/// `Some(true)` when it is a list ([`StoreError::Invalid`]: entries must be images), and
/// `Some(false)` for an image, which is accepted.
pub fn check_list_entry(
    repository: &RepositoryName,
    list: &Digest,
    entry: &Digest,
    entry_is_list: Option<bool>,
) -> Result<(), StoreError> {
    match entry_is_list {
        Some(false) => Ok(()),
        Some(true) => Err(invalid(
            format_args!("repository {repository}: list {list} entry {entry}"),
            "a list entry must be an image, not another list",
        )),
        None => Err(StoreError::MissingManifest {
            repository: repository.to_string(),
            digest: entry.clone(),
        }),
    }
}

impl RepositorySnapshot {
    /// The store contract's checks of the input alone, before any stored state is
    /// consulted, beyond what the types guarantee (the name and the tags are valid by
    /// construction): no supplied manifest has an empty media type. Failures are
    /// [`StoreError::Invalid`], naming the first offending input.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_supplied(&self.name, &self.manifests)?;
        if let Some(tag) = self.artifacts.keys().find(|t| self.tags.contains_key(*t)) {
            return Err(invalid(
                format_args!("repository {}: tag {tag}", self.name),
                "a tag cannot point at an image and an artifact at once",
            ));
        }
        match self.artifacts.values().find(|m| m.media_type.is_empty()) {
            Some(artifact) => Err(empty_media_type(&self.name, &artifact.digest)),
            None => Ok(()),
        }
    }

    /// The repository's whole tag → digest map: its image tags and its artifact tags.
    pub fn all_tags(&self) -> BTreeMap<Tag, Digest> {
        let artifacts = self
            .artifacts
            .iter()
            .map(|(tag, manifest)| (tag.clone(), manifest.digest.clone()));
        self.tags.clone().into_iter().chain(artifacts).collect()
    }
}

/// [`StoreError::Invalid`] for a manifest held by digest whose media type is empty.
fn empty_media_type(repository: &RepositoryName, digest: &Digest) -> StoreError {
    invalid(
        format_args!("repository {repository}: manifest {digest}"),
        "media type is empty",
    )
}

impl TagChange {
    /// The store contract's checks of the input alone: for [`TagChange::Put`], the same
    /// as [`RepositorySnapshot::validate`] for its manifests. Deletions are not checked:
    /// deleting what cannot exist changes nothing.
    pub fn validate(&self) -> Result<(), StoreError> {
        match self {
            TagChange::Put {
                repository,
                manifests,
                ..
            } => check_supplied(repository, manifests),
            TagChange::PutUntagged {
                repository,
                manifest,
            }
            | TagChange::PutArtifact {
                repository,
                manifest,
                ..
            } if manifest.media_type.is_empty() => {
                Err(empty_media_type(repository, &manifest.digest))
            }
            TagChange::PutUntagged { .. }
            | TagChange::PutArtifact { .. }
            | TagChange::DeleteTag { .. }
            | TagChange::DeleteManifest { .. } => Ok(()),
        }
    }
}

/// Descriptive text of an image, resolved from its labels and annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description {
    /// Human title, when any known key carries one.
    pub title: Option<String>,
    /// One-paragraph description, when any known key carries one.
    pub description: Option<String>,
}

/// Keys consulted for a title, in order: OCI annotation, then labels.
pub const TITLE_KEYS: &[&str] = &[
    "org.opencontainers.image.title",
    "org.label-schema.name",
    "io.k8s.display-name",
    "name",
];
/// Keys consulted for a description, in order: OCI annotation, then labels.
pub const DESCRIPTION_KEYS: &[&str] = &[
    "org.opencontainers.image.description",
    "org.label-schema.description",
    "io.k8s.description",
    "summary",
    "description",
];

impl Description {
    /// Resolves title and description: the OCI annotations
    /// `org.opencontainers.image.title` / `.description` first, then the labels
    /// `org.opencontainers.image.*`, `org.label-schema.name` / `.description`,
    /// `io.k8s.display-name` / `io.k8s.description`, `name`, `summary`, `description`.
    pub fn resolve(
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Self {
        let pick = |keys: &[&str]| {
            let from_annotation = annotations.get(keys[0]);
            from_annotation
                .into_iter()
                .chain(keys.iter().filter_map(|k| labels.get(*k)))
                .map(|v| v.trim())
                .find(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Description {
            title: pick(TITLE_KEYS),
            description: pick(DESCRIPTION_KEYS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_contract_checks_name_the_input() {
        let digest = Digest::sha256_of(b"x");
        let image = |media_type: &str| {
            Manifest::Image(Image {
                digest: digest.clone(),
                media_type: media_type.to_owned(),
                platform: Platform::new("linux", "amd64"),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                created: None,
                config_digest: None,
                size: Some(500),
            })
        };
        let message = |result: Result<(), StoreError>| match result {
            Err(StoreError::Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let app = RepositoryName::parse("app").unwrap();
        let snapshot = |name: &str, tag: &str, media_type: &str| RepositorySnapshot {
            artifacts: Default::default(),
            name: RepositoryName::parse(name).unwrap(),
            tags: BTreeMap::from([(Tag::parse(tag).unwrap(), digest.clone())]),
            manifests: vec![image(media_type)],
            at: Timestamp::from_millis(1),
        };
        assert!(snapshot("app", "latest", OCI_MANIFEST).validate().is_ok());
        assert_eq!(
            message(snapshot("app", "latest", "").validate()),
            format!("repository app: manifest {digest}: media type is empty")
        );
        let put = TagChange::Put {
            repository: app.clone(),
            tag: Tag::parse("latest").unwrap(),
            digest: digest.clone(),
            manifests: vec![image("")],
            at: Timestamp::from_millis(1),
        };
        assert_eq!(
            message(put.validate()),
            format!("repository app: manifest {digest}: media type is empty")
        );
        let delete = TagChange::DeleteTag {
            repository: app.clone(),
            tag: Tag::parse("x").unwrap(),
            at: Timestamp::from_millis(1),
        };
        assert!(delete.validate().is_ok());
        let list = Digest::sha256_of(b"list");
        assert!(check_list_entry(&app, &list, &digest, Some(false)).is_ok());
        assert_eq!(
            message(check_list_entry(&app, &list, &digest, Some(true))),
            format!(
                "repository app: list {list} entry {digest}: a list entry must be an image, not another list"
            )
        );
        assert!(matches!(
            check_list_entry(&app, &list, &digest, None),
            Err(StoreError::MissingManifest { .. })
        ));
    }

    #[test]
    fn description_order() {
        let mut labels = BTreeMap::new();
        labels.insert("name".to_owned(), "plain".to_owned());
        labels.insert("io.k8s.display-name".to_owned(), "k8s".to_owned());
        let mut annotations = BTreeMap::new();
        assert_eq!(
            Description::resolve(&labels, &annotations).title.as_deref(),
            Some("k8s")
        );
        annotations.insert(
            "org.opencontainers.image.title".to_owned(),
            "oci".to_owned(),
        );
        assert_eq!(
            Description::resolve(&labels, &annotations).title.as_deref(),
            Some("oci")
        );
        assert_eq!(
            Description::resolve(&labels, &annotations).description,
            None
        );
    }
}
