//! Full scans against a real distribution registry.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use flagstate_core::indexer::{IndexerError, NoProgress, ScanProgress};
use flagstate_core::model::{DOCKER_MANIFEST_LIST, OCI_INDEX, RepositorySnapshot};
use flagstate_core::registry::RegistryError;
use flagstate_core::store::{GcStats, Generation, SearchPage, StoreError};
use flagstate_core::testkit::{ImageSpec, ListFormat};
use flagstate_core::{
    Digest, IndexQuery, Manifest, MemoryStore, RepositoryEntry, Store, TagChange,
};
use serde_json::json;

fn flatpak(name: &str, arch: &str) -> ImageSpec {
    ImageSpec::new("linux", arch)
        .label("org.flatpak.ref", &format!("app/{name}/x86_64/stable"))
        .label("org.freedesktop.appstream.appdata", "<xml/>")
        .annotation("org.opencontainers.image.title", name)
}

#[tokio::test]
async fn push_scan_and_query() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let app = pusher
        .push_image(
            "apps/editor",
            Some("latest"),
            &flatpak("org.example.Editor", "amd64"),
        )
        .await
        .unwrap();
    pusher
        .tag("apps/editor", "stable", &app.digest)
        .await
        .unwrap();
    let docker = pusher
        .push_image(
            "tools/docker-style",
            Some("1.0"),
            &ImageSpec::new("linux", "arm64").docker().label("k", "v"),
        )
        .await
        .unwrap();
    let oci_list = pusher
        .push_list(
            "multi/oci",
            "latest",
            ListFormat::OciIndex,
            &[
                flatpak("org.example.Multi", "amd64"),
                flatpak("org.example.Multi", "arm64").variant("v8"),
            ],
        )
        .await
        .unwrap();
    let docker_list = pusher
        .push_list(
            "multi/docker",
            "v2",
            ListFormat::DockerList,
            &[
                ImageSpec::new("linux", "amd64"),
                ImageSpec::new("linux", "s390x"),
            ],
        )
        .await
        .unwrap();
    // A non-image artifact tagged directly, and a list holding a nested list and an artifact.
    pusher
        .push_image(
            "odd/things",
            Some("chart"),
            &ImageSpec::new("linux", "amd64").artifact("application/vnd.cncf.helm.config.v1+json"),
        )
        .await
        .unwrap();
    let plain = pusher
        .push_image("odd/things", None, &ImageSpec::new("linux", "ppc64le"))
        .await
        .unwrap();
    let artifact = pusher
        .push_image(
            "odd/things",
            None,
            &ImageSpec::new("linux", "amd64").artifact("application/vnd.example.sbom+json"),
        )
        .await
        .unwrap();
    let inner = pusher
        .push_list(
            "odd/things",
            "inner",
            ListFormat::OciIndex,
            &[ImageSpec::new("linux", "riscv64")],
        )
        .await
        .unwrap();
    let outer = pusher
        .push_raw_list(
            "odd/things",
            "nested",
            ListFormat::OciIndex,
            vec![
                json!({"mediaType": OCI_INDEX, "digest": inner.digest.as_str(), "size": 100}),
                json!({"mediaType": plain.media_type, "digest": plain.digest.as_str(), "size": plain.size,
                       "platform": {"os": "linux", "architecture": "ppc64le"}}),
                json!({"mediaType": artifact.media_type, "digest": artifact.digest.as_str(), "size": artifact.size,
                       "platform": {"os": "unknown", "architecture": "unknown"}}),
            ],
            vec![],
        )
        .await
        .unwrap();

    let (indexer, store) = indexer_for(client_config(&registry.url()));
    struct Counting(std::sync::Mutex<(u64, Vec<String>)>);
    impl ScanProgress for Counting {
        fn total_repositories(&self, n: u64) {
            self.0.lock().unwrap().0 = n;
        }
        fn repository_done(&self, name: &str, _m: u64) {
            self.0.lock().unwrap().1.push(name.to_owned());
        }
    }
    let progress = Counting(Default::default());
    let report = indexer.full_scan(&progress).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.repositories_failed);
    assert!(report.catalog_complete);
    assert_eq!(report.repositories_total, 5);
    assert_eq!(progress.0.lock().unwrap().0, 5);
    assert_eq!(progress.0.lock().unwrap().1.len(), 5);
    assert!(indexer.status().first_scan_done);

    let tags = store
        .repository_tags(&"apps/editor".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tags.get("latest"), Some(&app.digest));
    assert_eq!(tags.get("stable"), Some(&app.digest));
    let tags = store
        .repository_tags(&"tools/docker-style".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tags.get("1.0"), Some(&docker.digest));
    let Some(Manifest::List(list)) = store.manifest(&docker_list.digest).await.unwrap() else {
        panic!("docker list not stored")
    };
    assert_eq!(list.media_type, DOCKER_MANIFEST_LIST);
    assert_eq!(list.entries.len(), 2);

    // Artifacts and nested lists are skipped, not fatal: `chart` is dropped, `nested`
    // keeps only its plain image entry, `inner` is an ordinary list.
    let odd = store
        .repository_tags(&"odd/things".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!odd.contains_key("chart"), "{odd:?}");
    assert_eq!(odd.get("nested"), Some(&outer.digest));
    assert_eq!(odd.get("inner"), Some(&inner.digest));
    let Some(Manifest::List(nested)) = store.manifest(&outer.digest).await.unwrap() else {
        panic!("nested list not stored")
    };
    assert_eq!(nested.entries.len(), 1);
    assert_eq!(nested.entries[0].digest, plain.digest);

    // The query Flatpak sends finds the amd64 flatpak images, directly tagged or in lists.
    let q = IndexQuery::parse(
        "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest",
    )
    .unwrap();
    let results = store.query(&q).await.unwrap();
    let names: Vec<_> = results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["apps/editor", "multi/oci"]);
    assert_eq!(results[0].images[0].digest, app.digest);
    assert_eq!(
        results[0].images[0]
            .labels
            .get("org.flatpak.ref")
            .map(String::as_str),
        Some("app/org.example.Editor/x86_64/stable")
    );
    assert_eq!(
        results[0].images[0].tags.as_deref(),
        Some(&["latest".to_owned(), "stable".to_owned()][..])
    );
    assert_eq!(results[1].lists[0].digest, oci_list.digest);
    assert_eq!(results[1].lists[0].images.len(), 1);
    assert_eq!(
        results[1].lists[0].images[0].digest,
        oci_list.children[0].digest
    );
}

#[tokio::test]
async fn rescan_of_unchanged_registry_fetches_no_bodies() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let mut tags_total = 0;
    for r in 0..6 {
        let repo = format!("rescan/r{r}");
        for t in 0..3 {
            pusher
                .push_image(
                    &repo,
                    Some(&format!("t{t}")),
                    &ImageSpec::new("linux", "amd64").label("n", &format!("{r}-{t}")),
                )
                .await
                .unwrap();
            tags_total += 1;
        }
    }
    pusher
        .push_list(
            "rescan/list",
            "latest",
            ListFormat::OciIndex,
            &[
                ImageSpec::new("linux", "amd64"),
                ImageSpec::new("linux", "arm64"),
            ],
        )
        .await
        .unwrap();
    tags_total += 1;

    let (indexer, store) = indexer_for(client_config(&registry.url()));
    let first = indexer.full_scan(&NoProgress).await.unwrap();
    assert!(first.is_complete());
    assert_eq!(first.manifests_fetched, 18 + 3);
    assert_eq!(first.blobs_fetched, 18 + 2);
    let generation = store.generation().await.unwrap();

    let before = indexer.client().stats();
    let second = indexer.full_scan(&NoProgress).await.unwrap();
    let after = indexer.client().stats();
    assert!(second.is_complete());
    assert_eq!(second.manifests_fetched, 0);
    assert_eq!(
        after.manifest_gets - before.manifest_gets,
        0,
        "no manifest bodies"
    );
    assert_eq!(after.blob_gets - before.blob_gets, 0, "no blob bodies");
    assert_eq!(
        after.manifest_checks - before.manifest_checks,
        tags_total,
        "one conditional GET per tag"
    );
    assert_eq!(
        after.manifest_not_modified - before.manifest_not_modified,
        tags_total,
        "every one answered 304"
    );
    assert_eq!(after.manifest_heads, before.manifest_heads, "no HEAD");
    assert_eq!(
        after.tag_pages - before.tag_pages,
        7,
        "one tags/list per repository"
    );
    assert_eq!(after.catalog_pages - before.catalog_pages, 1);
    assert_eq!(
        store.generation().await.unwrap(),
        generation,
        "nothing visible changed"
    );

    // A moved tag comes back with its new manifest in the same request; a tag new to a
    // known repository that aliases a known manifest costs one HEAD and no body.
    let moved = pusher
        .push_image(
            "rescan/r0",
            Some("t0"),
            &ImageSpec::new("linux", "arm64").label("n", "moved"),
        )
        .await
        .unwrap();
    let aliased = store
        .repository_tags(&"rescan/r1".parse().unwrap())
        .await
        .unwrap()
        .unwrap()["t1"]
        .clone();
    pusher.tag("rescan/r1", "alias", &aliased).await.unwrap();
    let before = indexer.client().stats();
    let third = indexer.full_scan(&NoProgress).await.unwrap();
    let after = indexer.client().stats();
    assert!(third.is_complete());
    assert_eq!(after.manifest_checks - before.manifest_checks, tags_total);
    assert_eq!(
        after.manifest_not_modified - before.manifest_not_modified,
        tags_total - 1
    );
    assert_eq!(after.manifest_heads - before.manifest_heads, 1, "the alias");
    assert_eq!(after.manifest_gets, before.manifest_gets, "no separate GET");
    assert_eq!(
        after.blob_gets - before.blob_gets,
        1,
        "the moved image's config"
    );
    assert_eq!(third.manifests_fetched, 1);
    let r0 = store
        .repository_tags(&"rescan/r0".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r0["t0"], moved.digest);
    let r1 = store
        .repository_tags(&"rescan/r1".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r1["alias"], aliased);
    let found = store
        .query(&IndexQuery::parse("repository=rescan/r0&tag=t0").unwrap())
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].images.len(), 1);
    assert_eq!(found[0].images[0].digest, moved.digest);
    assert_eq!(found[0].images[0].architecture, "arm64");
}

#[tokio::test]
async fn vanished_and_emptied_repositories() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let keep = pusher
        .push_image("keep/me", Some("v1"), &ImageSpec::new("linux", "amd64"))
        .await
        .unwrap();
    let gone = pusher
        .push_image(
            "empty/soon",
            Some("v1"),
            &ImageSpec::new("linux", "amd64").label("x", "y"),
        )
        .await
        .unwrap();

    let (indexer, store) = indexer_for(client_config(&registry.url()));
    // A repository the registry never had (left over from an earlier registry state).
    store
        .replace_repository(&RepositorySnapshot {
            artifacts: Default::default(),
            name: "ghost/repo".parse().unwrap(),
            tags: BTreeMap::from([("old".parse().unwrap(), keep.digest.clone())]),
            manifests: vec![],
            at: flagstate_core::Timestamp::now(),
        })
        .await
        .unwrap_err(); // the digest is not stored yet: MissingManifest, nothing written
    indexer.full_scan(&NoProgress).await.unwrap();
    store
        .replace_repository(&RepositorySnapshot {
            artifacts: Default::default(),
            name: "ghost/repo".parse().unwrap(),
            tags: BTreeMap::from([("old".parse().unwrap(), keep.digest.clone())]),
            manifests: vec![],
            at: flagstate_core::Timestamp::now(),
        })
        .await
        .unwrap();

    pusher
        .delete_manifest("empty/soon", &gone.digest)
        .await
        .unwrap();
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.repositories_failed);
    assert_eq!(report.repositories_removed, ["ghost/repo"]);
    assert!(
        store
            .repository_tags(&"ghost/repo".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // `tags: null` after the delete: the repository stays, without tags.
    assert_eq!(
        store
            .repository_tags(&"empty/soon".parse().unwrap())
            .await
            .unwrap(),
        Some(BTreeMap::new())
    );
    assert_eq!(
        store
            .repository_tags(&"keep/me".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn many_repositories_do_not_deadlock() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let spec = ImageSpec::new("linux", "amd64");
    // 150 repositories (the original deadlocked past ~100); pushed concurrently.
    let pushes = (0..150).map(|i| {
        let pusher = pusher.clone();
        let spec = spec.clone().label("i", &i.to_string());
        async move {
            pusher
                .push_image(&format!("many/r{i:03}"), Some("latest"), &spec)
                .await
        }
    });
    for r in futures::future::join_all(pushes).await {
        r.unwrap();
    }
    let mut cfg = client_config(&registry.url());
    cfg.max_concurrency = 2;
    let (indexer, store) = indexer_for(cfg);
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        indexer.full_scan(&NoProgress),
    )
    .await
    .expect("scan finishes")
    .unwrap();
    assert_eq!(report.repositories_scanned, 150);
    assert_eq!(store.repositories().await.unwrap().len(), 150);

    // The real registry's catalog pagination (relative `Link` headers), with pages of 40.
    let proxy = Proxy::start(&registry.address()).await;
    proxy.rewrite("n=1000", "n=40");
    let client = flagstate_core::registry::RegistryClient::new(client_config(&proxy.url)).unwrap();
    let mut names = client.catalog().await.unwrap().valid;
    assert!(client.stats().catalog_pages >= 4, "{:?}", client.stats());
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 150);
    assert_eq!(names, store.repositories().await.unwrap());
}

#[tokio::test]
async fn catalog_unavailable_falls_back_to_configured_repositories() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    pusher
        .push_image("listed/one", Some("v1"), &ImageSpec::new("linux", "amd64"))
        .await
        .unwrap();
    pusher
        .push_image(
            "unlisted/two",
            Some("v1"),
            &ImageSpec::new("linux", "amd64"),
        )
        .await
        .unwrap();
    // Registries that do not offer the catalog answer 404 (or 401/405): injected.
    let proxy = Proxy::start(&registry.address()).await;
    proxy.add_rule(
        "/v2/_catalog",
        Fault::Status {
            code: 404,
            retry_after: None,
        },
        None,
    );

    let (indexer, _) = indexer_for(client_config(&proxy.url));
    match indexer.full_scan(&NoProgress).await {
        Err(IndexerError::NoRepositories(RegistryError::CatalogUnavailable {
            status: 404,
            url,
        })) => {
            assert!(url.ends_with("/v2/_catalog?n=1000"), "{url}");
        }
        other => panic!("expected NoRepositories, got {other:?}"),
    }
    let message = indexer.status().last_scan_error.unwrap();
    assert!(
        message.contains("catalog is unavailable") && message.contains("404"),
        "{message}"
    );

    let mut cfg = client_config(&proxy.url);
    cfg.repositories = vec!["listed/one".parse().unwrap()];
    let (indexer, store) = indexer_for(cfg);
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert!(!report.catalog_complete);
    assert_eq!(store.repositories().await.unwrap(), ["listed/one"]);
    let _ = Arc::clone(&indexer);
}

/// A store that, once, lets garbage collection run between the indexer's
/// `known_manifests` check and its write — the race the indexer must survive.
#[derive(Debug)]
struct RacingStore {
    inner: MemoryStore,
    race: std::sync::atomic::AtomicBool,
    victim: flagstate_core::RepositoryName,
}

#[async_trait::async_trait]
impl Store for RacingStore {
    async fn replace_repository(&self, s: &RepositorySnapshot) -> Result<Generation, StoreError> {
        if s.name != self.victim && self.race.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.inner.remove_repository(&self.victim).await?;
            self.inner.collect_garbage().await?;
        }
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
        self.inner.query(query).await
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
async fn manifest_collected_during_scan_is_refetched() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let spec = ImageSpec::new("linux", "amd64").label("shared", "yes");
    let a = pusher
        .push_image("race/a", Some("v1"), &spec)
        .await
        .unwrap();
    let b = pusher
        .push_image("race/b", Some("v1"), &spec)
        .await
        .unwrap();
    assert_eq!(a.digest, b.digest);

    let store = Arc::new(RacingStore {
        inner: MemoryStore::new(),
        race: std::sync::atomic::AtomicBool::new(false),
        victim: "race/a".parse().unwrap(),
    });
    let client =
        flagstate_core::registry::RegistryClient::new(client_config(&registry.url())).unwrap();
    let indexer = flagstate_core::indexer::Indexer::new(client, store.clone(), indexer_config());
    indexer
        .scan_repository(&"race/a".parse().unwrap())
        .await
        .unwrap();
    let gets = indexer.client().stats().manifest_gets;

    // race/b's digest is known when checked, collected before the write.
    store.race.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcome = indexer
        .scan_repository(&"race/b".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(outcome.tags_indexed, 1);
    assert_eq!(outcome.manifests_fetched, 1, "refetched once");
    assert_eq!(indexer.client().stats().manifest_gets, gets + 1);
    assert_eq!(
        store
            .repository_tags(&"race/b".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .get("v1"),
        Some(&b.digest)
    );
    assert!(
        store
            .repository_tags(&"race/a".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
}
