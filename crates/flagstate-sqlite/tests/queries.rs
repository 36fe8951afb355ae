//! Queries and searches with hostile input, and queries racing writes, compared with
//! the reference `MemoryStore`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{image, snapshot};
use flagstate_core::{IndexQuery, IndexResponse, MemoryStore, Store, TagChange};
use flagstate_sqlite::SqliteStore;

async fn both(
    snapshots: &[flagstate_core::RepositorySnapshot],
) -> (SqliteStore, MemoryStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("index.db")).unwrap();
    let memory = MemoryStore::new();
    for s in snapshots {
        sqlite.replace_repository(s).await.unwrap();
        memory.replace_repository(s).await.unwrap();
    }
    (sqlite, memory, dir)
}

async fn json(store: &dyn Store, raw: &str) -> Vec<u8> {
    let query = IndexQuery::parse(raw).unwrap();
    IndexResponse::new("/", store.query(&query).await.unwrap()).to_json()
}

#[tokio::test]
async fn hostile_values_are_data_not_sql() {
    let values = [
        "it's",
        "\"quoted\"",
        "x'; DROP TABLE tags; --",
        "a[1]",
        "a[1]b",
        "[",
        "100%_done",
        "star*",
        "q?",
        "\u{10ffff}end",
        "é",
    ];
    let snapshots: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let img = image(&format!("img{i}"), &[("k", v), ("it's", "key")]);
            snapshot(&format!("repo{i}"), &[("latest", &img)])
        })
        .collect();
    let (sqlite, memory, _dir) = both(&snapshots).await;
    let queries = [
        "label:k=it%27s",
        "label:k=x%27%3B%20DROP%20TABLE%20tags%3B%20--",
        "label:k:matches=a%5B1%5D",
        "label:k:matches=a%5B1%5D*",
        "label:k:matches=%5B",
        "label:k:matches=*%25*",
        "label:k:matches=100%25_*",
        "label:k:matches=star%2A",
        "label:k:matches=q%3F",
        "label:k:matches=%F4%8F%BF%BF*",
        "label:k:matches=%C3%A9",
        "label:k:matches=*",
        "label:k:matches=",
        "label:it%27s:exists=1",
        "label:k=%22quoted%22&label:k=%5B",
        "tag:matches=lat%5Best",
        "tag:matches=l*t",
        "repository=repo1%27",
    ];
    for raw in queries {
        assert_eq!(
            json(&sqlite, raw).await,
            json(&memory, raw).await,
            "query {raw}"
        );
    }
    assert_eq!(sqlite.repositories().await.unwrap().len(), values.len());
}

#[tokio::test]
async fn search_text_is_never_fts_syntax() {
    let snapshots = [
        snapshot(
            "near/or",
            &[("latest", &image("a", &[("name", "NEAR OR AND NOT")]))],
        ),
        snapshot(
            "quote",
            &[(
                "latest",
                &image("b", &[("description", "say \"hello\" * ^ -x")]),
            )],
        ),
        snapshot(
            "plain",
            &[("latest", &image("c", &[("summary", "hello world")]))],
        ),
    ];
    let (sqlite, memory, _dir) = both(&snapshots).await;
    for text in [
        "\"",
        "hello\"",
        "NEAR(hello world)",
        "OR",
        "near OR",
        "hel*",
        "^hello",
        "-x",
        "name:hello",
        "a AND",
        "(",
        "hello NOT",
        "''",
        "",
    ] {
        let got = sqlite.search(text, 0, 100).await.unwrap();
        let want = memory.search(text, 0, 100).await.unwrap();
        let names = |p: &flagstate_core::SearchPage| {
            p.hits
                .iter()
                .map(|h| h.repository.clone())
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(got.total, want.total, "search {text:?}");
        assert_eq!(names(&got), names(&want), "search {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_run_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(dir.path().join("index.db")).unwrap());
    let images: Vec<_> = (0..20)
        .map(|i| image(&format!("img{i}"), &[("n", &i.to_string())]))
        .collect();
    let changes: Vec<TagChange> = (0..300)
        .map(|i| TagChange::Put {
            repository: format!("r{}", i % 7).parse().unwrap(),
            tag: format!("t{}", i % 5).parse().unwrap(),
            digest: images[i % images.len()].digest.clone(),
            manifests: vec![flagstate_core::Manifest::Image(
                images[i % images.len()].clone(),
            )],
            at: flagstate_core::Timestamp::now(),
        })
        .collect();
    let writer = {
        let sqlite = Arc::clone(&sqlite);
        let changes = changes.clone();
        tokio::spawn(async move {
            for change in &changes {
                sqlite.apply(change).await.unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let sqlite = Arc::clone(&sqlite);
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..100 {
                    let g = sqlite.generation().await.unwrap();
                    assert!(g >= last, "generation went back from {last} to {g}");
                    last = g;
                    let raw = format!("label:n={}&tag=t{}", (i + r) % 20, i % 5);
                    sqlite
                        .query(&IndexQuery::parse(&raw).unwrap())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    writer.await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    let memory = MemoryStore::new();
    for change in &changes {
        memory.apply(change).await.unwrap();
    }
    assert_eq!(
        sqlite.generation().await.unwrap(),
        memory.generation().await.unwrap()
    );
    for raw in [
        "",
        "tag=t1",
        "label:n=3",
        "label:n:matches=1*&tag:matches=t*",
    ] {
        assert_eq!(json(&*sqlite, raw).await, json(&memory, raw).await, "{raw}");
    }
}

#[tokio::test]
async fn list_children_are_narrowed_like_the_reference() {
    use flagstate_core::{ListEntry, Manifest, Platform};
    let c1 = image("c1", &[("role", "one"), ("org.flatpak.ref", "app/x")]);
    let mut c2 = image("c2", &[("role", "two")]);
    c2.platform = Platform::new("linux", "arm64");
    let mut l = common::list("l", &[&c1, &c2]);
    // The same child twice, the second time with a list-stated platform.
    l.entries.push(ListEntry {
        digest: c1.digest.clone(),
        platform: Some(Platform::new("linux", "s390x")),
    });
    let other = common::list("other", &[&c2]);
    let mut with_lists = snapshot("multi", &[("solo", &c2)]);
    with_lists
        .tags
        .insert("latest".parse().unwrap(), l.digest.clone());
    with_lists
        .tags
        .insert("stable".parse().unwrap(), l.digest.clone());
    with_lists
        .tags
        .insert("edge".parse().unwrap(), other.digest.clone());
    with_lists.manifests.extend([
        Manifest::Image(c1.clone()),
        Manifest::List(l.clone()),
        Manifest::List(other.clone()),
    ]);
    let (sqlite, memory, _dir) = both(&[with_lists]).await;
    for raw in [
        "",
        "architecture=amd64",
        "architecture=arm64",
        "architecture=s390x",
        "architecture=s390x&label:role=one",
        "label:role=two",
        "label:role=two&tag=latest",
        "label:role:exists=1&tag:matches=s*",
        "label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest",
        "tag=solo&architecture=arm64",
        "tag=edge&tag:matches=*",
        "tag=stable&tag:matches=lat*",
        "repository=multi&label:role:matches=t*",
    ] {
        assert_eq!(json(&sqlite, raw).await, json(&memory, raw).await, "{raw}");
    }
}

#[tokio::test]
async fn search_ranks_names_over_titles_over_descriptions() {
    let snapshots = [
        snapshot(
            "aaa/maps",
            &[(
                "latest",
                &image("d", &[("description", "A viewer for weather maps")]),
            )],
        ),
        snapshot(
            "bbb/charts",
            &[("latest", &image("t", &[("name", "Weather charts")]))],
        ),
        snapshot("weather", &[("latest", &image("w", &[]))]),
    ];
    let (sqlite, _memory, _dir) = both(&snapshots).await;
    let page = sqlite.search("weath", 0, 10).await.unwrap();
    let order: Vec<_> = page.hits.iter().map(|h| h.repository.as_str()).collect();
    assert_eq!(order, ["weather", "bbb/charts", "aaa/maps"]);
    assert!(page.hits.windows(2).all(|w| w[0].score > w[1].score));
    assert!(page.hits.iter().all(|h| h.score > 0.0));
    assert_eq!(page.hits[1].title.as_deref(), Some("Weather charts"));
    assert_eq!(
        page.hits[2].description.as_deref(),
        Some("A viewer for weather maps")
    );
}
