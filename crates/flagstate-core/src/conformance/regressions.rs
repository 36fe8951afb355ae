//! One named test per query- or store-level bug of the original Go implementation, so a
//! regression is reported under the bug's own name.

use super::fixtures::{flatpak_app, image, list, list_children, load, names, query_json, repo};
use super::queries::{expect_images, run};
use crate::store::Store;

/// `label:` queries must match (the original never stripped the prefix, so Flatpak's own
/// query returned nothing).
pub async fn regression_label_queries_match(store: &dyn Store) {
    let app = flatpak_app("org.example.App", "amd64").build();
    let arm = flatpak_app("org.example.App", "arm64").build();
    let plain = image("plain").build();
    load(
        store,
        &[
            repo("apps/app")
                .image("latest", &app)
                .image("arm", &arm)
                .build(),
            repo("plain").image("latest", &plain).build(),
        ],
    )
    .await;
    let flatpak = "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
    expect_images(store, flatpak, &[("apps/app", &app)]).await;
    expect_images(
        store,
        "label:org.flatpak.ref=app%2Forg.example.App%2Fx86_64%2Fstable",
        &[("apps/app", &app)],
    )
    .await;
    expect_images(
        store,
        "label:org.flatpak.ref:matches=app/org.example.*",
        &[("apps/app", &app), ("apps/app", &arm)],
    )
    .await;
}

/// Tags belong to one repository: two repositories holding the same digest each show
/// only their own tags, and a tag query never finds the other repository.
pub async fn regression_tags_do_not_leak_across_repositories(store: &dyn Store) {
    let shared = image("shared").build();
    let child = image("child").build();
    let l = list("shared-list").child(&child).build();
    load(
        store,
        &[
            repo("one").image("a", &shared).list("la", &l).build(),
            repo("two").image("b", &shared).list("lb", &l).build(),
        ],
    )
    .await;
    let results = run(store, "").await;
    assert_eq!(names(&results), ["one", "two"]);
    for (entry, tag, list_tag) in [(&results[0], "a", "la"), (&results[1], "b", "lb")] {
        assert_eq!(entry.images[0].tags.as_deref(), Some(&[tag.to_owned()][..]));
        assert_eq!(entry.lists[0].tags, [list_tag]);
    }
    expect_images(store, "tag=b", &[("two", &shared)]).await;
    let results = run(store, "tag=la").await;
    assert_eq!(
        list_children(&results),
        [("one", l.digest(), vec![&child.digest])]
    );
    assert!(results[0].images.is_empty());
}

/// Repeated `annotation:K=` values are ORed (the original used only the first).
pub async fn regression_repeated_annotation_values_are_ored(store: &dyn Store) {
    let [a, b, c] = ["a", "b", "c"].map(|v| image(v).annotation("k", v).label("k", v).build());
    load(
        store,
        &[repo("app")
            .image("a", &a)
            .image("b", &b)
            .image("c", &c)
            .build()],
    )
    .await;
    expect_images(
        store,
        "annotation:k=a&annotation:k=c",
        &[("app", &a), ("app", &c)],
    )
    .await;
    expect_images(
        store,
        "annotation:k=c&annotation:k=a",
        &[("app", &a), ("app", &c)],
    )
    .await;
    expect_images(store, "label:k=b&label:k=c", &[("app", &b), ("app", &c)]).await;
    expect_images(
        store,
        "annotation:k:matches=a&annotation:k:matches=b",
        &[("app", &a), ("app", &b)],
    )
    .await;
}

/// `:matches` takes a glob (the original only worked when the pattern was `1`).
pub async fn regression_matches_takes_a_glob(store: &dyn Store) {
    let one = image("one").annotation("v", "1").label("v", "1").build();
    let ten = image("ten").annotation("v", "10").label("v", "10").build();
    let text = image("text")
        .annotation("v", "foo-bar")
        .label("v", "foo-bar")
        .build();
    load(
        store,
        &[repo("app")
            .image("1", &one)
            .image("10", &ten)
            .image("foo-bar", &text)
            .build()],
    )
    .await;
    for prefix in ["tag", "label:v", "annotation:v"] {
        expect_images(store, &format!("{prefix}:matches=1"), &[("app", &one)]).await;
        expect_images(
            store,
            &format!("{prefix}:matches=1*"),
            &[("app", &one), ("app", &ten)],
        )
        .await;
        expect_images(store, &format!("{prefix}:matches=1?"), &[("app", &ten)]).await;
        expect_images(store, &format!("{prefix}:matches=*o-b*"), &[("app", &text)]).await;
        expect_images(store, &format!("{prefix}:matches=foo"), &[]).await;
    }
}

/// Output order is bytewise and total and has no duplicates: repositories by name, images
/// and lists by digest, tags bytewise (uppercase before `_` before lowercase).
pub async fn regression_order_is_bytewise_and_total(store: &dyn Store) {
    let imgs: Vec<_> = (0..5).map(|i| image(&format!("img{i}")).build()).collect();
    let children: Vec<_> = (0..3)
        .map(|i| image(&format!("child{i}")).build())
        .collect();
    // The same child twice, and children in reverse digest order.
    let mut l = list("l");
    for c in children.iter().rev() {
        l = l.child(c);
    }
    let l = l.child(&children[0]).build();
    let names_in = ["a0", "a.z", "b", "a-c", "a/b", "a", "a/b/c", "a_b"];
    let mut snapshots = Vec::new();
    for name in names_in {
        let mut s = repo(name);
        for (i, img) in imgs.iter().enumerate().rev() {
            s = s.image(&format!("t{i}"), img);
        }
        s = s
            .image("Z", &imgs[0])
            .image("_x", &imgs[0])
            .image("B", &imgs[0])
            .image("a", &imgs[0])
            .list("multi", &l)
            .list("Multi", &l);
        snapshots.push(s.build());
    }
    load(store, &snapshots).await;
    let results = run(store, "").await;
    assert_eq!(
        names(&results),
        ["a", "a-c", "a.z", "a/b", "a/b/c", "a0", "a_b", "b"]
    );
    let mut digests: Vec<_> = imgs.iter().map(|i| &i.digest).collect();
    digests.sort();
    let mut child_digests: Vec<_> = children.iter().map(|i| &i.digest).collect();
    child_digests.sort();
    for entry in &results {
        let got: Vec<_> = entry.images.iter().map(|i| &i.digest).collect();
        assert_eq!(
            got, digests,
            "{}: images sorted by digest, once each",
            entry.name
        );
        let first = entry
            .images
            .iter()
            .find(|i| i.digest == imgs[0].digest)
            .and_then(|i| i.tags.clone());
        assert_eq!(
            first,
            Some(["B", "Z", "_x", "a", "t0"].map(String::from).to_vec())
        );
        assert_eq!(entry.lists.len(), 1);
        assert_eq!(entry.lists[0].tags, ["Multi", "multi"]);
        let got: Vec<_> = entry.lists[0].images.iter().map(|i| &i.digest).collect();
        assert_eq!(
            got, child_digests,
            "{}: children sorted, once each",
            entry.name
        );
    }
    // Repeated queries give identical bytes.
    assert_eq!(query_json(store, "").await, query_json(store, "").await);
}
