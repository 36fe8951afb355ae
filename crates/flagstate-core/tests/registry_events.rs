//! Registry notifications: the captured envelopes, and live delivery from a real
//! distribution registry into the indexer.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use flagstate_core::events::{EventAction, RegistryEvent, parse_distribution};
use flagstate_core::indexer::{Indexer, NoProgress};
use flagstate_core::model::DOCKER_MANIFEST;
use flagstate_core::registry::RegistryClient;
use flagstate_core::testkit::{
    ImageSpec, ListFormat, Notifications, TestRegistry, TestRegistryOptions,
};
use flagstate_core::{Digest, MemoryStore, Store};
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> (BTreeMap<String, String>, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/registry-events")
        .join(name);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let headers = v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (headers, serde_json::to_vec(&v["body"]).unwrap())
}

fn one(name: &str) -> RegistryEvent {
    let (headers, body) = fixture(name);
    assert_eq!(
        headers["Content-Type"],
        "application/vnd.docker.distribution.events.v1+json"
    );
    let mut events = parse_distribution(&body).unwrap();
    assert_eq!(events.len(), 1, "{name}");
    events.remove(0)
}

#[tokio::test]
async fn captured_envelopes_parse_and_classify() {
    let digest = |s: &str| Some(Digest::parse(s).unwrap());
    let e = one("push-manifest-tagged.json");
    assert_eq!(
        (e.action.clone(), e.repository.as_str(), e.tag.as_deref()),
        (EventAction::Push, "cap/img", Some("v1"))
    );
    assert_eq!(
        e.digest,
        digest("sha256:cf0b010ecb72e5f34e81e780d5909cd9a1b5f014508c2fe09f860f81228f2c7b")
    );
    assert_eq!(e.media_type.as_deref(), Some(DOCKER_MANIFEST));
    let e = one("push-manifest-list-tagged.json");
    assert_eq!(
        (e.repository.as_str(), e.tag.as_deref()),
        ("other.list/busybox", Some("prod"))
    );
    let e = one("push-manifest-untagged-list-child.json");
    assert_eq!((e.action.clone(), e.tag.clone()), (EventAction::Push, None));
    let e = one("push-blob.json");
    assert_eq!(e.media_type.as_deref(), Some("application/octet-stream"));
    let e = one("pull-manifest.json");
    assert_eq!(e.action, EventAction::Pull);
    let e = one("delete-tag.json");
    assert_eq!(
        (e.action.clone(), e.tag.as_deref(), e.digest.clone()),
        (EventAction::Delete, Some("v1"), None)
    );
    let e = one("delete-manifest-by-digest.json");
    assert_eq!(
        (e.tag.clone(), e.digest.clone()),
        (
            None,
            digest("sha256:cf0b010ecb72e5f34e81e780d5909cd9a1b5f014508c2fe09f860f81228f2c7b")
        )
    );

    // Events that need no registry access: applied to a store, with a client that could
    // not reach any registry (port 1).
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let client = RegistryClient::new(client_config("http://127.0.0.1:1/")).unwrap();
    let indexer = Indexer::new(client, store.clone(), indexer_config());
    let ignored = [one("push-blob.json"), one("pull-manifest.json")];
    let outcome = indexer.apply_events(&ignored).await.unwrap();
    assert_eq!((outcome.applied, outcome.ignored), (0, 2));
    assert!(outcome.reconcile_scheduled.is_empty());
    let deletes = [
        one("delete-tag.json"),
        one("delete-manifest-by-digest.json"),
    ];
    // In a repository the store does not know, deletes have nothing to remove.
    let outcome = indexer.apply_events(&deletes).await.unwrap();
    assert_eq!((outcome.applied, outcome.ignored), (0, 2));
    assert!(outcome.reconcile_scheduled.is_empty());
    use flagstate_core::conformance::fixtures::{image, repo};
    store
        .replace_repository(&repo("cap/img").image("v1", &image("cap").build()).build())
        .await
        .unwrap();
    let outcome = indexer.apply_events(&deletes).await.unwrap();
    assert_eq!((outcome.applied, outcome.ignored), (2, 0));
    assert_eq!(outcome.reconcile_scheduled, ["cap/img"]);
    assert_eq!(
        store
            .repository_tags(&"cap/img".parse().unwrap())
            .await
            .unwrap(),
        Some(Default::default())
    );
    // A push by digest needs what the registry serves for it (media type, size): with no
    // registry the batch fails, naming the event.
    let untagged = one("push-manifest-untagged-list-child.json");
    let err = indexer
        .apply_events(std::slice::from_ref(&untagged))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&untagged.id), "{err}");
    // A tagged push needs the manifest: with no registry the batch fails, naming the event.
    let err = indexer
        .apply_events(&[one("push-manifest-tagged.json")])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("755e1ed6-5d51-4a70-9c44-6c7ddfcb0383") && text.contains("cap/img"),
        "{text}"
    );
    assert_eq!(indexer.status().events_failed, 2);
}

/// Every repository's tags, read from the store.
async fn snapshot(
    store: &Arc<dyn Store>,
) -> BTreeMap<flagstate_core::RepositoryName, BTreeMap<flagstate_core::Tag, Digest>> {
    let mut out = BTreeMap::new();
    for name in store.repositories().await.unwrap() {
        out.insert(
            name.clone(),
            store.repository_tags(&name).await.unwrap().unwrap(),
        );
    }
    out
}

/// A registry (when one can be started) whose notifications go to a receiver that
/// applies them through an indexer over `store` built with `config`, as the server's
/// `/events` does: `401` without the bearer token, `503` until the indexer is set.
async fn registry_notifying_an_indexer(
    store: &Arc<dyn Store>,
    config: flagstate_core::indexer::IndexerConfig,
    ignore_blobs_and_pulls: bool,
) -> Option<(TestRegistry, Arc<Indexer>, Webhook)> {
    const TOKEN: &str = "hook-secret";
    let slot: Arc<tokio::sync::OnceCell<Arc<Indexer>>> = Arc::new(tokio::sync::OnceCell::new());
    let handler_slot = slot.clone();
    let hook = webhook(move |request| {
        let slot = handler_slot.clone();
        async move {
            if request.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
                return 401;
            }
            let Some(indexer) = slot.get() else {
                return 503;
            };
            let Ok(events) = parse_distribution(&request.body) else {
                return 400;
            };
            match indexer.apply_events(&events).await {
                Ok(_) => 200,
                Err(_) => 500,
            }
        }
    })
    .await;
    let registry = TestRegistry::start_or_skip(TestRegistryOptions {
        notifications: Some(Notifications {
            url: hook.url.clone(),
            bearer_token: Some(TOKEN.into()),
            ignore_blobs_and_pulls,
        }),
        basic_auth: None,
    })
    .await?;
    let client = RegistryClient::new(client_config(&registry.url())).unwrap();
    let indexer = Arc::new(Indexer::new(client, store.clone(), config));
    slot.set(indexer.clone()).unwrap();
    Some((registry, indexer, hook))
}

#[tokio::test]
async fn live_notifications_keep_the_store_current() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let Some((registry, indexer, hook)) =
        registry_notifying_an_indexer(&store, indexer_config(), false).await
    else {
        return;
    };
    let shutdown = CancellationToken::new();
    let background = indexer.clone().spawn(shutdown.clone());

    let pusher = registry.pusher();
    let wait = Duration::from_secs(20);
    let tag_is = |repo: &'static str, tag: &'static str, want: Option<Digest>| {
        let store = store.clone();
        move || {
            let store = store.clone();
            let want = want.clone();
            async move {
                let tags = store
                    .repository_tags(&repo.parse().unwrap())
                    .await
                    .unwrap()
                    .unwrap_or_default();
                tags.get(tag).cloned() == want
            }
        }
    };

    // Push with a tag: indexed from the event itself.
    let first = pusher
        .push_image(
            "live/app",
            Some("v1"),
            &ImageSpec::new("linux", "amd64").label("n", "1"),
        )
        .await
        .unwrap();
    assert!(
        eventually(wait, tag_is("live/app", "v1", Some(first.digest.clone()))).await,
        "push indexed"
    );

    // A multi-arch list: children by digest, then the tagged list.
    let list = pusher
        .push_list(
            "live/multi",
            "latest",
            ListFormat::DockerList,
            &[
                ImageSpec::new("linux", "amd64"),
                ImageSpec::new("linux", "arm64"),
            ],
        )
        .await
        .unwrap();
    assert!(
        eventually(
            wait,
            tag_is("live/multi", "latest", Some(list.digest.clone()))
        )
        .await,
        "list indexed"
    );

    // Moving a tag, and a second tag on the same image.
    let second = pusher
        .push_image(
            "live/app",
            Some("v1"),
            &ImageSpec::new("linux", "amd64").label("n", "2"),
        )
        .await
        .unwrap();
    pusher
        .tag("live/app", "stable", &second.digest)
        .await
        .unwrap();
    assert!(
        eventually(wait, tag_is("live/app", "v1", Some(second.digest.clone()))).await,
        "tag moved"
    );
    assert!(
        eventually(
            wait,
            tag_is("live/app", "stable", Some(second.digest.clone()))
        )
        .await,
        "tag added"
    );

    // Deleting the manifest removes both of its tags.
    pusher
        .delete_manifest("live/app", &second.digest)
        .await
        .unwrap();
    assert!(
        eventually(wait, tag_is("live/app", "v1", None)).await,
        "v1 deleted"
    );
    assert!(
        eventually(wait, tag_is("live/app", "stable", None)).await,
        "stable deleted"
    );

    // After the debounced re-scans, the store equals a fresh full scan of the registry.
    assert!(
        eventually(wait, || async {
            indexer.status().reconciles > 0 && indexer.status().reconciles_pending == 0
        })
        .await
    );
    let fresh_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let fresh = Indexer::new(
        RegistryClient::new(client_config(&registry.url())).unwrap(),
        fresh_store.clone(),
        indexer_config(),
    );
    fresh.full_scan(&NoProgress).await.unwrap();
    assert!(
        eventually(wait, || {
            let store = store.clone();
            let fresh_store = fresh_store.clone();
            async move { snapshot(&store).await == snapshot(&fresh_store).await }
        })
        .await,
        "event-maintained store matches a fresh scan"
    );
    assert!(
        indexer.status().events_applied >= 6,
        "{:?}",
        indexer.status()
    );
    assert!(hook.received.load(std::sync::atomic::Ordering::SeqCst) > 0);
    shutdown.cancel();
    background.await.unwrap();
}

#[tokio::test]
async fn bursts_of_events_coalesce_into_few_rescans() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let mut pushed = Vec::new();
    for i in 0..10 {
        let tag = format!("t{i}");
        let image = pusher
            .push_image(
                "burst/repo",
                Some(&tag),
                &ImageSpec::new("linux", "amd64").label("i", &tag),
            )
            .await
            .unwrap();
        pushed.push((tag, image));
    }
    let (indexer, store) = indexer_for(client_config(&registry.url()));
    let events: Vec<RegistryEvent> = pushed
        .iter()
        .map(|(tag, image)| RegistryEvent {
            id: format!("e-{tag}"),
            action: EventAction::Push,
            repository: "burst/repo".parse().unwrap(),
            tag: Some(tag.clone()),
            digest: Some(image.digest.clone()),
            media_type: Some(image.media_type.clone()),
            timestamp: None,
        })
        .collect();
    for event in &events {
        indexer
            .apply_events(std::slice::from_ref(event))
            .await
            .unwrap();
    }
    // Durable on return, before any re-scan ran.
    assert_eq!(
        store
            .repository_tags(&"burst/repo".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        indexer.status().reconciles_pending,
        1,
        "ten events, one pending re-scan"
    );
    assert!(indexer.drain_reconciles(Duration::from_secs(20)).await);
    assert_eq!(indexer.status().reconciles, 1);
    assert_eq!(indexer.status().events_applied, 10);
}

/// A pushed artifact's tag is kept as an artifact tag — listed with its type, never
/// indexed — and the artifact is read once: later scans read the tag but never the
/// artifact or its config again, and change nothing.
#[tokio::test]
async fn a_pushed_artifact_is_kept_as_an_artifact_tag_and_read_once() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let artifact = pusher
        .push_image(
            "art/repo",
            Some("sbom"),
            &ImageSpec::new("linux", "amd64").artifact("application/vnd.example.sbom+json"),
        )
        .await
        .unwrap();
    let (indexer, store) = indexer_for(client_config(&registry.url()));
    let name: flagstate_core::RepositoryName = "art/repo".parse().unwrap();
    let outcome = indexer
        .apply_events(&[RegistryEvent {
            id: "a".into(),
            action: EventAction::Push,
            repository: "art/repo".parse().unwrap(),
            tag: Some("sbom".into()),
            digest: Some(artifact.digest.clone()),
            media_type: Some(artifact.media_type.clone()),
            timestamp: None,
        }])
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.ignored), (1, 0));
    let listing = flagstate_core::TagListing::all(flagstate_core::Listing::first(
        flagstate_core::ListOrder::Name,
        10,
    ));
    let tags = store.list_tags(&name, &listing).await.unwrap().unwrap();
    assert_eq!(
        tags.iter()
            .map(|t| (t.tag.as_str(), &t.digest, t.artifact_type.as_deref()))
            .collect::<Vec<_>>(),
        [(
            "sbom",
            &artifact.digest,
            Some("application/vnd.example.sbom+json")
        )]
    );
    assert_eq!(
        store.repository_tags(&name).await.unwrap(),
        Some(Default::default()),
        "an artifact tag is not indexed"
    );
    let generation = store.generation().await.unwrap();
    let before = indexer.client().stats();
    indexer.scan_repository(&name).await.unwrap();
    indexer.scan_repository(&name).await.unwrap();
    let after = indexer.client().stats();
    assert_eq!(after.manifest_gets, before.manifest_gets);
    assert_eq!(after.manifest_heads - before.manifest_heads, 2);
    assert_eq!(after.blob_gets, before.blob_gets);
    assert_eq!(store.generation().await.unwrap(), generation);
    assert_eq!(
        store.list_tags(&name, &listing).await.unwrap().unwrap(),
        tags
    );
}

#[tokio::test]
async fn background_work_scans_and_collects_periodically() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let old = pusher
        .push_image(
            "bg/app",
            Some("v1"),
            &ImageSpec::new("linux", "amd64").label("n", "old"),
        )
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let client = RegistryClient::new(client_config(&registry.url())).unwrap();
    let mut cfg = indexer_config();
    cfg.full_scan_interval = Some(Duration::from_millis(200));
    cfg.gc_interval = Some(Duration::from_millis(200));
    let indexer = Arc::new(Indexer::new(client, store.clone(), cfg));
    let shutdown = CancellationToken::new();
    let background = indexer.clone().spawn(shutdown.clone());

    let wait = Duration::from_secs(20);
    assert!(eventually(wait, || async { indexer.status().first_scan_done }).await);
    assert!(store.manifest(&old.digest).await.unwrap().is_some());

    // No events at all: the periodic scan notices the moved tag, and GC drops the
    // manifest nothing references any more.
    let new = pusher
        .push_image(
            "bg/app",
            Some("v1"),
            &ImageSpec::new("linux", "amd64").label("n", "new"),
        )
        .await
        .unwrap();
    assert!(
        eventually(wait, || async {
            store
                .repository_tags(&"bg/app".parse().unwrap())
                .await
                .unwrap()
                .unwrap_or_default()
                .get("v1")
                == Some(&new.digest)
        })
        .await
    );
    assert!(
        eventually(wait, || async {
            store.manifest(&old.digest).await.unwrap().is_none()
        })
        .await
    );
    let status = indexer.status();
    assert!(
        status.full_scans >= 2 && status.gc_manifests_removed >= 1,
        "{status:?}"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), background)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn spawn_after_scan_does_not_repeat_the_first_scan() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    pusher
        .push_image("after/app", Some("v1"), &ImageSpec::new("linux", "amd64"))
        .await
        .unwrap();
    for (interval, expected_scans) in [(None, 1), (Some(Duration::from_millis(300)), 2)] {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let client = RegistryClient::new(client_config(&registry.url())).unwrap();
        let mut cfg = indexer_config();
        cfg.full_scan_interval = interval;
        let indexer = Arc::new(Indexer::new(client, store.clone(), cfg));
        assert!(indexer.full_scan(&NoProgress).await.unwrap().is_complete());
        let catalog_pages = indexer.client().stats().catalog_pages;
        let shutdown = CancellationToken::new();
        let background = indexer.clone().spawn_after_scan(shutdown.clone());

        // The background work is running (an event's reconcile completes) ...
        let v2 = pusher
            .push_image("after/app", Some("v2"), &ImageSpec::new("linux", "arm64"))
            .await
            .unwrap();
        indexer
            .apply_events(&[RegistryEvent {
                id: format!("after-{expected_scans}"),
                action: EventAction::Push,
                repository: "after/app".parse().unwrap(),
                tag: Some("v2".into()),
                digest: Some(v2.digest.clone()),
                media_type: Some(v2.media_type.clone()),
                timestamp: None,
            }])
            .await
            .unwrap();
        assert!(indexer.drain_reconciles(Duration::from_secs(20)).await);
        assert_eq!(indexer.status().reconciles, 1);
        match interval {
            // ... and without an interval no full scan follows the one already done;
            None => {
                assert_eq!(indexer.status().full_scans, 1);
                assert_eq!(indexer.client().stats().catalog_pages, catalog_pages);
            }
            // with one, the next full scan comes an interval later.
            Some(_) => assert!(
                eventually(Duration::from_secs(20), || async {
                    indexer.status().full_scans >= expected_scans
                })
                .await
            ),
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), background)
            .await
            .expect("stops on shutdown")
            .unwrap();
    }
}

/// A flood of notifications naming 10,000 invented repositories (what an anonymous or
/// compromised sender can post) neither grows the reconcile queue past its cap nor costs
/// registry requests for names the registry does not have.
#[tokio::test]
async fn invented_repositories_cost_nothing_and_the_queue_is_capped() {
    let Some(registry) = registry().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let client = RegistryClient::new(client_config(&registry.url())).unwrap();
    let cap = 100;
    let indexer = Indexer::new(
        client,
        store.clone(),
        flagstate_core::indexer::IndexerConfig::default().with_max_pending_reconciles(cap),
    );
    let generation = store.generation().await.unwrap();
    let invented = |i: usize, action: EventAction, tag: Option<&str>, digest: bool| RegistryEvent {
        id: format!("flood-{i}-{action:?}"),
        action,
        repository: format!("flood/r{i}"),
        tag: tag.map(str::to_owned),
        digest: digest.then(|| Digest::sha256_of(format!("m{i}").as_bytes())),
        media_type: Some(DOCKER_MANIFEST.into()),
        timestamp: None,
    };
    // Deletes and pushes of manifests the registry does not have: ignored, no re-scan.
    let mut events = Vec::new();
    for i in 0..10_000 {
        events.push(invented(i, EventAction::Delete, Some("latest"), false));
        events.push(invented(i, EventAction::Delete, None, true));
    }
    for i in 0..200 {
        events.push(invented(i, EventAction::Push, Some("latest"), true));
    }
    let before = indexer.client().stats();
    let outcome = indexer.apply_events(&events).await.unwrap();
    assert_eq!(outcome.applied, 0, "{outcome:?}");
    assert!(outcome.reconcile_scheduled.is_empty());
    assert_eq!(indexer.status().reconciles_pending, 0);
    assert_eq!(store.generation().await.unwrap(), generation);
    // One manifest request per invented push, nothing more.
    let after = indexer.client().stats();
    assert_eq!(after.manifest_gets - before.manifest_gets, 200);
    assert_eq!(after.tag_pages, before.tag_pages);

    // Tag pushes without a digest ask for a re-scan; the queue keeps at most `cap`.
    let events: Vec<_> = (0..10_000)
        .map(|i| invented(i, EventAction::Push, Some("latest"), false))
        .collect();
    let outcome = indexer.apply_events(&events).await.unwrap();
    assert_eq!(outcome.reconcile_scheduled.len(), cap);
    let status = indexer.status();
    assert_eq!(status.reconciles_pending, cap as u64);
    assert_eq!(status.reconciles_dropped, 10_000 - cap as u64);
}

/// A multi-arch push through the real registry — children by digest, then the tagged
/// list — reads each manifest once: the list takes its children's bodies from the
/// pushes by digest instead of reading them again. (No re-scan runs in between: the
/// debounce is an hour.)
#[tokio::test]
async fn a_multi_arch_push_reads_each_child_manifest_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = indexer_config().with_reconcile_debounce(Duration::from_secs(3600));
    let Some((registry, indexer, _hook)) =
        registry_notifying_an_indexer(&store, config, true).await
    else {
        return;
    };

    let children = [
        ImageSpec::new("linux", "amd64"),
        ImageSpec::new("linux", "arm64"),
        ImageSpec::new("linux", "ppc64le"),
    ];
    let list = registry
        .pusher()
        .push_list("reads/multi", "latest", ListFormat::OciIndex, &children)
        .await
        .unwrap();
    let indexed = eventually(Duration::from_secs(20), || {
        let store = store.clone();
        let want = list.digest.clone();
        async move {
            store
                .repository_tags(&"reads/multi".parse().unwrap())
                .await
                .unwrap()
                .unwrap_or_default()
                .get("latest")
                == Some(&want)
        }
    })
    .await;
    assert!(indexed, "the list was indexed from its events");
    let status = indexer.status();
    assert_eq!(
        status.manifests_fetched,
        children.len() as u64 + 1,
        "one GET per child (its push by digest) and one for the list: {status:?}"
    );
    assert_eq!(status.blobs_fetched, children.len() as u64, "{status:?}");
    let manifest = store.manifest(&list.digest).await.unwrap();
    assert!(
        matches!(&manifest, Some(flagstate_core::Manifest::List(l)) if l.entries.len() == children.len()),
        "{manifest:?}"
    );
}
