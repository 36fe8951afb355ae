//! Discovery contract: the times a store keeps for repositories and tags, tag history
//! and its retention, and listings in every order, paged by position.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fixtures::{
    artifact, at, delete_manifest, delete_tag, image, list, put_artifact, put_image, put_list,
    repo, repository_name, tag_name, time,
};
use super::ok;
use crate::discovery::{
    HistoryEntry, HistoryRetention, ListOrder, Listing, Position, RepositoryInfo,
    RepositoryListing, TagInfo, TagListing,
};
use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

const ORDERS: [ListOrder; 3] = [ListOrder::Name, ListOrder::Updated, ListOrder::NewestFirst];

async fn all_repositories(store: &dyn Store, order: ListOrder) -> Vec<RepositoryInfo> {
    let listing = RepositoryListing {
        namespace: None,
        listing: Listing::first(order, usize::MAX),
    };
    ok(store.list_repositories(&listing).await, "list_repositories")
}

async fn all_tags(store: &dyn Store, name: &str, order: ListOrder) -> Option<Vec<TagInfo>> {
    ok(
        store
            .list_tags(
                &repository_name(name),
                &TagListing::all(Listing::first(order, usize::MAX)),
            )
            .await,
        "list_tags",
    )
}

async fn history(store: &dyn Store, name: &str, tag: &str) -> Option<Vec<(String, Timestamp)>> {
    ok(
        store
            .tag_history(&repository_name(name), &tag_name(tag))
            .await,
        "tag_history",
    )
    .map(|entries| {
        entries
            .into_iter()
            .map(|HistoryEntry { digest, since }| (digest.as_str().to_owned(), since))
            .collect()
    })
}

fn tag_times(tags: &[TagInfo]) -> Vec<(&str, Timestamp)> {
    tags.iter().map(|t| (t.tag.as_str(), t.updated)).collect()
}

/// A scan's snapshot stamps new and moved tags and the repository with its time; a
/// rescan of the same tags changes no time; events stamp what they change with theirs.
pub async fn times_follow_changes_and_rescans_keep_them(store: &dyn Store) {
    let a = image("a").created("2025-05-01T00:00:00Z").build();
    let b = image("b").build();
    let snapshot = |t| {
        repo("app")
            .image("latest", &a)
            .image("stable", &a)
            .at(time(t))
    };
    ok(
        store.replace_repository(&snapshot(10).build()).await,
        "scan",
    );
    let repository = &all_repositories(store, ListOrder::Name).await[0];
    assert_eq!(
        (repository.created, repository.updated, repository.tags),
        (time(10), time(10), 2)
    );
    ok(
        store.replace_repository(&snapshot(20).build()).await,
        "rescan",
    );
    let tags = all_tags(store, "app", ListOrder::Name).await.unwrap();
    assert_eq!(
        tag_times(&tags),
        [("latest", time(10)), ("stable", time(10))],
        "a rescan of unchanged tags must keep their times"
    );
    assert_eq!(
        all_repositories(store, ListOrder::Name).await[0].updated,
        time(10)
    );
    assert_eq!(tags[0].created.as_deref(), Some("2025-05-01T00:00:00Z"));
    assert_eq!(tags[0].media_type, a.media_type);
    assert_eq!(tags[0].digest, a.digest);

    // A scan that moves one tag stamps only that tag.
    let moved = repo("app")
        .image("latest", &b)
        .image("stable", &a)
        .at(time(30));
    ok(
        store.replace_repository(&moved.build()).await,
        "scan with a move",
    );
    let tags = all_tags(store, "app", ListOrder::Name).await.unwrap();
    assert_eq!(
        tag_times(&tags),
        [("latest", time(30)), ("stable", time(10))]
    );
    assert_eq!(tags[0].created, None, "image b states no created time");
    let repository = &all_repositories(store, ListOrder::Name).await[0];
    assert_eq!(
        (repository.created, repository.updated),
        (time(10), time(30))
    );

    // Events carry their own time.
    let l = list("l").child(&image("x").build()).build();
    ok(
        store
            .apply(&at(put_list("app", "multi", &l), time(40)))
            .await,
        "put list",
    );
    ok(
        store
            .apply(&at(put_image("app", "stable", &a), time(45)))
            .await,
        "same digest",
    );
    ok(
        store
            .apply(&at(delete_tag("app", "latest"), time(50)))
            .await,
        "delete",
    );
    let tags = all_tags(store, "app", ListOrder::Name).await.unwrap();
    assert_eq!(
        tag_times(&tags),
        [("multi", time(40)), ("stable", time(10))],
        "a put of the digest a tag already has must keep its time"
    );
    assert_eq!(tags[0].media_type, l.list.media_type);
    assert_eq!(tags[0].created, None, "a list has no config");
    let repository = &all_repositories(store, ListOrder::Name).await[0];
    assert_eq!((repository.updated, repository.tags), (time(50), 2));

    // Deleting a manifest removes its tags and stamps the repository; a repository
    // created by an event starts at the event's time.
    ok(
        store
            .apply(&at(delete_manifest("app", &a.digest), time(60)))
            .await,
        "delete manifest",
    );
    ok(
        store
            .apply(&at(put_image("other", "v1", &b), time(70)))
            .await,
        "new repository",
    );
    let repositories = all_repositories(store, ListOrder::Name).await;
    let summary: Vec<_> = repositories
        .iter()
        .map(|r| (r.name.as_str(), r.tags, r.created, r.updated))
        .collect();
    assert_eq!(
        summary,
        [
            ("app", 1, time(10), time(60)),
            ("other", 1, time(70), time(70))
        ]
    );
    assert_eq!(all_tags(store, "missing", ListOrder::Name).await, None);
}

/// History lists every digest a tag pointed at, oldest first; it outlives the tag,
/// starts a new entry when the tag comes back, and goes with its repository.
pub async fn history_records_moves_and_outlives_deleted_tags(store: &dyn Store) {
    let a = image("a").build();
    let b = image("b").build();
    let (da, db) = (a.digest.as_str().to_owned(), b.digest.as_str().to_owned());
    ok(
        store
            .replace_repository(&repo("app").image("latest", &a).at(time(1)).build())
            .await,
        "scan",
    );
    ok(
        store
            .apply(&at(put_image("app", "latest", &b), time(2)))
            .await,
        "move",
    );
    ok(
        store
            .apply(&at(put_image("app", "latest", &b), time(3)))
            .await,
        "no-op",
    );
    ok(
        store
            .replace_repository(&repo("app").image("latest", &b).at(time(4)).build())
            .await,
        "rescan",
    );
    assert_eq!(
        history(store, "app", "latest").await,
        Some(vec![(da.clone(), time(1)), (db.clone(), time(2))])
    );
    ok(
        store.apply(&at(delete_tag("app", "latest"), time(5))).await,
        "delete",
    );
    assert_eq!(
        history(store, "app", "latest").await.map(|h| h.len()),
        Some(2),
        "history outlives the tag"
    );
    ok(
        store
            .apply(&at(put_image("app", "latest", &a), time(6)))
            .await,
        "back",
    );
    assert_eq!(
        history(store, "app", "latest").await,
        Some(vec![(da.clone(), time(1)), (db, time(2)), (da, time(6))])
    );
    assert_eq!(history(store, "app", "never").await, Some(vec![]));
    assert_eq!(history(store, "nothing", "latest").await, None);
    ok(
        store.remove_repository(&repository_name("app")).await,
        "remove",
    );
    assert_eq!(history(store, "app", "latest").await, None);
    ok(
        store.apply(&at(put_image("app", "v2", &a), time(7))).await,
        "recreate",
    );
    assert_eq!(
        history(store, "app", "latest").await,
        Some(vec![]),
        "a removed repository's history goes with it"
    );
}

/// Pruning keeps each tag's newest `max_entries` and drops entries older than
/// `max_age` except each tag's newest; it bumps the generation iff it dropped any.
pub async fn prune_history_applies_retention(store: &dyn Store) {
    let images: Vec<_> = (0..6).map(|i| image(&format!("h{i}")).build()).collect();
    for (i, image) in images.iter().enumerate() {
        let t = time(i as i64 * 100);
        ok(
            store.apply(&at(put_image("app", "moving", image), t)).await,
            "move",
        );
    }
    ok(
        store
            .apply(&at(put_image("app", "still", &images[0]), time(0)))
            .await,
        "still",
    );
    let g = ok(store.generation().await, "generation");
    let none = HistoryRetention {
        max_entries: 10,
        max_age: None,
    };
    assert_eq!(ok(store.prune_history(&none, time(1000)).await, "prune"), 0);
    assert_eq!(
        ok(store.generation().await, "generation"),
        g,
        "nothing dropped"
    );

    let by_count = HistoryRetention {
        max_entries: 4,
        max_age: None,
    };
    assert_eq!(
        ok(store.prune_history(&by_count, time(1000)).await, "prune"),
        2
    );
    assert!(ok(store.generation().await, "generation") > g);
    let kept: Vec<_> = history(store, "app", "moving")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, since)| since)
        .collect();
    assert_eq!(kept, [time(200), time(300), time(400), time(500)]);

    let by_age = HistoryRetention {
        max_entries: 100,
        max_age: Some(Duration::from_secs(250)),
    };
    // At time 700 the horizon is 450: only the newest "moving" entry is that young, and
    // "still" keeps its one (current) entry however old.
    assert_eq!(
        ok(store.prune_history(&by_age, time(700)).await, "prune"),
        3
    );
    let moving = history(store, "app", "moving").await.unwrap();
    assert_eq!(moving, [(images[5].digest.as_str().to_owned(), time(500))]);
    assert_eq!(
        history(store, "app", "still").await.map(|h| h.len()),
        Some(1)
    );
    let tags = all_tags(store, "app", ListOrder::Name).await.unwrap();
    assert_eq!(tags.len(), 2, "pruning history never touches tags");
}

/// Every order sorts as the discovery model says; namespaces keep whole path
/// components; pages continue strictly after their position.
pub async fn listings_order_filter_and_page(store: &dyn Store) {
    let a = image("a").build();
    for (name, t) in [
        ("apps/b", 3),
        ("apps/a", 3),
        ("apps/deep/c", 1),
        ("appsx", 2),
        ("base", 5),
    ] {
        ok(
            store.apply(&at(put_image(name, "v", &a), time(t))).await,
            "put",
        );
    }
    let names = |rs: Vec<RepositoryInfo>| -> Vec<String> {
        rs.into_iter().map(|r| r.name.to_string()).collect()
    };
    assert_eq!(
        names(all_repositories(store, ListOrder::Name).await),
        ["apps/a", "apps/b", "apps/deep/c", "appsx", "base"]
    );
    assert_eq!(
        names(all_repositories(store, ListOrder::Updated).await),
        ["apps/deep/c", "appsx", "apps/a", "apps/b", "base"]
    );
    assert_eq!(
        names(all_repositories(store, ListOrder::NewestFirst).await),
        ["base", "apps/a", "apps/b", "appsx", "apps/deep/c"]
    );
    let page = |namespace: Option<&str>, order, after: Option<Position>, limit| RepositoryListing {
        namespace: namespace.map(str::to_owned),
        listing: Listing {
            order,
            after,
            limit,
        },
    };
    let got = ok(
        store
            .list_repositories(&page(Some("apps"), ListOrder::Name, None, 10))
            .await,
        "namespace",
    );
    assert_eq!(names(got), ["apps/a", "apps/b", "apps/deep/c"]);
    let after_a = Position::Time {
        updated: time(3),
        name: "apps/a".into(),
    };
    let got = ok(
        store
            .list_repositories(&page(
                None,
                ListOrder::NewestFirst,
                Some(after_a.clone()),
                2,
            ))
            .await,
        "after",
    );
    assert_eq!(names(got), ["apps/b", "appsx"]);
    let got = ok(
        store
            .list_repositories(&page(Some("apps"), ListOrder::Updated, Some(after_a), 10))
            .await,
        "after in a namespace",
    );
    assert_eq!(names(got), ["apps/b"]);
    let got = ok(
        store
            .list_repositories(&page(
                None,
                ListOrder::Name,
                Some(Position::Name("appsx".into())),
                10,
            ))
            .await,
        "after a name",
    );
    assert_eq!(names(got), ["base"]);
    let got = ok(
        store
            .list_repositories(&page(None, ListOrder::Name, None, 0))
            .await,
        "limit 0",
    );
    assert!(got.is_empty());

    for (tag, t) in [("b", 9), ("a", 9), ("c", 7), ("d", 8)] {
        ok(
            store.apply(&at(put_image("base", tag, &a), time(t))).await,
            "put tag",
        );
    }
    let tag_names = |tags: Option<Vec<TagInfo>>| -> Vec<String> {
        tags.unwrap()
            .into_iter()
            .map(|t| t.tag.into_string())
            .collect()
    };
    assert_eq!(
        tag_names(all_tags(store, "base", ListOrder::NewestFirst).await),
        ["a", "b", "d", "c", "v"]
    );
    assert_eq!(
        tag_names(all_tags(store, "base", ListOrder::Updated).await),
        ["v", "c", "d", "a", "b"]
    );
    let newest = ok(
        store
            .list_tags(
                &repository_name("base"),
                &TagListing::all(Listing::first(ListOrder::NewestFirst, 1)),
            )
            .await,
        "newest tag",
    );
    assert_eq!(tag_names(newest), ["a"]);
    let next = Listing {
        order: ListOrder::Name,
        after: Some(Position::Name("c".into())),
        limit: 2,
    };
    let got = ok(
        store
            .list_tags(&repository_name("base"), &TagListing::all(next))
            .await,
        "tags after",
    );
    assert_eq!(tag_names(got), ["d", "v"]);
}

/// A position of one order cannot continue a listing in another.
pub async fn listings_refuse_positions_of_another_order(store: &dyn Store) {
    ok(
        store
            .apply(&put_image("app", "v", &image("a").build()))
            .await,
        "put",
    );
    let mixed = Listing {
        order: ListOrder::NewestFirst,
        after: Some(Position::Name("app".into())),
        limit: 5,
    };
    let repositories = RepositoryListing {
        namespace: None,
        listing: mixed.clone(),
    };
    assert!(matches!(
        store.list_repositories(&repositories).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .list_tags(&repository_name("app"), &TagListing::all(mixed))
            .await,
        Err(StoreError::Invalid(_))
    ));
}

/// Random times, names and page sizes: walking page by page in every order gives the
/// reference order over everything, each item once.
pub async fn randomized_walks_match_reference(store: &dyn Store) {
    let mut rng = StdRng::seed_from_u64(0x6469_7363);
    let a = image("a").build();
    for i in 0..60 {
        let name = format!("ns{}/r{:02}", i % 3, rng.random_range(0..40));
        let tag = format!("t{}", rng.random_range(0..8));
        let t = time(rng.random_range(0..12));
        // A quarter of the puts point the tag at an artifact, of one of two types.
        let change = match rng.random_range(0..8) {
            0 => put_artifact(&name, &tag, &artifact(&format!("walk {i}"), HELM)),
            1 => put_artifact(&name, &tag, &artifact(&format!("walk {i}"), SPDX)),
            _ => put_image(&name, &tag, &a),
        };
        ok(store.apply(&at(change, t)).await, "put");
    }
    for order in ORDERS {
        let everything = all_repositories(store, order).await;
        let mut reference = everything.clone();
        Listing::first(order, usize::MAX).sort(&mut reference);
        assert_eq!(everything, reference, "{order:?}: not in the model's order");
        for namespace in [None, Some("ns1")] {
            let wanted: Vec<_> = everything
                .iter()
                .filter(|r| {
                    namespace.is_none_or(|ns| r.name.as_str().starts_with(&format!("{ns}/")))
                })
                .cloned()
                .collect();
            let limit = rng.random_range(1..7);
            let mut listing = RepositoryListing {
                namespace: namespace.map(str::to_owned),
                listing: Listing::first(order, limit),
            };
            let mut walked = Vec::new();
            loop {
                let page = ok(store.list_repositories(&listing).await, "page");
                assert!(page.len() <= limit);
                let Some(last) = page.last() else { break };
                listing.listing.after = Some(listing.listing.position_of(last));
                walked.extend(page);
            }
            assert_eq!(walked, wanted, "{order:?} {namespace:?} by {limit}");
        }
        // Every repository's tags, walked in pages of 2, whole and filtered by type.
        let mut artifact_tags = 0;
        for repository in &everything {
            let name = repository.name.to_string();
            let tags = all_tags(store, &name, order).await.unwrap();
            let mut reference = tags.clone();
            Listing::first(order, usize::MAX).sort(&mut reference);
            assert_eq!(tags, reference, "{order:?}: tags of {name} not in order");
            artifact_tags += tags.iter().filter(|t| t.artifact_type.is_some()).count();
            for artifact_type in [None, Some(HELM), Some(SPDX)] {
                let wanted = TagListing {
                    artifact_type: artifact_type.map(str::to_owned),
                    listing: Listing::first(order, usize::MAX),
                }
                .select(tags.clone());
                let mut walked = Vec::new();
                let mut listing = TagListing {
                    artifact_type: artifact_type.map(str::to_owned),
                    listing: Listing::first(order, 2),
                };
                loop {
                    let page =
                        ok(store.list_tags(&repository.name, &listing).await, "page").unwrap();
                    let Some(last) = page.last() else { break };
                    listing.listing.after = Some(listing.listing.position_of(last));
                    walked.extend(page);
                }
                assert_eq!(
                    walked, wanted,
                    "{order:?} tags of {name} of type {artifact_type:?}"
                );
            }
        }
        assert!(artifact_tags > 0, "the walks had artifact tags to filter");
    }
}

const HELM: &str = "application/vnd.cncf.helm.config.v1+json";
const SPDX: &str = "application/spdx+json";
