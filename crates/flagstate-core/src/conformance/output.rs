//! Output fidelity and determinism: values round-trip byte for byte, and the same data
//! gives the same bytes whatever order it was written in.

use std::collections::BTreeMap;

use super::fixtures::{
    image, load, put_image, put_list, query, query_json, reference, repo, repository_name,
};
use super::lists::multi_arch;
use super::ok;
use super::queries::{expect_images, run};
use crate::digest::Digest;
use crate::model::{Image, Manifest};
use crate::name::Tag;
use crate::store::Store;

/// Label and annotation values come back byte for byte: unicode, HTML, quotes,
/// newlines, and values that look like JSON.
pub async fn unicode_and_html_values_round_trip(store: &dyn Store) {
    let tricky = [
        "<b>Grüße & \"quotes\"</b>",
        "日本語のテキスト 😀",
        "line1\nline2\ttab\\slash",
        "{\"json\": [1, null]}",
        "  spaced  ",
        "<script>alert('x')</script>",
    ];
    let mut builder = image("tricky");
    for (i, value) in tricky.iter().enumerate() {
        builder = builder
            .label(&format!("l{i}"), value)
            .annotation(&format!("a{i}"), value);
    }
    let img = builder.label("ключ.ü", "значение").build();
    load(store, &[repo("app").image("latest", &img).build()]).await;
    let results = run(store, "").await;
    assert_eq!(results[0].images[0].labels, img.labels);
    assert_eq!(results[0].images[0].annotations, img.annotations);
    assert_eq!(
        ok(store.manifest(&img.digest).await, "manifest"),
        Some(Manifest::Image(img.clone()))
    );
    for (i, value) in tricky.iter().enumerate() {
        let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
        expect_images(store, &format!("label:l{i}={encoded}"), &[("app", &img)]).await;
        expect_images(
            store,
            &format!("annotation:a{i}={encoded}"),
            &[("app", &img)],
        )
        .await;
    }
    let key: String = form_urlencoded::byte_serialize("label:ключ.ü".as_bytes()).collect();
    expect_images(
        store,
        &format!("{key}=%D0%B7%D0%BD%D0%B0%D1%87%D0%B5%D0%BD%D0%B8%D0%B5"),
        &[("app", &img)],
    )
    .await;
    let json = query_json(store, "").await;
    let parsed: crate::IndexResponse =
        serde_json::from_slice(&json).unwrap_or_else(|e| panic!("response is not JSON: {e}"));
    assert_eq!(parsed.results[0].images[0].labels, img.labels);
}

/// The same data gives the same bytes whatever order it was written in, and whether it
/// arrived by snapshots or by incremental changes.
pub async fn order_is_independent_of_insertion(store: &dyn Store) {
    let (_, _, _, l1) = multi_arch("first");
    let (_, _, _, l2) = multi_arch("second");
    let images: Vec<Image> = (0..6)
        .map(|i| image(&format!("i{i}")).label("n", &i.to_string()).build())
        .collect();
    let snapshots = vec![
        repo("z")
            .image("t1", &images[0])
            .image("t2", &images[1])
            .list("l", &l1)
            .build(),
        repo("a/b")
            .image("latest", &images[2])
            .list("m", &l2)
            .list("n", &l1)
            .build(),
        repo("a")
            .image("x", &images[3])
            .image("y", &images[3])
            .image("z", &images[4])
            .build(),
        repo("m-n")
            .image("latest", &images[5])
            .image("other", &images[0])
            .build(),
    ];
    let queries = [
        "",
        "architecture=arm64",
        "tag=latest&tag=l",
        "label:n:exists=1",
    ];
    load(store, &snapshots).await;
    let mut first = Vec::new();
    for raw in queries {
        let bytes = query_json(store, raw).await;
        let expected = crate::IndexResponse::new("/", reference(&snapshots, &query(raw))).to_json();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&expected),
            "{raw:?} differs from the reference"
        );
        first.push(bytes);
    }
    for snapshot in &snapshots {
        ok(store.remove_repository(&snapshot.name).await, "remove");
    }
    // Now the reverse order, tag by tag, manifests already stored or carried again.
    for snapshot in snapshots.iter().rev() {
        for (tag, digest) in snapshot.tags.iter().rev() {
            let manifest = snapshot.manifests.iter().find(|m| m.digest() == digest);
            let change = match manifest {
                Some(Manifest::List(_)) => {
                    let fixture = [&l1, &l2].into_iter().find(|l| l.digest() == digest);
                    put_list(&snapshot.name, tag, fixture.unwrap_or(&l1))
                }
                Some(Manifest::Image(img)) => put_image(&snapshot.name, tag, img),
                None => panic!("fixture without manifest for {tag}"),
            };
            ok(store.apply(&change).await, "put");
        }
    }
    for (raw, before) in queries.iter().zip(first) {
        let again = query_json(store, raw).await;
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&before),
            "{raw:?} changed with insertion order"
        );
    }
    let tags = ok(
        store.repository_tags(&repository_name("a")).await,
        "repository_tags",
    );
    let expected: BTreeMap<Tag, Digest> = snapshots[2].tags.clone();
    assert_eq!(tags, Some(expected));
}

/// Manifests come back from `manifest()` exactly as stored (every field, Docker media
/// types, variants, list annotations), and the index shows media types verbatim.
pub async fn manifests_round_trip_exactly(store: &dyn Store) {
    let docker = image("docker")
        .media_type(crate::model::DOCKER_MANIFEST)
        .arch("arm")
        .variant("v7")
        .created("2024-05-01T12:00:00Z")
        .label("a", "1")
        .annotation("b", "2")
        .build();
    let plain = image("plain").build();
    let l = super::fixtures::list("docker-list")
        .docker()
        .annotation("org.opencontainers.image.ref.name", "x")
        .child(&docker)
        .child_on(&plain, None)
        .build();
    load(
        store,
        &[repo("app")
            .list("multi", &l)
            .image("single", &docker)
            .build()],
    )
    .await;
    for manifest in l.manifests() {
        assert_eq!(
            ok(store.manifest(manifest.digest()).await, "manifest"),
            Some(manifest.clone())
        );
    }
    let results = run(store, "").await;
    let entry = &results[0];
    assert_eq!(entry.images[0].media_type, crate::model::DOCKER_MANIFEST);
    assert_eq!(
        (
            entry.images[0].os.as_str(),
            entry.images[0].architecture.as_str()
        ),
        ("linux", "arm")
    );
    assert_eq!(
        entry.lists[0].media_type,
        crate::model::DOCKER_MANIFEST_LIST
    );
    let json = query_json(store, "tag=multi").await;
    let text = String::from_utf8_lossy(&json);
    assert!(
        !text.contains("org.opencontainers.image.ref.name"),
        "list annotations are not part of the index format: {text}"
    );
}

/// Large values — Flatpak puts whole appstream XML and `data:` icons in labels — are
/// stored, shown and matched like any other.
pub async fn large_values_round_trip(store: &dyn Store) {
    let icon = format!("data:image/png;base64,{}", "iVBORw0KGgo".repeat(20_000));
    let appdata = format!(
        "<components>{}</components>",
        "<component>é</component>".repeat(4_000)
    );
    let img = image("large")
        .label("org.freedesktop.appstream.icon-128", &icon)
        .label("org.freedesktop.appstream.appdata", &appdata)
        .annotation("org.freedesktop.appstream.icon-64", &icon)
        .build();
    load(store, &[repo("app").image("latest", &img).build()]).await;
    let results = run(store, "").await;
    assert_eq!(results[0].images[0].labels, img.labels);
    assert_eq!(results[0].images[0].annotations, img.annotations);
    let encoded: String = form_urlencoded::byte_serialize(appdata.as_bytes()).collect();
    // A query this long exceeds the parser's limit, so build it directly.
    let query = crate::IndexQuery::new().with(
        crate::Filter::label("org.freedesktop.appstream.appdata", appdata.as_str())
            .unwrap_or_else(|e| panic!("query: {e}")),
    );
    let found = ok(store.query(&query).await, "query by large value");
    assert_eq!(
        found,
        results,
        "equality on a large value ({} bytes)",
        encoded.len()
    );
    expect_images(
        store,
        "annotation:org.freedesktop.appstream.icon-64:matches=data:image/png;base64,*",
        &[("app", &img)],
    )
    .await;
}
