//! Writers racing each other and garbage collection on one store: every write takes full
//! effect, generations are distinct and gap-free, and collection never removes a manifest
//! a committed tag needs.

mod common;

use std::collections::BTreeSet;

use flagstate_core::conformance::fixtures::{image, put_image, query, repo};
use flagstate_core::{Digest, Store};

use common::{TestStore, pg_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_each_bump_once() {
    let Some(url) = pg_url() else { return };
    let store = std::sync::Arc::new(TestStore::new(&url).await);
    let mut tasks = Vec::new();
    for writer in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..8 {
                let img = image(&format!("w{writer}i{i}")).build();
                // Half the writers share one repository, so its row lock is contended.
                let repository = if writer % 2 == 0 {
                    "shared".to_owned()
                } else {
                    format!("own/{writer}")
                };
                let tag = format!("w{writer}-{i}");
                seen.push(
                    store
                        .apply(&put_image(&repository, &tag, &img))
                        .await
                        .unwrap(),
                );
            }
            seen
        }));
    }
    let mut generations = BTreeSet::new();
    for task in tasks {
        for g in task.await.unwrap() {
            assert!(generations.insert(g), "generation {g} returned twice");
        }
    }
    assert_eq!(generations, (1..=48).collect::<BTreeSet<u64>>());
    assert_eq!(store.generation().await.unwrap(), 48);
    let shared = store
        .repository_tags(&"shared".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shared.len(), 24);
    assert_eq!(store.query(&query("")).await.unwrap().len(), 4);
    // The shared repository's search document saw every writer's tags.
    let hits = store.search("shared", 0, 10).await.unwrap();
    assert_eq!(hits.total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_racing_writers_keeps_what_tags_need() {
    let Some(url) = pg_url() else { return };
    let store = std::sync::Arc::new(TestStore::new(&url).await);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..30 {
                let img = image(&format!("round{round}")).build();
                store
                    .replace_repository(&repo("moving").image("latest", &img).build())
                    .await
                    .unwrap();
                // Re-tag an already stored manifest without carrying it.
                if round > 0 {
                    let previous = image(&format!("round{}", round - 1)).build();
                    let snapshot = repo("pinned").digest("prev", &previous.digest).build();
                    // The previous round's image may already be collected: then the
                    // store must say so and change nothing.
                    if let Err(e) = store.replace_repository(&snapshot).await {
                        assert!(
                            matches!(e, flagstate_core::StoreError::MissingManifest { .. }),
                            "{e}"
                        );
                    }
                }
            }
        })
    };
    let collector = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                store.collect_garbage().await.unwrap();
            }
        })
    };
    writer.await.unwrap();
    collector.await.unwrap();
    let mut needed: Vec<Digest> = Vec::new();
    for name in store.repositories().await.unwrap() {
        needed.extend(
            store
                .repository_tags(&name)
                .await
                .unwrap()
                .unwrap()
                .into_values(),
        );
    }
    let known = store.known_manifests(&needed).await.unwrap();
    assert_eq!(known.len(), needed.iter().collect::<BTreeSet<_>>().len());
    store.collect_garbage().await.unwrap();
    let answer = store.query(&query("")).await.unwrap();
    assert!(!answer.is_empty());
}
