//! Icon garbage collection against a store: `IconStore::collect` keeps exactly the icons
//! the store's answers reference, and deletes nothing when the store changes meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use flagstate_core::icons::{IconCollection, IconStore, icon_path};
use flagstate_core::model::{
    Image, ImageList, ListEntry, OCI_INDEX, OCI_MANIFEST, Platform, RepositorySnapshot,
};
use flagstate_core::store::{GcStats, Generation, SearchPage, StoreError};
use flagstate_core::{
    Digest, IndexQuery, IndexResponse, Manifest, MemoryStore, RepositoryEntry, Store, TagChange,
};

fn png(name: &str) -> Vec<u8> {
    [b"\x89PNG\r\n\x1a\n".as_slice(), name.as_bytes()].concat()
}

fn data_uri(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn image(seed: &str, icon_key: &str, in_labels: bool, icon: &[u8]) -> Image {
    let entry = BTreeMap::from([(icon_key.to_owned(), data_uri(icon))]);
    let (labels, annotations) = if in_labels {
        (entry, BTreeMap::new())
    } else {
        (BTreeMap::new(), entry)
    };
    Image {
        digest: Digest::sha256_of(seed.as_bytes()),
        media_type: OCI_MANIFEST.into(),
        platform: Platform::new("linux", "amd64"),
        labels,
        annotations,
        created: None,
        config_digest: None,
        size: Some(500),
    }
}

fn single(name: &str, image: Image) -> RepositorySnapshot {
    RepositorySnapshot {
        artifacts: Default::default(),
        name: name.parse().unwrap(),
        tags: BTreeMap::from([("latest".parse().unwrap(), image.digest.clone())]),
        manifests: vec![Manifest::Image(image)],
        at: flagstate_core::Timestamp::now(),
    }
}

/// Writes the icon files of the store's whole index, as a server answering it would.
async fn answer(icons: &IconStore, store: &Arc<dyn Store>) -> BTreeSet<String> {
    let mut response = IndexResponse::new("/", store.query(&IndexQuery::all()).await.unwrap());
    icons.rewrite(&mut response).unwrap().referenced
}

#[tokio::test]
async fn collect_keeps_what_answers_reference_and_deletes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let icons = IconStore::new(dir.path(), "/icons/");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // A label icon on a tagged image; an annotation icon on a list child.
    let old = png("old");
    store
        .replace_repository(&single(
            "app/a",
            image("a1", "org.freedesktop.appstream.icon-64", true, &old),
        ))
        .await
        .unwrap();
    let child_icon = png("child");
    let child = image(
        "b1",
        "org.freedesktop.appstream.icon-128",
        false,
        &child_icon,
    );
    let list = ImageList {
        digest: Digest::sha256_of(b"list"),
        media_type: OCI_INDEX.into(),
        annotations: BTreeMap::new(),
        entries: vec![ListEntry {
            digest: child.digest.clone(),
            platform: Some(Platform::new("linux", "amd64")),
        }],
        size: Some(500),
    };
    store
        .replace_repository(&RepositorySnapshot {
            artifacts: Default::default(),
            name: "app/b".parse().unwrap(),
            tags: BTreeMap::from([("latest".parse().unwrap(), list.digest.clone())]),
            manifests: vec![Manifest::List(list), Manifest::Image(child)],
            at: flagstate_core::Timestamp::now(),
        })
        .await
        .unwrap();
    let first = answer(&icons, &store).await;
    assert_eq!(
        first,
        BTreeSet::from([icon_path(&old), icon_path(&child_icon)])
    );

    // A new version with a new icon: the old file is no longer referenced.
    let new = png("new");
    store
        .replace_repository(&single(
            "app/a",
            image("a2", "org.freedesktop.appstream.icon-64", true, &new),
        ))
        .await
        .unwrap();
    answer(&icons, &store).await;
    std::fs::write(dir.path().join("README"), "not an icon").unwrap();
    for name in [&old, &new, &child_icon] {
        assert!(dir.path().join(icon_path(name)).is_file());
    }

    assert_eq!(
        icons.collect(&store).await.unwrap(),
        IconCollection::Removed(1)
    );
    assert!(!dir.path().join(icon_path(&old)).exists());
    assert!(dir.path().join(icon_path(&new)).is_file());
    assert!(dir.path().join(icon_path(&child_icon)).is_file());
    assert!(
        dir.path().join("README").is_file(),
        "only icon-shaped names go"
    );
    assert_eq!(
        icons.collect(&store).await.unwrap(),
        IconCollection::Removed(0)
    );

    // Nothing tagged any more: every icon goes.
    store
        .remove_repository(&"app/a".parse().unwrap())
        .await
        .unwrap();
    store
        .remove_repository(&"app/b".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        icons.collect(&store).await.unwrap(),
        IconCollection::Removed(2)
    );
}

/// A store whose first whole-index query is followed by a write, as when a push lands
/// while the collection lists the referenced icons.
#[derive(Debug)]
struct WriteDuringQuery {
    inner: MemoryStore,
    pending: AtomicBool,
}

#[async_trait]
impl Store for WriteDuringQuery {
    async fn replace_repository(&self, s: &RepositorySnapshot) -> Result<Generation, StoreError> {
        self.inner.replace_repository(s).await
    }
    async fn remove_repository(
        &self,
        name: &flagstate_core::RepositoryName,
    ) -> Result<Generation, StoreError> {
        self.inner.remove_repository(name).await
    }
    async fn apply(&self, change: &TagChange) -> Result<Generation, StoreError> {
        self.inner.apply(change).await
    }
    async fn repositories(&self) -> Result<Vec<flagstate_core::RepositoryName>, StoreError> {
        self.inner.repositories().await
    }
    async fn repository_tags(
        &self,
        name: &flagstate_core::RepositoryName,
    ) -> Result<Option<BTreeMap<flagstate_core::Tag, Digest>>, StoreError> {
        self.inner.repository_tags(name).await
    }
    async fn known_manifests(&self, digests: &[Digest]) -> Result<BTreeSet<Digest>, StoreError> {
        self.inner.known_manifests(digests).await
    }
    async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>, StoreError> {
        self.inner.manifest(digest).await
    }
    async fn query(&self, query: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError> {
        let answer = self.inner.query(query).await?;
        if self.pending.swap(false, Ordering::SeqCst) {
            // The pushed version reuses the icon that looked unreferenced a moment ago.
            self.inner
                .replace_repository(&single(
                    "app/c",
                    image(
                        "c2",
                        "org.freedesktop.appstream.icon-64",
                        true,
                        &png("reused"),
                    ),
                ))
                .await?;
        }
        Ok(answer)
    }
    async fn list_repositories(
        &self,
        listing: &flagstate_core::discovery::RepositoryListing,
    ) -> Result<Vec<flagstate_core::discovery::RepositoryInfo>, StoreError> {
        self.inner.list_repositories(listing).await
    }
    async fn list_tags(
        &self,
        repository: &flagstate_core::RepositoryName,
        listing: &flagstate_core::discovery::TagListing,
    ) -> Result<Option<Vec<flagstate_core::discovery::TagInfo>>, StoreError> {
        self.inner.list_tags(repository, listing).await
    }
    async fn list_manifests(
        &self,
        repository: &flagstate_core::RepositoryName,
        listing: &flagstate_core::ManifestListing,
    ) -> Result<Option<Vec<flagstate_core::ManifestInfo>>, StoreError> {
        self.inner.list_manifests(repository, listing).await
    }
    async fn list_referrers(
        &self,
        repository: &flagstate_core::RepositoryName,
        subject: &flagstate_core::Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<flagstate_core::PushedManifest>>, StoreError> {
        self.inner
            .list_referrers(repository, subject, artifact_type)
            .await
    }
    async fn tag_history(
        &self,
        repository: &flagstate_core::RepositoryName,
        tag: &flagstate_core::Tag,
    ) -> Result<Option<Vec<flagstate_core::discovery::HistoryEntry>>, StoreError> {
        self.inner.tag_history(repository, tag).await
    }
    async fn prune_history(
        &self,
        retention: &flagstate_core::discovery::HistoryRetention,
        now: flagstate_core::Timestamp,
    ) -> Result<u64, StoreError> {
        self.inner.prune_history(retention, now).await
    }
    async fn changes_since(
        &self,
        after: flagstate_core::ChangeCursor,
        filter: &flagstate_core::ChangeFilter,
        limit: usize,
    ) -> Result<flagstate_core::ChangePage, StoreError> {
        self.inner.changes_since(after, filter, limit).await
    }
    async fn prune_changes(
        &self,
        retention: &flagstate_core::ChangeRetention,
        now: flagstate_core::Timestamp,
    ) -> Result<u64, StoreError> {
        self.inner.prune_changes(retention, now).await
    }
    async fn delivery_cursor(
        &self,
        endpoint: &str,
    ) -> Result<Option<flagstate_core::ChangeCursor>, StoreError> {
        self.inner.delivery_cursor(endpoint).await
    }
    async fn set_delivery_cursor(
        &self,
        endpoint: &str,
        cursor: flagstate_core::ChangeCursor,
    ) -> Result<(), StoreError> {
        self.inner.set_delivery_cursor(endpoint, cursor).await
    }
    async fn search(&self, text: &str, offset: u64, limit: u64) -> Result<SearchPage, StoreError> {
        self.inner.search(text, offset, limit).await
    }
    async fn generation(&self) -> Result<Generation, StoreError> {
        self.inner.generation().await
    }
    async fn registry_url(&self) -> Result<Option<String>, StoreError> {
        self.inner.registry_url().await
    }
    async fn set_registry_url(&self, url: &str) -> Result<Generation, StoreError> {
        self.inner.set_registry_url(url).await
    }
    async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        self.inner.collect_garbage().await
    }
    async fn readiness(&self) -> Result<(), flagstate_core::store::StoreNotReady> {
        self.inner.readiness().await
    }
}

#[tokio::test]
async fn collect_deletes_nothing_when_the_store_changes_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let icons = IconStore::new(dir.path(), "/icons/");
    let racing = Arc::new(WriteDuringQuery {
        inner: MemoryStore::new(),
        pending: AtomicBool::new(false),
    });
    let store: Arc<dyn Store> = racing.clone();
    let reused = png("reused");
    store
        .replace_repository(&single(
            "app/c",
            image("c1", "org.freedesktop.appstream.icon-64", true, &reused),
        ))
        .await
        .unwrap();
    answer(&icons, &store).await;
    store
        .remove_repository(&"app/c".parse().unwrap())
        .await
        .unwrap();

    racing.pending.store(true, Ordering::SeqCst);
    assert_eq!(
        icons.collect(&store).await.unwrap(),
        IconCollection::StoreChanged
    );
    assert!(
        dir.path().join(icon_path(&reused)).is_file(),
        "the icon the new version needs is still there"
    );
    // The next pass sees the new version and keeps its icon.
    assert_eq!(
        icons.collect(&store).await.unwrap(),
        IconCollection::Removed(0)
    );
    assert!(dir.path().join(icon_path(&reused)).is_file());
}
