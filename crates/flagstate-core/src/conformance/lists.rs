//! Image lists: which children a query shows, tags on lists, and the list platform rule.

use super::fixtures::{
    ListFixture, flatpak_app, image, image_digests, list, list_children, load, names, repo,
};
use super::ok;
use super::queries::{reference_of, run};
use crate::model::{Image, Manifest, Platform};
use crate::store::Store;

/// A list of three children (amd64 and arm64 labelled `app=<seed>`, ppc64le unlabelled).
pub(super) fn multi_arch(seed: &str) -> (Image, Image, Image, ListFixture) {
    let amd = image(&format!("{seed} amd")).label("app", seed).build();
    let arm = image(&format!("{seed} arm"))
        .label("app", seed)
        .arch("arm64")
        .build();
    let ppc = image(&format!("{seed} ppc")).arch("ppc64le").build();
    let l = list(seed).child(&amd).child(&arm).child(&ppc).build();
    (amd, arm, ppc, l)
}

/// A list is shown when at least one child matches, with only the matching children.
pub async fn query_list_shows_only_matching_children(store: &dyn Store) {
    let (amd, arm, ppc, l) = multi_arch("multi");
    load(
        store,
        &[repo("app").list("latest", &l).list("old", &l).build()],
    )
    .await;
    let results = run(store, "architecture=arm64").await;
    assert_eq!(
        list_children(&results),
        [("app", l.digest(), vec![&arm.digest])]
    );
    assert!(results[0].images.is_empty());
    assert_eq!(results[0].lists[0].tags, ["latest", "old"]);
    let results = run(store, "label:app=multi").await;
    let mut both = vec![&amd.digest, &arm.digest];
    both.sort();
    assert_eq!(list_children(&results), [("app", l.digest(), both)]);
    let results = run(store, "label:app:exists=1&architecture=ppc64le").await;
    assert!(results.is_empty(), "no child matches: {results:?}");
    let results = run(store, "architecture=ppc64le").await;
    assert_eq!(
        list_children(&results),
        [("app", l.digest(), vec![&ppc.digest])]
    );
    assert_eq!(results, reference_of(store, "architecture=ppc64le").await);
}

/// `tag=` on a list's tag matches its children; a child's own tag does not make the
/// list match, and list children do not inherit tags they carry elsewhere.
pub async fn query_tag_on_list_matches_children(store: &dyn Store) {
    let (amd, arm, ppc, l) = multi_arch("multi");
    load(
        store,
        &[repo("app")
            .list("stable", &l)
            .image("amd-only", &amd)
            .build()],
    )
    .await;
    let results = run(store, "tag=stable").await;
    let mut all = vec![&amd.digest, &arm.digest, &ppc.digest];
    all.sort();
    assert_eq!(list_children(&results), [("app", l.digest(), all)]);
    assert!(
        results[0].images.is_empty(),
        "amd is not tagged stable itself"
    );
    let results = run(store, "tag=amd-only").await;
    assert_eq!(image_digests(&results), [("app", &amd.digest)]);
    assert!(
        results[0].lists.is_empty(),
        "the list is not tagged amd-only"
    );
    let results = run(store, "tag:matches=st*&architecture=arm64").await;
    assert_eq!(
        list_children(&results),
        [("app", l.digest(), vec![&arm.digest])]
    );
    let results = run(store, "").await;
    assert_eq!(results[0].images.len(), 1);
    assert_eq!(results[0].lists.len(), 1);
}

/// Inside a list, the platform the list states wins over the child's config; without
/// one the config's applies. A directly tagged image always uses its config.
pub async fn query_list_platform_wins_over_config(store: &dyn Store) {
    // Like a real Flatpak test image: amd64 in the index, arm64 in the config.
    let mislabelled = flatpak_app("org.example.Odd", "arm64").build();
    let unstated = image("unstated").arch("s390x").build();
    let l = list("odd")
        .child_on(&mislabelled, Some(Platform::new("linux", "amd64")))
        .child_on(&unstated, None)
        .build();
    load(
        store,
        &[
            repo("odd").list("latest", &l).build(),
            repo("direct").image("latest", &mislabelled).build(),
        ],
    )
    .await;
    let results = run(store, "architecture=amd64").await;
    assert_eq!(
        list_children(&results),
        [("odd", l.digest(), vec![&mislabelled.digest])]
    );
    let child = &results[0].lists[0].images[0];
    assert_eq!(
        child.architecture, "amd64",
        "shown with the list's platform"
    );
    let results = run(store, "architecture=arm64").await;
    assert_eq!(
        names(&results),
        ["direct"],
        "config platform only for direct tags"
    );
    assert_eq!(results[0].images[0].architecture, "arm64");
    let results = run(store, "architecture=s390x").await;
    assert_eq!(
        list_children(&results),
        [("odd", l.digest(), vec![&unstated.digest])]
    );
    let flatpak = "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
    assert_eq!(names(&run(store, flatpak).await), ["odd"]);
}

/// Stored manifests no tag points at (directly or through a list) never show up.
pub async fn query_untagged_manifests_are_invisible(store: &dyn Store) {
    let tagged = image("tagged").build();
    let loose = image("loose").build();
    let (_, _, _, loose_list) = multi_arch("loose-list");
    let mut snapshot = repo("app").image("latest", &tagged).build();
    snapshot.manifests.push(Manifest::Image(loose.clone()));
    snapshot.manifests.extend(loose_list.manifests());
    ok(store.replace_repository(&snapshot).await, "replace");
    let results = run(store, "").await;
    assert_eq!(image_digests(&results), [("app", &tagged.digest)]);
    assert!(results[0].lists.is_empty());
    assert!(run(store, "architecture=arm64").await.is_empty());
}
