//! Read-side contract: every query form, OR within a parameter and AND across
//! parameters, and the `Tags` of images.

use super::fixtures::{
    flatpak_app, image, image_digests, list, load, names, query, reference, repo,
};
use super::ok;
use crate::digest::Digest;
use crate::model::{Image, RepositorySnapshot};
use crate::query::IndexQuery;
use crate::response::RepositoryEntry;
use crate::store::Store;

/// Runs `raw` both ways, collected and streamed, and asserts they agree.
pub(super) async fn run(store: &dyn Store, raw: &str) -> Vec<RepositoryEntry> {
    let collected = ok(store.query(&query(raw)).await, &format!("query {raw:?}"));
    let stream = ok(store.query_stream(&query(raw)).await, "query_stream");
    let streamed = ok(stream.collect().await, &format!("streamed query {raw:?}"));
    assert_eq!(
        streamed, collected,
        "query_stream and query differ for {raw:?}"
    );
    collected
}

/// `query_stream` hands over the entries of `query`, in order, for an answer larger
/// than any internal batch; a consumer may stop early without harm; and a stream reads
/// one snapshot: a write made while it is being consumed does not show in it.
pub async fn query_stream_is_query_in_bounded_pieces(store: &dyn Store) {
    let snapshots: Vec<_> = (0..700)
        .map(|i| {
            let image = image(&format!("stream{i}"))
                .label("n", &i.to_string())
                .build();
            repo(&format!("stream/r{i:04}"))
                .image("latest", &image)
                .image("v1", &image)
                .build()
        })
        .collect();
    load(store, &snapshots).await;
    let all = run(store, "").await;
    assert_eq!(all.len(), 700);

    // Early stop: take a few, drop the stream, and the store still answers.
    let mut stream = ok(store.query_stream(&query("")).await, "query_stream");
    for _ in 0..3 {
        assert!(stream.next().await.is_some());
    }
    drop(stream);
    assert_eq!(run(store, "tag=v1").await.len(), 700);

    // Snapshot: start a stream, take one entry, then remove a repository it has not
    // reached yet; the stream still shows it.
    let mut stream = ok(store.query_stream(&query("")).await, "query_stream");
    let first = stream.next().await.map(|e| ok(e, "first streamed entry"));
    assert_eq!(
        first.as_ref().map(|e| e.name.as_str()),
        Some("stream/r0000")
    );
    ok(
        store.remove_repository(&snapshots[699].name).await,
        "remove_repository",
    );
    let rest = ok(stream.collect().await, "the rest of the stream");
    assert_eq!(
        rest.len(),
        699,
        "the stream reads the snapshot it started on"
    );
    assert_eq!(rest.last().map(|e| e.name.as_str()), Some("stream/r0699"));
    assert_eq!(run(store, "").await.len(), 699);
}

/// Asserts that `raw` finds exactly `expected` directly tagged images and no lists.
pub(super) async fn expect_images(store: &dyn Store, raw: &str, expected: &[(&str, &Image)]) {
    let results = run(store, raw).await;
    let mut want: Vec<(&str, &Digest)> = expected.iter().map(|(r, i)| (*r, &i.digest)).collect();
    want.sort();
    assert_eq!(image_digests(&results), want, "images for {raw:?}");
    assert!(
        results.iter().all(|r| r.lists.is_empty()),
        "no lists expected for {raw:?}: {results:?}"
    );
    assert_eq!(
        results,
        reference_of(store, raw).await,
        "reference for {raw:?}"
    );
}

/// The reference answer computed from what the store reports it holds.
pub(super) async fn reference_of(store: &dyn Store, raw: &str) -> Vec<RepositoryEntry> {
    let mut snapshots = Vec::new();
    for name in ok(store.repositories().await, "repositories") {
        let tags = ok(store.repository_tags(&name).await, "repository_tags").unwrap_or_default();
        let mut manifests = Vec::new();
        for digest in tags.values() {
            if let Some(m) = ok(store.manifest(digest).await, "manifest") {
                for child in m.children() {
                    if let Some(c) = ok(store.manifest(child).await, "manifest") {
                        manifests.push(c);
                    }
                }
                manifests.push(m);
            }
        }
        snapshots.push(RepositorySnapshot {
            artifacts: Default::default(),
            name,
            tags,
            manifests,
            at: crate::timestamp::Timestamp::now(),
        });
    }
    reference(&snapshots, &query(raw))
}

/// The empty query returns every tagged image and every list with all its children,
/// with every protocol field filled in.
pub async fn query_all(store: &dyn Store) {
    let editor = flatpak_app("org.example.Editor", "amd64").build();
    let arm = image("arm").arch("arm64").variant("v8").build();
    let amd = image("amd").build();
    let multi = list("multi").child(&amd).child(&arm).build();
    load(
        store,
        &[
            repo("apps/editor").image("latest", &editor).build(),
            repo("base").list("latest", &multi).build(),
        ],
    )
    .await;
    let results = run(store, "").await;
    assert_eq!(names(&results), ["apps/editor", "base"]);
    let entry = &results[0].images[0];
    assert_eq!(entry.digest, editor.digest);
    assert_eq!(entry.media_type, crate::model::OCI_MANIFEST);
    assert_eq!(
        (entry.os.as_str(), entry.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(entry.labels, editor.labels);
    assert!(entry.annotations.is_empty());
    assert_eq!(entry.tags.as_deref(), Some(&["latest".to_owned()][..]));
    assert!(results[1].images.is_empty());
    let l = &results[1].lists[0];
    assert_eq!(l.digest, *multi.digest());
    assert_eq!(l.media_type, crate::model::OCI_INDEX);
    assert_eq!(l.tags, ["latest"]);
    assert_eq!(l.images.len(), 2);
    assert!(
        l.images.iter().all(|i| i.tags.is_none()),
        "children carry no Tags"
    );
    assert_eq!(results, reference_of(store, "").await);
    assert_eq!(
        results,
        ok(store.query(&IndexQuery::all()).await, "query all")
    );
}

/// `repository=` is exact (no prefix match) and ORs repeated values.
pub async fn query_repository(store: &dyn Store) {
    let img = image("img").build();
    let names_in = ["a", "a/b", "ab", "c"];
    for name in names_in {
        ok(
            store
                .replace_repository(&repo(name).image("latest", &img).build())
                .await,
            "replace",
        );
    }
    assert_eq!(names(&run(store, "repository=a").await), ["a"]);
    assert_eq!(
        names(&run(store, "repository=c&repository=a%2Fb").await),
        ["a/b", "c"]
    );
    assert!(run(store, "repository=zzz").await.is_empty());
    assert!(
        run(store, "repository=a&repository=c&tag=nope")
            .await
            .is_empty()
    );
}

/// `tag=` matches images carrying the tag; repeated values are ORed.
pub async fn query_tag(store: &dyn Store) {
    let one = image("one").build();
    let two = image("two").build();
    load(
        store,
        &[repo("app")
            .image("latest", &one)
            .image("v1", &one)
            .image("v2", &two)
            .build()],
    )
    .await;
    expect_images(store, "tag=latest", &[("app", &one)]).await;
    expect_images(store, "tag=v2", &[("app", &two)]).await;
    expect_images(store, "tag=v1&tag=v2", &[("app", &one), ("app", &two)]).await;
    expect_images(store, "tag=nope", &[]).await;
    expect_images(store, "tag=LATEST", &[]).await;
}

/// `tag:matches=` is an anchored glob with `*` and `?`.
pub async fn query_tag_matches(store: &dyn Store) {
    let [v10, v11, v20, latest] = ["1.0", "1.1", "2.0", "latest"].map(|t| image(t).build());
    load(
        store,
        &[repo("app")
            .image("1.0", &v10)
            .image("1.1", &v11)
            .image("2.0", &v20)
            .image("latest", &latest)
            .build()],
    )
    .await;
    expect_images(store, "tag:matches=1.*", &[("app", &v10), ("app", &v11)]).await;
    expect_images(store, "tag:matches=?.0", &[("app", &v10), ("app", &v20)]).await;
    expect_images(store, "tag:matches=lat*", &[("app", &latest)]).await;
    expect_images(store, "tag:matches=atest", &[]).await;
    expect_images(store, "tag:matches=1", &[]).await;
    expect_images(
        store,
        "tag:matches=*",
        &[
            ("app", &v10),
            ("app", &v11),
            ("app", &v20),
            ("app", &latest),
        ],
    )
    .await;
    expect_images(
        store,
        "tag:matches=2.*&tag:matches=latest",
        &[("app", &v20), ("app", &latest)],
    )
    .await;
}

/// `os=` and `architecture=` test the image's platform.
pub async fn query_os_and_architecture(store: &dyn Store) {
    let amd = image("amd").build();
    let arm = image("arm").arch("arm64").build();
    let win = image("win").os("windows").build();
    load(
        store,
        &[repo("app")
            .image("amd", &amd)
            .image("arm", &arm)
            .image("win", &win)
            .build()],
    )
    .await;
    expect_images(store, "os=windows", &[("app", &win)]).await;
    expect_images(store, "architecture=arm64", &[("app", &arm)]).await;
    expect_images(store, "os=linux&architecture=amd64", &[("app", &amd)]).await;
    expect_images(
        store,
        "architecture=amd64&architecture=arm64",
        &[("app", &amd), ("app", &arm), ("app", &win)],
    )
    .await;
    expect_images(
        store,
        "os=linux&os=windows&architecture=arm64",
        &[("app", &arm)],
    )
    .await;
    expect_images(store, "architecture=x86_64", &[]).await;
}

/// Builds one repository with four images for the label/annotation form tests; `label`
/// says whether values go into labels or annotations.
async fn keyed_fixture(store: &dyn Store, label: bool) -> [Image; 4] {
    let set = |seed: &str, pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .fold(image(seed), |b, (k, v)| {
                if label {
                    b.label(k, v)
                } else {
                    b.annotation(k, v)
                }
            })
            .build()
    };
    let v1 = set("v1", &[("k", "v1")]);
    let v2 = set("v2", &[("k", "v2"), ("k:x", "a=b")]);
    let none = set("none", &[("other", "v1")]);
    let empty = set("empty", &[("k", "")]);
    load(
        store,
        &[repo("app")
            .image("v1", &v1)
            .image("v2", &v2)
            .image("none", &none)
            .image("empty", &empty)
            .build()],
    )
    .await;
    [v1, v2, none, empty]
}

async fn keyed_forms(store: &dyn Store, prefix: &str, other: &str) {
    let [v1, v2, none, empty] = keyed_fixture(store, prefix == "label").await;
    let q = |rest: &str| format!("{prefix}%3A{rest}");
    expect_images(store, &q("k=v1"), &[("app", &v1)]).await;
    expect_images(store, &q("k=v"), &[]).await;
    expect_images(store, &q("k=V1"), &[]).await;
    expect_images(store, &q("k="), &[("app", &empty)]).await;
    expect_images(
        store,
        &q("k%3Aexists=1"),
        &[("app", &v1), ("app", &v2), ("app", &empty)],
    )
    .await;
    expect_images(store, &q("other%3Aexists=1"), &[("app", &none)]).await;
    expect_images(store, &q("missing%3Aexists=1"), &[]).await;
    expect_images(store, &q("k%3Amatches=v*"), &[("app", &v1), ("app", &v2)]).await;
    expect_images(store, &q("k%3Amatches=*2"), &[("app", &v2)]).await;
    expect_images(
        store,
        &q("k%3Amatches=*"),
        &[("app", &v1), ("app", &v2), ("app", &empty)],
    )
    .await;
    // A key containing ':' and a value containing '='.
    expect_images(store, &q("k%3Ax=a%3Db"), &[("app", &v2)]).await;
    // Labels and annotations are separate namespaces.
    expect_images(store, &format!("{other}%3Ak%3Aexists=1"), &[]).await;
    expect_images(store, &format!("{other}%3Ak=v1"), &[]).await;
}

/// `label:K=V`, `label:K:exists=1`, `label:K:matches=GLOB` test config labels only.
pub async fn query_label_forms(store: &dyn Store) {
    keyed_forms(store, "label", "annotation").await;
}

/// `annotation:K=V`, `:exists=1`, `:matches=GLOB` test manifest annotations only.
pub async fn query_annotation_forms(store: &dyn Store) {
    keyed_forms(store, "annotation", "label").await;
}

/// Values of one parameter are ORed; different parameters are ANDed.
pub async fn query_or_within_key_and_across_keys(store: &dyn Store) {
    let a = image("a").label("color", "red").build();
    let b = image("b").label("color", "blue").arch("arm64").build();
    let c = image("c")
        .label("color", "green")
        .label("size", "big")
        .build();
    load(
        store,
        &[
            repo("one").image("latest", &a).image("b", &b).build(),
            repo("two").image("latest", &c).build(),
        ],
    )
    .await;
    expect_images(
        store,
        "label:color=red&label:color=blue",
        &[("one", &a), ("one", &b)],
    )
    .await;
    expect_images(
        store,
        "label:color=red&label:color=blue&architecture=amd64",
        &[("one", &a)],
    )
    .await;
    expect_images(
        store,
        "label:color=green&label:size:exists=1",
        &[("two", &c)],
    )
    .await;
    expect_images(store, "label:color=red&label:size:exists=1", &[]).await;
    expect_images(
        store,
        "tag=latest&label:color=red&label:color=green",
        &[("one", &a), ("two", &c)],
    )
    .await;
    // label:K and label:K:matches are different parameters, so they are ANDed.
    expect_images(
        store,
        "label:color=red&label:color:matches=*e*",
        &[("one", &a)],
    )
    .await;
    expect_images(store, "label:color=blue&label:color:matches=r*", &[]).await;
    expect_images(store, "repository=two&repository=one&tag=b", &[("one", &b)]).await;
}

/// `Tags` lists every tag of the image in that repository, sorted, whatever the query.
pub async fn query_image_tags_are_all_tags_in_repository(store: &dyn Store) {
    let img = image("img").build();
    load(
        store,
        &[repo("app")
            .image("b", &img)
            .image("a", &img)
            .image("c", &img)
            .build()],
    )
    .await;
    let expected: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    for raw in ["", "tag=b", "tag:matches=c", "tag=a&tag=c"] {
        let results = run(store, raw).await;
        assert_eq!(results.len(), 1);
        assert_eq!(
            results[0].images.len(),
            1,
            "one entry per digest for {raw:?}"
        );
        assert_eq!(
            results[0].images[0].tags.as_ref(),
            Some(&expected),
            "{raw:?}"
        );
    }
}
