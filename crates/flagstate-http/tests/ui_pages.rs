//! Web UI pages rendered in process over a `MemoryStore`: content, escaping, 404s.

mod ui_support;

use axum::http::StatusCode;
use ui_support::{BULK, ICON, SCRIPT, app, esc, fixture, get, get_with};

const REGISTRY: &str = "https://registry.example.org/";

fn assert_inert(body: &str) {
    assert!(!body.contains("<script"), "raw <script> in page");
    assert!(
        !body.contains("src=\"javascript:") && !body.contains("href=\"javascript:"),
        "javascript: URL in page"
    );
    assert!(
        !body.contains("\" onmouseover=\""),
        "attribute injection in page"
    );
}

#[tokio::test]
async fn home_lists_repositories_with_descriptions_icons_tags_and_counts() {
    let f = fixture().await;
    let app = app(f.store.clone(), REGISTRY);
    let page = get(&app, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let b = &page.body;
    assert!(b.contains("<meta name=\"viewport\""));
    assert!(b.contains(&format!("{} repositories indexed", BULK + 4)));
    // Flatpak card: named from AppStream, icon from the label, tags and counts.
    assert!(b.contains(&esc("Photo Viewer & Co")), "{b}");
    assert!(b.contains("Look at pictures quickly"));
    assert!(b.contains(&format!("src=\"{ICON}\"")));
    assert!(b.contains("2 tags · 2 images · 1 list · linux/amd64, linux/arm64"));
    // Labels resolved in order: io.k8s.display-name, then summary.
    assert!(b.contains("Base OS") && b.contains("Minimal operating system userland"));
    // Newest-looking tags first.
    let order: Vec<usize> = [
        "/r/base/os#tag-latest",
        "/r/base/os#tag-2",
        "/r/base/os#tag-1.10",
        "/r/base/os#tag-1.9",
    ]
    .iter()
    .map(|t| b.find(t).unwrap_or_else(|| panic!("{t} missing")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_inert(b);
}

#[tokio::test]
async fn labels_with_markup_render_as_text() {
    let f = fixture().await;
    let app = app(f.store.clone(), REGISTRY);
    let escaped = esc(SCRIPT);
    for uri in [
        "/?page=2".to_owned(),
        "/r/evil".to_owned(),
        format!("/i/{}", f.evil),
        format!("/r/evil/@{}", f.evil),
        "/search?q=evil".to_owned(),
    ] {
        let page = get(&app, &uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        assert!(page.body.contains(&escaped), "{uri}: escaped title missing");
        assert!(!page.body.contains(SCRIPT), "{uri}: raw script present");
        assert_inert(&page.body);
    }
    let detail = get(&app, &format!("/i/{}", f.evil)).await.body;
    assert!(detail.contains(&esc("Ünïcødé ✓ 日本語 \"quoted\" & <b>bold</b>")));
    assert!(detail.contains(&esc("\" onmouseover=\"alert(2)")));
    let csp = &get(&app, "/r/evil").await.headers["content-security-policy"];
    assert!(csp.to_str().unwrap().contains("default-src 'none'"));
}

#[tokio::test]
async fn home_is_paginated() {
    let f = fixture().await;
    let app = app(f.store.clone(), REGISTRY);
    let first = get(&app, "/").await.body;
    assert_eq!(first.matches("<li class=\"card\">").count(), 24);
    assert!(first.contains("href=\"/?page=2\"") && first.contains("Page 1 of 2"));
    assert!(!first.contains("rel=\"prev\""));
    let second = get(&app, "/?page=2").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(
        second.body.matches("<li class=\"card\">").count(),
        BULK + 4 - 24
    );
    assert!(second.body.contains("href=\"/?page=1\"") && !second.body.contains("rel=\"next\""));
    // Bytewise order: the last repositories land on page 2.
    assert!(second.body.contains("/r/evil\"") && !first.contains("/r/evil\""));
    assert!(
        second.body.contains("No tags."),
        "empty repository shown bare"
    );

    let past = get(&app, "/?page=3").await;
    assert_eq!(past.status, StatusCode::NOT_FOUND);
    assert!(
        past.body
            .contains("page 3 does not exist; there are 2 pages")
    );
    for bad in [
        "/?page=0",
        "/?page=abc",
        "/?page=-1",
        "/?page=2.5",
        "/?page=99999999999999999999",
    ] {
        let page = get(&app, bad).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(page.body.contains("page must be a whole number"), "{bad}");
        assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    }
}

#[tokio::test]
async fn repository_page_shows_tags_platforms_metadata_and_pull_commands() {
    let f = fixture().await;
    let app = app(f.store.clone(), REGISTRY);
    let page = get(&app, "/r/apps/viewer").await;
    assert_eq!(page.status, StatusCode::OK);
    let b = &page.body;
    // The list's OCI annotations come first in title resolution.
    assert!(b.contains("<h1>Photo Viewer</h1>"), "{b}");
    assert!(b.contains("A fast photo viewer for the desktop"));
    assert!(b.contains("podman pull registry.example.org/apps/viewer:latest"));
    assert!(b.contains(
        "skopeo copy docker://registry.example.org/apps/viewer:latest oci:viewer:latest"
    ));
    assert!(b.contains("<th scope=\"col\">Tag</th>"));
    assert!(b.contains("<tr id=\"tag-1.0\">"));
    assert!(b.contains("linux/amd64, linux/arm64"));
    for d in [&f.viewer_list, &f.viewer_amd64, &f.viewer_arm64] {
        assert!(b.contains(&format!("href=\"/r/apps/viewer/@{d}\"")), "{d}");
    }
    assert!(
        b.contains("org.opencontainers.image.description"),
        "list annotations shown"
    );

    let base = get(&app, "/r/base/os").await.body;
    assert!(base.contains("application/vnd.docker.distribution.manifest.v2+json"));
    assert!(base.contains("<code>io.k8s.display-name</code>"));
    let empty = get(&app, "/r/empty").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("nothing to pull"));
}

/// Tags are ordered by when the index saw them take their digest, each row shows that
/// time, and `?history=TAG` shows every digest the tag pointed at, newest first.
#[tokio::test]
async fn repository_page_orders_tags_by_time_and_shows_history() {
    use flagstate_core::conformance::fixtures::{at, image, put_image, time};
    let store = std::sync::Arc::new(flagstate_core::MemoryStore::new());
    let (old, new) = (image("old").build(), image("new").build());
    for (tag, image, t) in [("latest", &old, 1), ("2.0", &old, 2), ("latest", &new, 3)] {
        let change = at(put_image("apps/timed", tag, image), time(t));
        flagstate_core::Store::apply(store.as_ref(), &change)
            .await
            .unwrap();
    }
    let app = app(store, REGISTRY);
    let b = get(&app, "/r/apps/timed").await.body;
    let (latest, two) = (
        b.find("<tr id=\"tag-latest\">").unwrap(),
        b.find("<tr id=\"tag-2.0\">").unwrap(),
    );
    assert!(latest < two, "latest moved last, so it is the newest");
    assert!(
        b.contains(&format!("<time datetime=\"{0}\">{0}</time>", time(3))),
        "{b}"
    );
    assert!(b.contains("podman pull registry.example.org/apps/timed:latest"));
    assert!(b.contains("href=\"?history=latest#history-h\""));
    assert!(!b.contains("id=\"history-h\""), "no history unless asked");

    let h = get(&app, "/r/apps/timed?history=latest").await.body;
    let start = h.find("id=\"history-h\"").expect("a history section");
    let section = &h[start..start + h[start..].find("</section>").unwrap()];
    assert!(
        section.contains("History of <code>latest</code>"),
        "{section}"
    );
    let newer = section.find(new.digest.as_str()).unwrap();
    let older = section.find(old.digest.as_str()).unwrap();
    assert!(newer < older, "history is newest first: {section}");
    assert!(section.contains(&format!("<time datetime=\"{0}\">{0}</time>", time(1))));
    for missing in [
        "/r/apps/timed?history=never",
        "/r/apps/timed?history=Not..A..Tag",
    ] {
        assert_eq!(
            get(&app, missing).await.status,
            StatusCode::NOT_FOUND,
            "{missing}"
        );
    }
}

/// The part of `page` from the heading with id `id` to the end of its section.
fn section<'a>(page: &'a str, id: &str) -> Option<&'a str> {
    let start = page.find(&format!("id=\"{id}\""))?;
    let end = page[start..].find("</section>")?;
    Some(&page[start..start + end])
}

/// `manifest` pushed to `repository` by digest.
fn pushed(repository: &str, manifest: flagstate_core::PushedManifest) -> flagstate_core::TagChange {
    flagstate_core::TagChange::PutUntagged {
        repository: repository.parse().unwrap(),
        manifest,
    }
}

/// A manifest pushed by digest is listed under "Untagged manifests" (with its media type,
/// artifact type, size and push time) until a tag reaches it; the section is absent while
/// there is none. Through the page cache: each write is a new page.
#[tokio::test]
async fn repository_page_lists_untagged_manifests_until_a_tag_reaches_them() {
    use flagstate_core::conformance::fixtures::{at, image, put_image, put_untagged, time};
    use flagstate_core::model::OCI_MANIFEST;
    use flagstate_core::{PushedManifest, Store};
    let store = std::sync::Arc::new(flagstate_core::MemoryStore::new());
    let (tagged, loose) = (image("tagged").build(), image("loose").build());
    store
        .apply(&at(put_image("apps/pushed", "latest", &tagged), time(1)))
        .await
        .unwrap();
    let pages = std::sync::Arc::new(flagstate_http::cache::IndexCache::new(100, 1 << 24));
    let app = ui_support::app_with(store.clone(), REGISTRY, |ui| ui.with_page_cache(pages));
    let b = get(&app, "/r/apps/pushed").await.body;
    assert!(
        !b.contains("id=\"untagged-h\""),
        "nothing untagged yet: {b}"
    );

    let by_digest = at(
        put_untagged("apps/pushed", &loose.digest, OCI_MANIFEST, 1536),
        time(2),
    );
    store.apply(&by_digest).await.unwrap();
    let sbom = flagstate_core::Digest::sha256_of(b"an sbom");
    store
        .apply(&pushed(
            "apps/pushed",
            PushedManifest {
                digest: sbom.clone(),
                media_type: OCI_MANIFEST.to_owned(),
                size: 700,
                pushed: time(3),
                artifact_type: Some("application/spdx+json".to_owned()),
                subject: Some(tagged.digest.clone()),
                annotations: Default::default(),
            },
        ))
        .await
        .unwrap();
    let b = get(&app, "/r/apps/pushed").await.body;
    let untagged = section(&b, "untagged-h").unwrap_or_else(|| panic!("a section: {b}"));
    assert!(untagged.contains("Untagged manifests <span class=\"count\">(2)</span>"));
    for text in [
        format!("<code class=\"digest\">{}</code>", loose.digest),
        format!("<code class=\"digest\">{sbom}</code>"),
        format!("<code>{OCI_MANIFEST}</code>"),
        "SPDX SBOM <code class=\"muted\">application/spdx+json</code>".to_owned(),
        "<td>1.5 KiB</td>".to_owned(),
        "<td>700 B</td>".to_owned(),
        format!("<time datetime=\"{0}\">{0}</time>", time(2)),
        format!("<time datetime=\"{0}\">{0}</time>", time(3)),
    ] {
        assert!(untagged.contains(&text), "missing {text} in {untagged}");
    }
    assert!(
        !untagged.contains(tagged.digest.as_str()),
        "tagged ones are not listed"
    );
    assert!(
        !untagged.contains("_flagstate/manifests?untagged=only"),
        "all are shown: no link to more"
    );

    // A tag reaches the loose manifest: it is no longer untagged.
    store
        .apply(&at(put_image("apps/pushed", "v2", &loose), time(4)))
        .await
        .unwrap();
    let b = get(&app, "/r/apps/pushed").await.body;
    let untagged = section(&b, "untagged-h").unwrap_or_else(|| panic!("a section: {b}"));
    assert!(untagged.contains("(1)") && untagged.contains(sbom.as_str()));
    assert!(!untagged.contains(loose.digest.as_str()), "{untagged}");
    assert!(b.contains("<tr id=\"tag-v2\">"));
}

/// At most `MANIFESTS_SHOWN` untagged manifests are listed; past that the page says so
/// and links to the JSON listing.
#[tokio::test]
async fn repository_page_bounds_untagged_manifests_and_links_to_the_json_listing() {
    use flagstate_core::Store;
    use flagstate_core::conformance::fixtures::{digest, put_untagged};
    use flagstate_core::model::OCI_MANIFEST;
    use flagstate_http::ui::MANIFESTS_SHOWN;
    let store = std::sync::Arc::new(flagstate_core::MemoryStore::new());
    let push = |i: usize| {
        put_untagged(
            "many/things",
            &digest(&format!("thing {i}")),
            OCI_MANIFEST,
            10,
        )
    };
    for i in 0..MANIFESTS_SHOWN {
        store.apply(&push(i)).await.unwrap();
    }
    let app = app(store.clone(), REGISTRY);
    let link = "href=\"/v2/many/things/_flagstate/manifests?untagged=only\"";
    let b = get(&app, "/r/many/things").await.body;
    let untagged = section(&b, "untagged-h").unwrap_or_else(|| panic!("a section: {b}"));
    assert_eq!(
        untagged.matches("<code class=\"digest\">").count(),
        MANIFESTS_SHOWN
    );
    assert!(!untagged.contains(link), "exactly the bound: all shown");

    store.apply(&push(MANIFESTS_SHOWN)).await.unwrap();
    let b = get(&app, "/r/many/things").await.body;
    let untagged = section(&b, "untagged-h").unwrap_or_else(|| panic!("a section: {b}"));
    assert_eq!(
        untagged.matches("<code class=\"digest\">").count(),
        MANIFESTS_SHOWN
    );
    assert!(untagged.contains(link), "{untagged}");
    assert!(untagged.contains(&format!("(more than {MANIFESTS_SHOWN})")));
    assert!(untagged.contains(&format!("Only the first {MANIFESTS_SHOWN} are shown")));
}

/// An image's page seen from its repository lists its referrers (artifact type with a
/// short name for well-known ones, created and description annotations, size, digest)
/// and links to the JSON referrers listing; a list's page lists its own and its
/// children's; an image without any has no Referrers section.
#[tokio::test]
async fn image_page_lists_referrers_with_their_artifact_types() {
    use flagstate_core::conformance::fixtures::{image, list, put_image, put_list, put_referrer};
    use flagstate_core::model::OCI_MANIFEST;
    use flagstate_core::{PushedManifest, Store, Timestamp};
    let store = std::sync::Arc::new(flagstate_core::MemoryStore::new());
    let (signed, plain) = (image("signed").build(), image("plain").build());
    let (amd64, arm64) = (
        image("list amd64").build(),
        image("list arm64").arch("arm64").build(),
    );
    let multi = list("signed list").child(&amd64).child(&arm64).build();
    for change in [
        put_image("apps/signed", "signed", &signed),
        put_image("apps/signed", "plain", &plain),
        put_list("apps/signed", "multi", &multi),
    ] {
        store.apply(&change).await.unwrap();
    }
    let signature = flagstate_core::Digest::sha256_of(b"a signature");
    store
        .apply(&pushed(
            "apps/signed",
            PushedManifest {
                digest: signature.clone(),
                media_type: OCI_MANIFEST.to_owned(),
                size: 2048,
                pushed: Timestamp::now(),
                artifact_type: Some("application/vnd.dev.cosign.artifact.sig.v1+json".into()),
                subject: Some(signed.digest.clone()),
                annotations: ui_support::map(&[
                    ("org.opencontainers.image.created", "2026-03-04T05:06:07Z"),
                    ("org.opencontainers.image.description", ui_support::SCRIPT),
                ]),
            },
        ))
        .await
        .unwrap();
    for change in [
        put_referrer(
            "apps/signed",
            "an attestation",
            "application/vnd.example.odd",
            &signed.digest,
        ),
        put_referrer(
            "apps/signed",
            "list sbom",
            "application/vnd.cyclonedx+json",
            multi.digest(),
        ),
        put_referrer(
            "apps/signed",
            "child att",
            "application/vnd.in-toto+json",
            &arm64.digest,
        ),
        // Elsewhere: not this repository's referrer.
        put_referrer(
            "apps/other",
            "stray",
            "application/spdx+json",
            &plain.digest,
        ),
    ] {
        store.apply(&change).await.unwrap();
    }
    let app = app(store.clone(), REGISTRY);

    let b = get(&app, &format!("/r/apps/signed/@{}", signed.digest))
        .await
        .body;
    let referrers = section(&b, "referrers-h").unwrap_or_else(|| panic!("a section: {b}"));
    for text in [
        "Referrers <span class=\"count\">(2)</span>".to_owned(),
        "Cosign signature <code class=\"muted\">application/vnd.dev.cosign.artifact.sig.v1+json</code>".to_owned(),
        "<code>application/vnd.example.odd</code>".to_owned(),
        "<td>2026-03-04T05:06:07Z</td>".to_owned(),
        format!("<td>{}</td>", esc(ui_support::SCRIPT)),
        "<td>2.0 KiB</td>".to_owned(),
        format!("<code class=\"digest\">{signature}</code>"),
        format!("<code class=\"digest\">{}</code>", flagstate_core::conformance::fixtures::digest("an attestation")),
        format!("href=\"/v2/apps/signed/referrers/{}\"", signed.digest),
    ] {
        assert!(referrers.contains(&text), "missing {text} in {referrers}");
    }
    assert!(!b.contains(ui_support::SCRIPT), "escaped");
    assert!(
        !referrers.contains("Refers to"),
        "an image's are all its own"
    );

    let b = get(&app, &format!("/r/apps/signed/@{}", plain.digest))
        .await
        .body;
    assert!(b.contains("id=\"annotations-h\""), "{b}");
    assert!(!b.contains("id=\"referrers-h\""), "none: no section");

    let b = get(&app, &format!("/r/apps/signed/@{}", multi.digest()))
        .await
        .body;
    let referrers = section(&b, "referrers-h").unwrap_or_else(|| panic!("a section: {b}"));
    assert!(referrers.contains("Referrers <span class=\"count\">(2)</span>"));
    assert!(referrers.contains("CycloneDX SBOM") && referrers.contains("in-toto attestation"));
    assert!(referrers.contains("<td>this list</td>"), "{referrers}");
    assert!(referrers.contains(&format!(
        "<a href=\"/r/apps/signed/@{}\">linux/arm64</a>",
        arm64.digest
    )));
    assert!(referrers.contains(&format!(
        "href=\"/v2/apps/signed/referrers/{}\"",
        multi.digest()
    )));
    let child = get(&app, &format!("/r/apps/signed/@{}", arm64.digest))
        .await
        .body;
    assert!(section(&child, "referrers-h").is_some_and(|s| s.contains("in-toto attestation")));
}

/// An image's page lists at most `MANIFESTS_SHOWN` referrers and says when more exist.
#[tokio::test]
async fn image_page_bounds_referrers() {
    use flagstate_core::Store;
    use flagstate_core::conformance::fixtures::{image, put_image, put_referrer};
    use flagstate_http::ui::MANIFESTS_SHOWN;
    let store = std::sync::Arc::new(flagstate_core::MemoryStore::new());
    let signed = image("much signed").build();
    store
        .apply(&put_image("apps/busy", "latest", &signed))
        .await
        .unwrap();
    let sign = |i: usize| {
        put_referrer(
            "apps/busy",
            &format!("signature {i}"),
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            &signed.digest,
        )
    };
    for i in 0..MANIFESTS_SHOWN {
        store.apply(&sign(i)).await.unwrap();
    }
    let app = app(store.clone(), REGISTRY);
    let uri = format!("/r/apps/busy/@{}", signed.digest);
    let b = get(&app, &uri).await.body;
    let referrers = section(&b, "referrers-h").unwrap_or_else(|| panic!("a section: {b}"));
    assert_eq!(
        referrers.matches("Cosign signature").count(),
        MANIFESTS_SHOWN
    );
    assert!(referrers.contains(&format!("({MANIFESTS_SHOWN})")));
    assert!(!referrers.contains("Only the first"));

    store.apply(&sign(MANIFESTS_SHOWN)).await.unwrap();
    let b = get(&app, &uri).await.body;
    let referrers = section(&b, "referrers-h").unwrap_or_else(|| panic!("a section: {b}"));
    assert_eq!(
        referrers.matches("Cosign signature").count(),
        MANIFESTS_SHOWN
    );
    assert!(referrers.contains(&format!("(more than {MANIFESTS_SHOWN})")));
    assert!(referrers.contains(&format!("Only the first {MANIFESTS_SHOWN} are shown")));
    assert!(referrers.contains(&format!(
        "href=\"/v2/apps/busy/referrers/{}\"",
        signed.digest
    )));
}

#[tokio::test]
async fn pull_commands_use_the_request_host_when_the_registry_url_is_relative() {
    let f = fixture().await;
    let app = app(f.store.clone(), "/");
    let b = get_with(&app, "/r/base/os", &[("host", "index.test:8080")])
        .await
        .body;
    assert!(
        b.contains("podman pull index.test:8080/base/os:latest"),
        "{b}"
    );
    let plain = ui_support::app(f.store.clone(), "http://127.0.0.1:5000");
    let b = get(&plain, "/r/base/os").await.body;
    assert!(b.contains("podman pull --tls-verify=false 127.0.0.1:5000/base/os:latest"));
}

#[tokio::test]
async fn image_pages_show_all_metadata() {
    let f = fixture().await;
    let app = app(f.store.clone(), REGISTRY);
    let page = get(&app, &format!("/i/{}", f.viewer_amd64)).await;
    assert_eq!(page.status, StatusCode::OK);
    let b = &page.body;
    let name_row = format!("<dt>Name</dt><dd>{}</dd>", esc("Photo Viewer & Co"));
    // Flatpak images are titled from their AppStream data.
    let heading = format!("<h1>{}</h1>", esc("Photo Viewer & Co"));
    for text in [
        "app/org.example.Viewer/x86_64/stable",
        name_row.as_str(),
        heading.as_str(),
        "<dt>Summary</dt><dd>Look at pictures quickly</dd>",
        "<dt>Developer</dt><dd>Example Team</dd>",
        "<dt>Download size</dt><dd>5.0 MiB</dd>",
        "<dt>Created</dt><dd>2026-01-02T03:04:05Z</dd>",
        "<dt>Platform</dt><dd>linux/amd64</dd>",
        "<th scope=\"row\"><code>org.flatpak.ref</code></th>",
    ] {
        assert!(b.contains(text), "missing {text} in {b}");
    }
    // The long AppStream label is folded, still escaped.
    assert!(b.contains(&esc("<component type=\"desktop-application\">")));

    let list = get(&app, &format!("/r/apps/viewer/@{}", f.viewer_list)).await;
    assert_eq!(list.status, StatusCode::OK);
    let b = &list.body;
    assert!(b.contains("<h1>Photo Viewer</h1>"));
    assert!(b.contains(&format!(
        "podman pull registry.example.org/apps/viewer@{}",
        f.viewer_list
    )));
    assert!(b.contains("<th scope=\"row\">linux/arm64</th>"));
    assert!(b.contains(&format!("href=\"/r/apps/viewer/@{}\"", f.viewer_arm64)));

    // A child reached through a list: no tags of its own, linked back to the list.
    let child = get(&app, &format!("/r/apps/viewer/@{}", f.viewer_arm64)).await;
    assert_eq!(child.status, StatusCode::OK);
    assert!(child.body.contains("none (reached through a list)"));
    assert!(
        child
            .body
            .contains(&format!("href=\"/r/apps/viewer/@{}\"", f.viewer_list))
    );
}

#[tokio::test]
async fn unknown_things_are_404_pages_and_malformed_digests_400() {
    let f = fixture().await;
    let app = app(f.store.clone(), REGISTRY);
    let unknown = flagstate_core::Digest::sha256_of(b"nothing");
    for (uri, status, text) in [
        (
            "/r/nope".to_owned(),
            StatusCode::NOT_FOUND,
            "There is no repository named &#34;nope&#34;.",
        ),
        (
            "/r/Not_Valid".to_owned(),
            StatusCode::NOT_FOUND,
            "There is no repository",
        ),
        (format!("/i/{unknown}"), StatusCode::NOT_FOUND, "is indexed"),
        (
            format!("/r/evil/@{}", f.base),
            StatusCode::NOT_FOUND,
            "has no manifest",
        ),
        (
            format!("/r/nope/@{}", f.base),
            StatusCode::NOT_FOUND,
            "There is no repository",
        ),
        (
            "/i/sha256:xyz".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid digest",
        ),
        (
            "/r/evil/@nope".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid digest",
        ),
    ] {
        let page = get(&app, &uri).await;
        assert_eq!(page.status, status, "{uri}");
        assert!(page.body.contains(text), "{uri}: {}", page.body);
        assert!(
            page.body.contains("<main id=\"main\">"),
            "{uri}: not a full page"
        );
        assert_eq!(page.headers["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn apps_view_lists_flatpaks_by_appstream_name() {
    let f = fixture().await;
    let app = app(f.store.clone(), REGISTRY);
    let page = get_with(&app, "/apps", &[("host", "flatpaks.test:8080")]).await;
    assert_eq!(page.status, StatusCode::OK);
    let b = &page.body;
    assert_eq!(
        b.matches("<li class=\"card\">").count(),
        1,
        "one card per app and branch"
    );
    assert!(b.contains("1 Flatpak ref in this registry"));
    assert!(b.contains(&esc("Photo Viewer & Co")) && b.contains("Look at pictures quickly"));
    // The remote is named as configured (default `myregistry`, as in README.md), never
    // after the host.
    assert!(b.contains("flatpak install --user myregistry app/org.example.Viewer//stable"));
    assert!(b.contains("--no-gpg-verify myregistry oci+http://flatpaks.test:8080/"));
    assert!(!b.contains("flatpaks-test"));
    let named = ui_support::app_with(f.store.clone(), REGISTRY, |ui| ui.with_remote_name("acme"));
    let page = get(&named, "/apps").await.body;
    assert!(page.contains("flatpak install --user acme app/org.example.Viewer//stable"));
    assert!(page.contains("--no-gpg-verify acme oci+http://localhost/"));
    assert!(b.contains("oci+http://flatpaks.test:8080/"));
    assert!(b.contains("app/org.example.Viewer/aarch64/stable"));
    assert!(b.contains("amd64, arm64"));
    assert!(b.contains(&format!("src=\"{ICON}\"")));
    assert!(!b.contains("Base OS"), "non-Flatpak images are not apps");
    assert_eq!(
        get(&app, "/apps?page=2").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/apps?page=x").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn pages_are_accessible_html() {
    let f = fixture().await;
    let app = app(f.store.clone(), REGISTRY);
    for uri in ["/", "/r/apps/viewer", "/search?q=viewer", "/apps"] {
        let b = get(&app, uri).await.body;
        assert!(b.starts_with("<!DOCTYPE html>"), "{uri}");
        assert!(b.contains("<html lang=\"en\">"), "{uri}");
        for landmark in [
            "<header class=\"site\">",
            "<nav aria-label=\"Main\">",
            "<main id=\"main\">",
            "<h1>",
        ] {
            assert!(b.contains(landmark), "{uri}: {landmark}");
        }
        assert!(
            b.contains("<label for=\"site-q\""),
            "{uri}: search box labelled"
        );
    }
    let search = get(&app, "/search").await.body;
    for id in ["q", "arch", "os", "label"] {
        assert!(search.contains(&format!("<label for=\"{id}\">")), "{id}");
        assert!(
            search.contains(&format!("id=\"{id}\" name=\"{id}\"")),
            "{id}"
        );
    }
}
