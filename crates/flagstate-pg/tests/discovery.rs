//! Discovery on PostgreSQL beyond the shared conformance suite: what follows from how this
//! store keeps history (by write order, naming digests as text) and compares names (in
//! SQL, with client positions bound as parameters).

mod common;

use flagstate_core::conformance::fixtures::{at, delete_tag, image, put_image, repo, time};
use flagstate_core::discovery::{
    HistoryEntry, HistoryRetention, ListOrder, Listing, Position, RepositoryListing,
};
use flagstate_core::{MemoryStore, RepositoryName, Store, Tag};

use common::{TestStore, pg_url};

fn name(text: &str) -> RepositoryName {
    text.parse().unwrap()
}

fn tag(text: &str) -> Tag {
    text.parse().unwrap()
}

/// Entries of one millisecond keep the order they were written in, and history keeps
/// naming digests whose manifests garbage collection deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_write_order_and_outlives_collected_manifests() {
    let Some(url) = pg_url() else { return };
    let store = TestStore::new(&url).await;
    let (a, b) = (image("a").build(), image("b").build());
    for image in [&a, &b, &a] {
        store
            .apply(&at(put_image("app", "latest", image), time(1)))
            .await
            .unwrap();
    }
    store
        .apply(&at(delete_tag("app", "latest"), time(1)))
        .await
        .unwrap();
    let collected = store.collect_garbage().await.unwrap();
    assert_eq!(collected.manifests_removed, 2);
    let entry = |digest: &flagstate_core::Digest| HistoryEntry {
        digest: digest.clone(),
        since: time(1),
    };
    assert_eq!(
        store
            .tag_history(&name("app"), &tag("latest"))
            .await
            .unwrap(),
        Some(vec![entry(&a.digest), entry(&b.digest), entry(&a.digest)])
    );
    let retention = HistoryRetention {
        max_entries: 2,
        max_age: None,
    };
    assert_eq!(store.prune_history(&retention, time(2)).await.unwrap(), 1);
    assert_eq!(
        store
            .tag_history(&name("app"), &tag("latest"))
            .await
            .unwrap(),
        Some(vec![entry(&b.digest), entry(&a.digest)]),
        "the oldest written entry goes first, though all started at once"
    );
}

/// Tags sort bytewise (digits, upper case, `_`, lower case) in every order and from any
/// position, including positions a client sends with characters no tag or name has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_compare_bytewise_and_accept_any_position() {
    let Some(url) = pg_url() else { return };
    let store = TestStore::new(&url).await;
    let reference = MemoryStore::new();
    let a = image("a").build();
    let mut snapshot = repo("ns/app").at(time(3));
    for t in ["b", "B", "_x", "1.0", "1-0", "Z_", "a.b", "a-b", "a_b"] {
        snapshot = snapshot.image(t, &a);
    }
    let snapshot = snapshot.build();
    for s in [&store.store as &dyn Store, &reference] {
        s.replace_repository(&snapshot).await.unwrap();
        s.apply(&at(put_image("ns/app", "B", &image("b").build()), time(2)))
            .await
            .unwrap();
        s.replace_repository(&repo("ns0").image("v", &a).at(time(3)).build())
            .await
            .unwrap();
        s.replace_repository(&repo("ns").image("v", &a).at(time(3)).build())
            .await
            .unwrap();
    }
    let positions = |order: ListOrder| -> Vec<Option<Position>> {
        let names = ["", "a", "a\0b", "\0", "B", "ns/app", "ns/", "é", "~"];
        let mut positions = vec![None];
        for n in names {
            positions.push(Some(match order {
                ListOrder::Name => Position::Name(n.to_owned()),
                _ => Position::Time {
                    updated: time(2),
                    name: n.to_owned(),
                },
            }));
        }
        positions
    };
    for order in [ListOrder::Name, ListOrder::Updated, ListOrder::NewestFirst] {
        for after in positions(order) {
            let listing = Listing {
                order,
                after: after.clone(),
                limit: usize::MAX,
            };
            assert_eq!(
                store
                    .list_tags(
                        &name("ns/app"),
                        &flagstate_core::TagListing::all(listing.clone())
                    )
                    .await
                    .unwrap(),
                reference
                    .list_tags(
                        &name("ns/app"),
                        &flagstate_core::TagListing::all(listing.clone())
                    )
                    .await
                    .unwrap(),
                "{order:?} after {after:?}"
            );
            for namespace in [None, Some("ns"), Some("n"), Some("ns\0"), Some("")] {
                let listing = RepositoryListing {
                    namespace: namespace.map(str::to_owned),
                    listing: listing.clone(),
                };
                assert_eq!(
                    store.list_repositories(&listing).await.unwrap(),
                    reference.list_repositories(&listing).await.unwrap(),
                    "{order:?} in {namespace:?} after {after:?}"
                );
            }
        }
    }
    let by_name = store
        .list_tags(
            &name("ns/app"),
            &flagstate_core::TagListing::all(Listing::first(ListOrder::Name, usize::MAX)),
        )
        .await
        .unwrap()
        .unwrap();
    let tags: Vec<&str> = by_name.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(
        tags,
        ["1-0", "1.0", "B", "Z_", "_x", "a-b", "a.b", "a_b", "b"]
    );
}

/// A replica reads listings and history; a listing of an unknown repository is `None`
/// there as on the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_read_listings_and_history() {
    let Some(url) = pg_url() else { return };
    let store = TestStore::new(&url).await;
    let a = image("a").build();
    store
        .replace_repository(&repo("app").image("v1", &a).at(time(5)).build())
        .await
        .unwrap();
    let replica = store.replica().await;
    let everything = RepositoryListing {
        namespace: None,
        listing: Listing::first(ListOrder::NewestFirst, 10),
    };
    assert_eq!(
        replica.list_repositories(&everything).await.unwrap(),
        store.list_repositories(&everything).await.unwrap()
    );
    let listing = Listing::first(ListOrder::Updated, 10);
    assert_eq!(
        replica
            .list_tags(
                &name("app"),
                &flagstate_core::TagListing::all(listing.clone())
            )
            .await
            .unwrap(),
        store
            .list_tags(
                &name("app"),
                &flagstate_core::TagListing::all(listing.clone())
            )
            .await
            .unwrap()
    );
    assert_eq!(
        replica
            .list_tags(
                &name("none"),
                &flagstate_core::TagListing::all(listing.clone())
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        replica.tag_history(&name("app"), &tag("v1")).await.unwrap(),
        Some(vec![HistoryEntry {
            digest: a.digest.clone(),
            since: time(5),
        }])
    );
    replica.close().await;
}
