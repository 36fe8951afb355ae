//! Builders for the data the conformance suite stores: images (Flatpak-style ones with
//! labels), image lists, repository snapshots and tag changes.
//!
//! Digests are derived from a seed string (`sha256` of the seed), so a test names its
//! manifests by short words and two fixtures with the same seed are the same manifest.

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::model::{
    DOCKER_MANIFEST_LIST, Image, ImageList, ListEntry, Manifest, OCI_INDEX, OCI_MANIFEST, Platform,
    PushedManifest, RepositorySnapshot, TagChange,
};
use crate::name::{RepositoryName, Tag};
use crate::query::IndexQuery;
use crate::response::RepositoryEntry;
use crate::timestamp::Timestamp;

/// The digest fixtures derive from `seed`.
pub fn digest(seed: &str) -> Digest {
    Digest::sha256_of(seed.as_bytes())
}

/// Parses a raw query string, panicking with the query on error (fixtures are trusted).
pub fn query(raw: &str) -> IndexQuery {
    IndexQuery::parse(raw).unwrap_or_else(|e| panic!("fixture query {raw:?}: {e}"))
}

/// Parses a repository name, panicking with the name on error (fixtures are trusted).
pub fn repository_name(name: &str) -> RepositoryName {
    RepositoryName::parse(name).unwrap_or_else(|e| panic!("fixture repository name: {e}"))
}

/// Parses a tag, panicking with the tag on error (fixtures are trusted).
pub fn tag_name(tag: &str) -> Tag {
    Tag::parse(tag).unwrap_or_else(|e| panic!("fixture tag: {e}"))
}

/// A `linux/amd64` OCI image without labels or annotations, digest from `seed`.
pub fn image(seed: &str) -> ImageBuilder {
    ImageBuilder(Image {
        digest: digest(seed),
        media_type: OCI_MANIFEST.to_owned(),
        platform: Platform::new("linux", "amd64"),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        created: None,
        config_digest: None,
        size: Some(fixture_size(seed)),
    })
}

/// A made-up manifest size, different for different seeds.
fn fixture_size(seed: &str) -> u64 {
    400 + seed.len() as u64 * 7
}

/// Flatpak's name for a GOARCH value, as written into `org.flatpak.ref`.
fn flatpak_arch(goarch: &str) -> &str {
    match goarch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        other => other,
    }
}

/// An image like the ones Flatpak publishes: `org.flatpak.ref` =
/// `app/<app_id>/<arch>/stable` plus metadata, size and appstream labels, platform
/// `linux/<goarch>`, digest from `app_id` and `goarch`.
pub fn flatpak_app(app_id: &str, goarch: &str) -> ImageBuilder {
    let arch = flatpak_arch(goarch);
    image(&format!("flatpak {app_id} {goarch}"))
        .arch(goarch)
        .label("org.flatpak.ref", &format!("app/{app_id}/{arch}/stable"))
        .label(
            "org.flatpak.metadata",
            &format!("[Application]\nname={app_id}\nruntime=org.example.Platform/{arch}/1\n"),
        )
        .label("org.flatpak.download-size", "1024")
        .label("org.flatpak.installed-size", "4096")
        .label(
            "org.freedesktop.appstream.appdata",
            &format!("<?xml version=\"1.0\"?><components><component type=\"desktop\"><id>{app_id}</id></component></components>"),
        )
}

/// Builds an [`Image`].
#[derive(Debug, Clone)]
pub struct ImageBuilder(Image);

impl ImageBuilder {
    /// Sets the config's OS.
    pub fn os(mut self, os: &str) -> Self {
        self.0.platform.os = os.to_owned();
        self
    }
    /// Sets the config's architecture.
    pub fn arch(mut self, architecture: &str) -> Self {
        self.0.platform.architecture = architecture.to_owned();
        self
    }
    /// Sets the config's CPU variant.
    pub fn variant(mut self, variant: &str) -> Self {
        self.0.platform.variant = Some(variant.to_owned());
        self
    }
    /// Adds a config label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.labels.insert(key.to_owned(), value.to_owned());
        self
    }
    /// Adds a manifest annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.annotations.insert(key.to_owned(), value.to_owned());
        self
    }
    /// Sets the manifest media type.
    pub fn media_type(mut self, media_type: &str) -> Self {
        self.0.media_type = media_type.to_owned();
        self
    }
    /// Sets `created` and the config digest (derived from `created`).
    pub fn created(mut self, created: &str) -> Self {
        self.0.created = Some(created.to_owned());
        self.0.config_digest = Some(digest(&format!("config {created}")));
        self
    }
    /// Sets the manifest size (`None`: stored before sizes were kept).
    pub fn size(mut self, size: Option<u64>) -> Self {
        self.0.size = size;
        self
    }
    /// The image.
    pub fn build(self) -> Image {
        self.0
    }
}

/// An image list and the images it names.
#[derive(Debug, Clone)]
pub struct ListFixture {
    /// The list manifest.
    pub list: ImageList,
    /// Its children, in list order.
    pub children: Vec<Image>,
}

impl ListFixture {
    /// The list's digest.
    pub fn digest(&self) -> &Digest {
        &self.list.digest
    }
    /// The list followed by its children, as a snapshot or `Put` carries them.
    pub fn manifests(&self) -> Vec<Manifest> {
        std::iter::once(Manifest::List(self.list.clone()))
            .chain(self.children.iter().cloned().map(Manifest::Image))
            .collect()
    }
}

/// An empty OCI image index, digest from `seed`.
pub fn list(seed: &str) -> ListBuilder {
    ListBuilder(ListFixture {
        list: ImageList {
            digest: digest(seed),
            media_type: OCI_INDEX.to_owned(),
            annotations: BTreeMap::new(),
            entries: Vec::new(),
            size: Some(fixture_size(seed)),
        },
        children: Vec::new(),
    })
}

/// Builds a [`ListFixture`].
#[derive(Debug, Clone)]
pub struct ListBuilder(ListFixture);

impl ListBuilder {
    /// Adds a child whose list entry states the child's own config platform.
    pub fn child(self, image: &Image) -> Self {
        let platform = image.platform.clone();
        self.child_on(image, Some(platform))
    }
    /// Adds a child with the platform the list states for it (`None`: the list states
    /// none, so the config's applies).
    pub fn child_on(mut self, image: &Image, platform: Option<Platform>) -> Self {
        self.0.list.entries.push(ListEntry {
            digest: image.digest.clone(),
            platform,
        });
        self.0.children.push(image.clone());
        self
    }
    /// Adds a list annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0
            .list
            .annotations
            .insert(key.to_owned(), value.to_owned());
        self
    }
    /// Makes it a Docker manifest list instead of an OCI index.
    pub fn docker(mut self) -> Self {
        self.0.list.media_type = DOCKER_MANIFEST_LIST.to_owned();
        self
    }
    /// The list.
    pub fn build(self) -> ListFixture {
        self.0
    }
}

/// Starts a snapshot of repository `name`.
pub fn repo(name: &str) -> SnapshotBuilder {
    SnapshotBuilder(RepositorySnapshot {
        artifacts: Default::default(),
        name: repository_name(name),
        tags: BTreeMap::new(),
        manifests: Vec::new(),
        at: Timestamp::now(),
    })
}

/// Builds a [`RepositorySnapshot`], carrying every manifest its tags need.
#[derive(Debug, Clone)]
pub struct SnapshotBuilder(RepositorySnapshot);

impl SnapshotBuilder {
    fn carry(&mut self, manifest: Manifest) {
        if !self
            .0
            .manifests
            .iter()
            .any(|m| m.digest() == manifest.digest())
        {
            self.0.manifests.push(manifest);
        }
    }
    /// Tags `image` as `tag`.
    pub fn image(mut self, tag: &str, image: &Image) -> Self {
        self.0.tags.insert(tag_name(tag), image.digest.clone());
        self.carry(Manifest::Image(image.clone()));
        self
    }
    /// Tags `list` as `tag`.
    pub fn list(mut self, tag: &str, list: &ListFixture) -> Self {
        self.0.tags.insert(tag_name(tag), list.digest().clone());
        for manifest in list.manifests() {
            self.carry(manifest);
        }
        self
    }
    /// Tags a digest without carrying its manifest (it must already be stored).
    pub fn digest(mut self, tag: &str, digest: &Digest) -> Self {
        self.0.tags.insert(tag_name(tag), digest.clone());
        self
    }
    /// Carries a manifest no tag needs.
    pub fn extra(mut self, manifest: Manifest) -> Self {
        self.carry(manifest);
        self
    }
    /// Drops every carried manifest (for snapshots of already stored content).
    pub fn without_manifests(mut self) -> Self {
        self.0.manifests.clear();
        self
    }
    /// Sets when the snapshot was read (default: when [`repo`] was called).
    pub fn at(mut self, at: Timestamp) -> Self {
        self.0.at = at;
        self
    }
    /// The snapshot.
    pub fn build(self) -> RepositorySnapshot {
        self.0
    }
}

/// `repository:tag` → `image`, carrying the image.
pub fn put_image(repository: &str, tag: &str, image: &Image) -> TagChange {
    TagChange::Put {
        repository: repository_name(repository),
        tag: tag_name(tag),
        digest: image.digest.clone(),
        manifests: vec![Manifest::Image(image.clone())],
        at: Timestamp::now(),
    }
}

/// `repository:tag` → `list`, carrying the list and its children.
pub fn put_list(repository: &str, tag: &str, list: &ListFixture) -> TagChange {
    TagChange::Put {
        repository: repository_name(repository),
        tag: tag_name(tag),
        digest: list.digest().clone(),
        manifests: list.manifests(),
        at: Timestamp::now(),
    }
}

/// `digest` (of `media_type`, `size` bytes) pushed to `repository` without a tag.
pub fn put_untagged(repository: &str, digest: &Digest, media_type: &str, size: u64) -> TagChange {
    TagChange::PutUntagged {
        repository: repository_name(repository),
        manifest: PushedManifest {
            digest: digest.clone(),
            media_type: media_type.to_owned(),
            size,
            pushed: Timestamp::now(),
            artifact_type: None,
            subject: None,
            annotations: BTreeMap::new(),
        },
    }
}

/// An artifact of `artifact_type` referring to `subject`, pushed to `repository` by
/// digest (digest from `seed`).
pub fn put_referrer(
    repository: &str,
    seed: &str,
    artifact_type: &str,
    subject: &Digest,
) -> TagChange {
    TagChange::PutUntagged {
        repository: repository_name(repository),
        manifest: PushedManifest {
            digest: digest(seed),
            media_type: OCI_MANIFEST.to_owned(),
            size: fixture_size(seed),
            pushed: Timestamp::now(),
            artifact_type: Some(artifact_type.to_owned()),
            subject: Some(subject.clone()),
            annotations: BTreeMap::from([("org.example.seed".to_owned(), seed.to_owned())]),
        },
    }
}

/// An artifact of `artifact_type` (digest from `seed`), as a repository holds it by
/// digest.
pub fn artifact(seed: &str, artifact_type: &str) -> PushedManifest {
    PushedManifest {
        digest: digest(seed),
        media_type: OCI_MANIFEST.to_owned(),
        size: fixture_size(seed),
        pushed: Timestamp::now(),
        artifact_type: Some(artifact_type.to_owned()),
        subject: None,
        annotations: BTreeMap::from([("org.example.seed".to_owned(), seed.to_owned())]),
    }
}

/// `repository:tag` now points at `artifact`.
pub fn put_artifact(repository: &str, tag: &str, artifact: &PushedManifest) -> TagChange {
    TagChange::PutArtifact {
        repository: repository_name(repository),
        tag: tag_name(tag),
        manifest: artifact.clone(),
        at: artifact.pushed,
    }
}

/// `repository:tag` deleted.
pub fn delete_tag(repository: &str, tag: &str) -> TagChange {
    TagChange::DeleteTag {
        repository: repository_name(repository),
        tag: tag_name(tag),
        at: Timestamp::now(),
    }
}

/// Manifest `digest` deleted from `repository`.
pub fn delete_manifest(repository: &str, digest: &Digest) -> TagChange {
    TagChange::DeleteManifest {
        repository: repository_name(repository),
        digest: digest.clone(),
        at: Timestamp::now(),
    }
}

/// `change`, happening at `at` instead of now.
pub fn at(mut change: TagChange, at: Timestamp) -> TagChange {
    match &mut change {
        TagChange::Put { at: when, .. }
        | TagChange::DeleteTag { at: when, .. }
        | TagChange::DeleteManifest { at: when, .. } => *when = at,
        TagChange::PutUntagged { manifest, .. } => manifest.pushed = at,
        TagChange::PutArtifact {
            manifest, at: when, ..
        } => {
            manifest.pushed = at;
            *when = at;
        }
    }
    change
}

/// The instant `seconds` seconds after 2026-01-01T00:00:00Z, for tests of times.
pub fn time(seconds: i64) -> Timestamp {
    Timestamp::from_millis(1_767_225_600_000 + seconds * 1000)
}

/// Repository names of a query result, in order.
pub fn names(results: &[RepositoryEntry]) -> Vec<&str> {
    results.iter().map(|r| r.name.as_str()).collect()
}

/// `(repository, image digest)` for every directly tagged image of a result, in order.
pub fn image_digests(results: &[RepositoryEntry]) -> Vec<(&str, &Digest)> {
    results
        .iter()
        .flat_map(|r| r.images.iter().map(move |i| (r.name.as_str(), &i.digest)))
        .collect()
}

/// `(repository, list digest, child digests)` for every list of a result, in order.
pub fn list_children(results: &[RepositoryEntry]) -> Vec<(&str, &Digest, Vec<&Digest>)> {
    results
        .iter()
        .flat_map(|r| {
            r.lists.iter().map(move |l| {
                (
                    r.name.as_str(),
                    &l.digest,
                    l.images.iter().map(|i| &i.digest).collect(),
                )
            })
        })
        .collect()
}

/// What [`IndexQuery::evaluate_repository`] gives for `snapshots` taken as the whole
/// store (later snapshots of the same repository replace earlier ones; the first copy of
/// a manifest wins, as in a store). The expected answer of `Store::query`.
pub fn reference(snapshots: &[RepositorySnapshot], query: &IndexQuery) -> Vec<RepositoryEntry> {
    let mut manifests: BTreeMap<&Digest, &Manifest> = BTreeMap::new();
    let mut repositories: BTreeMap<&RepositoryName, &BTreeMap<Tag, Digest>> = BTreeMap::new();
    for snapshot in snapshots {
        for manifest in &snapshot.manifests {
            manifests.entry(manifest.digest()).or_insert(manifest);
        }
        repositories.insert(&snapshot.name, &snapshot.tags);
    }
    repositories
        .into_iter()
        .filter_map(|(name, tags)| {
            query.evaluate_repository(name, tags, |d| manifests.get(d).copied())
        })
        .collect()
}

/// Stores every snapshot with `replace_repository`, panicking on error.
pub async fn load(store: &dyn crate::Store, snapshots: &[RepositorySnapshot]) {
    for snapshot in snapshots {
        if let Err(e) = store.replace_repository(snapshot).await {
            panic!("loading fixture {}: {e}", snapshot.name);
        }
    }
}

/// Runs `raw` against `store` and returns the response bytes (registry `/`).
pub async fn query_json(store: &dyn crate::Store, raw: &str) -> Vec<u8> {
    match store.query(&query(raw)).await {
        Ok(results) => crate::IndexResponse::new("/", results).to_json(),
        Err(e) => panic!("query {raw:?}: {e}"),
    }
}
