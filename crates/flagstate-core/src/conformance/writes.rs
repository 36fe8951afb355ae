//! Write-side contract: replace, remove, apply, generations, immutability, garbage
//! collection and the listing methods.

use std::collections::BTreeMap;

use super::fixtures::{
    delete_manifest, delete_tag, digest, image, list, put_image, put_list, query, repo,
    repository_name, tag_name,
};
use super::ok;
use crate::model::{Manifest, TagChange};
use crate::query::IndexQuery;
use crate::store::{Store, StoreError};

async fn generation(store: &dyn Store) -> u64 {
    ok(store.generation().await, "generation")
}

async fn tags(store: &dyn Store, name: &str) -> Option<BTreeMap<String, String>> {
    ok(
        store.repository_tags(&repository_name(name)).await,
        "repository_tags",
    )
    .map(|t| {
        t.into_iter()
            .map(|(tag, d)| (tag.into_string(), d.as_str().to_owned()))
            .collect()
    })
}

fn tag_map(pairs: &[(&str, &crate::Digest)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(t, d)| ((*t).to_owned(), d.as_str().to_owned()))
            .collect(),
    )
}

/// Everything a query for all images returns, as bytes: the "visible state".
async fn visible(store: &dyn Store) -> Vec<u8> {
    let results = ok(store.query(&IndexQuery::all()).await, "query all");
    crate::IndexResponse::new("/", results).to_json()
}

/// A new repository becomes visible and bumps the generation; the returned generation is
/// the current one.
pub async fn replace_creates_repository(store: &dyn Store) {
    let g0 = generation(store).await;
    let img = image("one").build();
    let g1 = ok(
        store
            .replace_repository(&repo("app").image("latest", &img).build())
            .await,
        "replace",
    );
    assert!(g1 > g0, "a new repository must bump the generation");
    assert_eq!(
        generation(store).await,
        g1,
        "replace returns the generation"
    );
    assert_eq!(
        tags(store, "app").await,
        tag_map(&[("latest", &img.digest)])
    );
    let results = ok(store.query(&IndexQuery::all()).await, "query");
    assert_eq!(super::fixtures::names(&results), ["app"]);

    // A new repository without tags is still a new repository.
    let g2 = ok(
        store.replace_repository(&repo("empty").build()).await,
        "replace empty",
    );
    assert!(g2 > g1, "a new (empty) repository must bump the generation");
    assert_eq!(
        ok(store.repositories().await, "repositories"),
        ["app", "empty"]
    );
}

/// Replacing with identical tags — with or without the manifests, or with extra unused
/// manifests — changes nothing visible and does not bump the generation.
pub async fn replace_identical_does_not_bump(store: &dyn Store) {
    let img = image("one").build();
    let snapshot = repo("app").image("latest", &img).build();
    let g1 = ok(store.replace_repository(&snapshot).await, "replace");
    let before = visible(store).await;
    let g2 = ok(
        store.replace_repository(&snapshot).await,
        "identical replace",
    );
    assert_eq!(g2, g1, "identical replace must not bump");
    let bare = repo("app").digest("latest", &img.digest).build();
    let g3 = ok(
        store.replace_repository(&bare).await,
        "replace without manifests",
    );
    assert_eq!(
        g3, g1,
        "replace with already stored manifests must not bump"
    );
    let extra = repo("app")
        .image("latest", &img)
        .extra(Manifest::Image(image("unused").build()))
        .build();
    let g4 = ok(store.replace_repository(&extra).await, "replace with extra");
    assert_eq!(g4, g1, "an extra untagged manifest must not bump");
    assert_eq!(generation(store).await, g1);
    assert_eq!(visible(store).await, before);
}

/// Replace is authoritative: tags missing from the snapshot are removed, moved tags
/// move, and each such change bumps the generation.
pub async fn replace_removes_tags(store: &dyn Store) {
    let a = image("a").build();
    let b = image("b").build();
    let g1 = ok(
        store
            .replace_repository(&repo("app").image("1", &a).image("2", &a).build())
            .await,
        "replace",
    );
    let g2 = ok(
        store
            .replace_repository(&repo("app").image("2", &b).build())
            .await,
        "replace moving and removing",
    );
    assert!(g2 > g1, "changed tags must bump");
    assert_eq!(tags(store, "app").await, tag_map(&[("2", &b.digest)]));
    let results = ok(store.query(&query("tag=1")).await, "query tag=1");
    assert!(results.is_empty(), "removed tag still matches: {results:?}");
    let results = ok(store.query(&query("tag=2")).await, "query tag=2");
    assert_eq!(
        super::fixtures::image_digests(&results),
        [("app", &b.digest)]
    );
    let g3 = ok(
        store.replace_repository(&repo("app").build()).await,
        "replace with no tags",
    );
    assert!(g3 > g2, "removing every tag must bump");
    assert_eq!(tags(store, "app").await, Some(BTreeMap::new()));
    assert_eq!(ok(store.repositories().await, "repositories"), ["app"]);
}

/// A tag or list entry that resolves nowhere is rejected with `MissingManifest` naming
/// the digest, and nothing changes (not even the manifests that were supplied).
pub async fn replace_missing_manifest_changes_nothing(store: &dyn Store) {
    let kept = image("kept").build();
    ok(
        store
            .replace_repository(&repo("app").image("v1", &kept).build())
            .await,
        "replace",
    );
    let g = generation(store).await;
    let before = visible(store).await;
    let supplied = image("supplied").build();
    let absent = digest("absent");
    let bad = repo("app")
        .image("v2", &supplied)
        .digest("v3", &absent)
        .build();
    match store.replace_repository(&bad).await {
        Err(StoreError::MissingManifest { repository, digest }) => {
            assert_eq!(repository, "app");
            assert_eq!(digest, absent);
        }
        other => panic!("expected MissingManifest, got {other:?}"),
    }
    // A list whose child is missing.
    let child = image("child").build();
    let mut broken = list("broken").child(&child).build();
    broken.children.clear();
    let bad = repo("other").list("latest", &broken).build();
    match store.replace_repository(&bad).await {
        Err(StoreError::MissingManifest { digest, .. }) => assert_eq!(digest, child.digest),
        other => panic!("expected MissingManifest for the list child, got {other:?}"),
    }
    assert_eq!(generation(store).await, g, "a rejected write must not bump");
    assert_eq!(visible(store).await, before);
    assert_eq!(tags(store, "app").await, tag_map(&[("v1", &kept.digest)]));
    assert_eq!(
        tags(store, "other").await,
        None,
        "rejected repository created"
    );
    assert_eq!(ok(store.manifest(&supplied.digest).await, "manifest"), None);
    let known = ok(
        store
            .known_manifests(&[supplied.digest.clone(), broken.digest().clone()])
            .await,
        "known_manifests",
    );
    assert!(
        known.is_empty(),
        "rejected manifests were stored: {known:?}"
    );
}

/// List entries that are lists are `Invalid`. (Bad repository names and tags cannot
/// reach a store: [`RepositoryName`](crate::RepositoryName) and [`Tag`](crate::Tag)
/// only hold valid ones.)
pub async fn replace_rejects_invalid_input(store: &dyn Store) {
    let g0 = generation(store).await;
    let img = image("img").build();
    let inner = list("inner").child(&img).build();
    let mut outer = list("outer").build();
    outer.list.entries.push(crate::model::ListEntry {
        digest: inner.digest().clone(),
        platform: None,
    });
    let nested = repo("app")
        .list("latest", &outer)
        .extra(Manifest::List(inner.list.clone()))
        .extra(Manifest::Image(img.clone()))
        .build();
    let result = store.replace_repository(&nested).await;
    assert!(
        matches!(result, Err(StoreError::Invalid(_))),
        "list inside a list: expected Invalid, got {result:?}"
    );
    assert!(ok(store.repositories().await, "repositories").is_empty());
    assert_eq!(generation(store).await, g0, "rejected writes must not bump");
}

/// A manifest is stored once; later different content under the same digest is ignored.
pub async fn stored_manifests_are_immutable(store: &dyn Store) {
    let original = image("same").label("version", "1").build();
    ok(
        store
            .replace_repository(&repo("a").image("latest", &original).build())
            .await,
        "replace",
    );
    let impostor = image("same").label("version", "2").arch("arm64").build();
    ok(
        store
            .replace_repository(&repo("b").image("latest", &impostor).build())
            .await,
        "replace with conflicting content",
    );
    ok(
        store.apply(&put_image("c", "latest", &impostor)).await,
        "put with conflicting content",
    );
    assert_eq!(
        ok(store.manifest(&original.digest).await, "manifest"),
        Some(Manifest::Image(original.clone()))
    );
    let results = ok(store.query(&query("label:version=1")).await, "query");
    assert_eq!(super::fixtures::names(&results), ["a", "b", "c"]);
    let results = ok(store.query(&query("label:version=2")).await, "query");
    assert!(results.is_empty(), "impostor content visible: {results:?}");
}

/// Removing a repository drops its tags (bumping the generation) but keeps manifests
/// until garbage collection; removing it again is a no-op.
pub async fn remove_repository_keeps_manifests_until_gc(store: &dyn Store) {
    let img = image("img").build();
    let g1 = ok(
        store
            .replace_repository(&repo("gone").image("latest", &img).build())
            .await,
        "replace",
    );
    let g2 = ok(
        store.remove_repository(&repository_name("gone")).await,
        "remove",
    );
    assert!(g2 > g1, "removing a repository must bump");
    assert_eq!(tags(store, "gone").await, None);
    assert!(ok(store.repositories().await, "repositories").is_empty());
    assert!(ok(store.query(&IndexQuery::all()).await, "query").is_empty());
    assert!(
        ok(store.manifest(&img.digest).await, "manifest").is_some(),
        "manifests must stay until garbage collection"
    );
    let g3 = ok(
        store.remove_repository(&repository_name("gone")).await,
        "remove again",
    );
    assert_eq!(g3, g2, "removing an unknown repository must not bump");
    let stats = ok(store.collect_garbage().await, "gc");
    assert_eq!(stats.manifests_removed, 1);
    assert_eq!(ok(store.manifest(&img.digest).await, "manifest"), None);
    assert_eq!(generation(store).await, g2, "gc must not bump");
}

/// `Put` creates the repository, adds and moves tags (bumping), and re-putting the same
/// digest is a no-op.
pub async fn apply_put_adds_and_moves_tags(store: &dyn Store) {
    let a = image("a").build();
    let b = image("b").build();
    let g0 = generation(store).await;
    let g1 = ok(store.apply(&put_image("app", "latest", &a)).await, "put");
    assert!(g1 > g0, "put creating a repository must bump");
    assert_eq!(tags(store, "app").await, tag_map(&[("latest", &a.digest)]));
    let g2 = ok(store.apply(&put_image("app", "latest", &a)).await, "re-put");
    assert_eq!(g2, g1, "putting the same digest again must not bump");
    let g3 = ok(store.apply(&put_image("app", "latest", &b)).await, "move");
    assert!(g3 > g2, "moving a tag must bump");
    let g4 = ok(store.apply(&put_image("app", "stable", &a)).await, "add");
    assert!(g4 > g3, "adding a tag must bump");
    assert_eq!(
        tags(store, "app").await,
        tag_map(&[("latest", &b.digest), ("stable", &a.digest)])
    );
    // Put of an already stored manifest needs no manifests.
    let bare = TagChange::Put {
        repository: repository_name("app"),
        tag: tag_name("again"),
        digest: a.digest.clone(),
        manifests: vec![],
        at: crate::timestamp::Timestamp::now(),
    };
    ok(store.apply(&bare).await, "put without manifests");
    // Lists.
    let l = list("l").child(&image("x").build()).build();
    ok(store.apply(&put_list("app", "multi", &l)).await, "put list");
    let results = ok(store.query(&query("tag=multi")).await, "query");
    assert_eq!(super::fixtures::list_children(&results).len(), 1);
    assert_eq!(tags(store, "app").await.map(|t| t.len()), Some(4));
}

/// A `Put` whose manifest resolves nowhere is rejected and changes nothing.
pub async fn apply_put_missing_manifest_changes_nothing(store: &dyn Store) {
    let a = image("a").build();
    ok(store.apply(&put_image("app", "latest", &a)).await, "put");
    let g = generation(store).await;
    let absent = digest("absent");
    let change = TagChange::Put {
        repository: repository_name("app"),
        tag: tag_name("latest"),
        digest: absent.clone(),
        manifests: vec![],
        at: crate::timestamp::Timestamp::now(),
    };
    match store.apply(&change).await {
        Err(StoreError::MissingManifest { repository, digest }) => {
            assert_eq!((repository.as_str(), digest), ("app", absent));
        }
        other => panic!("expected MissingManifest, got {other:?}"),
    }
    let child = image("child").build();
    let mut l = list("l").child(&child).build();
    l.children.clear();
    match store.apply(&put_list("new", "latest", &l)).await {
        Err(StoreError::MissingManifest { digest, .. }) => assert_eq!(digest, child.digest),
        other => panic!("expected MissingManifest for a list child, got {other:?}"),
    }
    assert_eq!(generation(store).await, g);
    assert_eq!(tags(store, "app").await, tag_map(&[("latest", &a.digest)]));
    assert_eq!(tags(store, "new").await, None);
    assert_eq!(ok(store.manifest(l.digest()).await, "manifest"), None);
}

/// `DeleteTag` removes one tag (bumping); the repository stays listed when empty.
pub async fn apply_delete_tag(store: &dyn Store) {
    let a = image("a").build();
    ok(
        store
            .replace_repository(&repo("app").image("1", &a).image("2", &a).build())
            .await,
        "replace",
    );
    let g1 = generation(store).await;
    let g2 = ok(store.apply(&delete_tag("app", "1")).await, "delete tag");
    assert!(g2 > g1, "deleting a tag must bump");
    assert_eq!(tags(store, "app").await, tag_map(&[("2", &a.digest)]));
    let results = ok(store.query(&IndexQuery::all()).await, "query");
    assert_eq!(
        results[0].images[0].tags.as_deref(),
        Some(&["2".to_owned()][..])
    );
    ok(
        store.apply(&delete_tag("app", "2")).await,
        "delete last tag",
    );
    assert_eq!(tags(store, "app").await, Some(BTreeMap::new()));
    assert_eq!(ok(store.repositories().await, "repositories"), ["app"]);
    assert!(ok(store.query(&IndexQuery::all()).await, "query").is_empty());
}

/// `DeleteManifest` removes every tag of that repository pointing at the digest, and
/// nothing in other repositories.
pub async fn apply_delete_manifest_stays_in_its_repository(store: &dyn Store) {
    let shared = image("shared").build();
    let other = image("other").build();
    ok(
        store
            .replace_repository(
                &repo("one")
                    .image("a", &shared)
                    .image("b", &shared)
                    .image("c", &other)
                    .build(),
            )
            .await,
        "replace one",
    );
    ok(
        store
            .replace_repository(&repo("two").image("a", &shared).build())
            .await,
        "replace two",
    );
    let g1 = generation(store).await;
    let g2 = ok(
        store.apply(&delete_manifest("one", &shared.digest)).await,
        "delete manifest",
    );
    assert!(g2 > g1, "deleting a tagged manifest must bump");
    assert_eq!(tags(store, "one").await, tag_map(&[("c", &other.digest)]));
    assert_eq!(tags(store, "two").await, tag_map(&[("a", &shared.digest)]));
    let results = ok(store.query(&query("tag=a")).await, "query");
    assert_eq!(
        super::fixtures::image_digests(&results),
        [("two", &shared.digest)]
    );
}

/// Deleting tags, manifests or repositories that do not exist succeeds without bumping.
pub async fn deletes_of_absent_things_are_noops(store: &dyn Store) {
    let a = image("a").build();
    ok(store.apply(&put_image("app", "latest", &a)).await, "put");
    let g = generation(store).await;
    let before = visible(store).await;
    for change in [
        delete_tag("app", "nope"),
        delete_tag("nowhere", "latest"),
        delete_manifest("app", &digest("absent")),
        delete_manifest("nowhere", &a.digest),
    ] {
        let got = ok(store.apply(&change).await, &format!("{change:?}"));
        assert_eq!(got, g, "{change:?} must not bump");
    }
    assert_eq!(
        ok(
            store.remove_repository(&repository_name("nowhere")).await,
            "remove"
        ),
        g
    );
    assert_eq!(generation(store).await, g);
    assert_eq!(visible(store).await, before);
    assert_eq!(ok(store.repositories().await, "repositories"), ["app"]);
}

/// GC removes exactly the manifests no tag reaches (directly or as a child of a tagged
/// list), never changes query results, and never bumps the generation.
pub async fn garbage_collection(store: &dyn Store) {
    let tagged = image("tagged").build();
    let child = image("child").arch("arm64").build();
    let shared_child = image("shared-child").build();
    let kept_list = list("kept-list").child(&child).child(&shared_child).build();
    let orphan = image("orphan").build();
    let orphan_child = image("orphan-child").build();
    let orphan_list = list("orphan-list")
        .child(&orphan_child)
        .child(&shared_child)
        .build();
    let snapshot = repo("app")
        .image("img", &tagged)
        .list("multi", &kept_list)
        .extra(Manifest::Image(orphan.clone()))
        .build();
    ok(store.replace_repository(&snapshot).await, "replace");
    ok(
        store.apply(&put_list("app", "old", &orphan_list)).await,
        "put list",
    );
    ok(store.apply(&delete_tag("app", "old")).await, "delete tag");
    let g = generation(store).await;
    let before = visible(store).await;
    let stats = ok(store.collect_garbage().await, "gc");
    assert_eq!(
        stats.manifests_removed, 3,
        "orphan, orphan list and its own child"
    );
    for gone in [&orphan.digest, orphan_list.digest(), &orphan_child.digest] {
        assert_eq!(ok(store.manifest(gone).await, "manifest"), None, "{gone}");
    }
    for kept in [
        &tagged.digest,
        kept_list.digest(),
        &child.digest,
        &shared_child.digest,
    ] {
        assert!(
            ok(store.manifest(kept).await, "manifest").is_some(),
            "{kept}"
        );
    }
    assert_eq!(generation(store).await, g, "gc must not bump");
    assert_eq!(visible(store).await, before, "gc changed query results");
    let again = ok(store.collect_garbage().await, "gc again");
    assert_eq!(again.manifests_removed, 0);
}

/// `known_manifests` reports stored images, and lists only with all their children.
pub async fn known_manifests_reports_complete_manifests(store: &dyn Store) {
    let img = image("img").build();
    let child = image("child").build();
    let l = list("l").child(&child).build();
    ok(
        store
            .replace_repository(&repo("app").image("a", &img).list("b", &l).build())
            .await,
        "replace",
    );
    let asked = [
        img.digest.clone(),
        l.digest().clone(),
        child.digest.clone(),
        digest("unknown"),
    ];
    let known = ok(store.known_manifests(&asked).await, "known_manifests");
    let expected: std::collections::BTreeSet<_> = asked[..3].iter().cloned().collect();
    assert_eq!(known, expected);
    assert!(ok(store.known_manifests(&[]).await, "known_manifests").is_empty());
    assert_eq!(
        ok(store.manifest(l.digest()).await, "manifest"),
        Some(Manifest::List(l.list.clone()))
    );
    assert_eq!(
        ok(store.manifest(&child.digest).await, "manifest"),
        Some(Manifest::Image(child.clone()))
    );
    assert_eq!(
        ok(store.manifest(&digest("unknown")).await, "manifest"),
        None
    );
}

/// `repositories()` is sorted bytewise; `repository_tags` is exact.
pub async fn listing_repositories_and_tags(store: &dyn Store) {
    let img = image("img").build();
    for name in ["a0", "a.z", "b", "a-c", "a/b", "a"] {
        ok(
            store
                .replace_repository(&repo(name).image("latest", &img).build())
                .await,
            "replace",
        );
    }
    assert_eq!(
        ok(store.repositories().await, "repositories"),
        ["a", "a-c", "a.z", "a/b", "a0", "b"]
    );
    assert_eq!(
        tags(store, "a/b").await,
        tag_map(&[("latest", &img.digest)])
    );
    assert_eq!(tags(store, "a/b/c").await, None);
}

/// The public registry URL is stored with the index: none at first, then exactly what was
/// set, with a generation bump iff the value changes (answers name it), and it survives
/// other writes.
pub async fn registry_url_is_stored_with_the_index(store: &dyn Store) {
    assert_eq!(
        ok(store.registry_url().await, "registry_url"),
        None,
        "a fresh store has no registry URL"
    );
    let g0 = generation(store).await;
    let url = "https://registry.example.org:5000/ünïcode?x=1";
    let g1 = ok(store.set_registry_url(url).await, "set_registry_url");
    assert!(g1 > g0, "storing a registry URL must bump the generation");
    assert_eq!(generation(store).await, g1);
    assert_eq!(
        ok(store.registry_url().await, "registry_url").as_deref(),
        Some(url)
    );
    let g2 = ok(store.set_registry_url(url).await, "set_registry_url again");
    assert_eq!(
        g2, g1,
        "storing the same URL again must not bump the generation"
    );

    let img = image("one").build();
    ok(
        store
            .replace_repository(&repo("app").image("latest", &img).build())
            .await,
        "replace",
    );
    assert_eq!(
        ok(store.registry_url().await, "registry_url after a write").as_deref(),
        Some(url),
        "other writes keep the stored URL"
    );
    let g3 = generation(store).await;
    let g4 = ok(store.set_registry_url("/").await, "set_registry_url /");
    assert!(g4 > g3, "a changed registry URL must bump the generation");
    assert_eq!(
        ok(store.registry_url().await, "registry_url").as_deref(),
        Some("/")
    );
}
