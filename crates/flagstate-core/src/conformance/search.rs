//! Full-text search: every term must match as a word prefix of the repository name or
//! the title/description of its tagged images, case-insensitively; paging and totals.
//! Exact rankings are asserted only where they are unambiguous, or where the backend
//! says it ranks by simple term counting (`Capabilities::ranked_search` off).

use super::fixtures::{delete_tag, image, list, load, repo};
use super::ok;
use crate::model::Manifest;
use crate::store::{SearchPage, Store};

async fn search(store: &dyn Store, text: &str, offset: u64, limit: u64) -> SearchPage {
    ok(
        store.search(text, offset, limit).await,
        &format!("search {text:?}"),
    )
}

/// Repository names of all hits for `text`, sorted bytewise (order-insensitive check).
async fn hit_set(store: &dyn Store, text: &str) -> Vec<String> {
    let page = search(store, text, 0, 1000).await;
    let mut names: Vec<String> = page.hits.into_iter().map(|h| h.repository).collect();
    assert_eq!(names.len() as u64, page.total, "total for {text:?}");
    names.sort();
    names
}

/// A small catalog of described applications.
async fn catalog(store: &dyn Store) {
    let described = |seed: &str, title: &str, description: &str| {
        image(seed)
            .annotation("org.opencontainers.image.title", title)
            .label("org.opencontainers.image.description", description)
            .build()
    };
    let calc = described(
        "calc",
        "Calculator",
        "Perform arithmetic and unit conversions",
    );
    let kcalc = described("kcalc", "KCalc", "Scientific calculator for the desktop");
    let weather = described("weather", "Über Weather", "Forecasts for your location");
    let child = image("child")
        .label("name", "Spreadsheet")
        .label("summary", "Tables, charts and formulas")
        .build();
    load(
        store,
        &[
            repo("gnome/calculator").image("latest", &calc).build(),
            repo("kde/kcalc").image("latest", &kcalc).build(),
            repo("gnome/weather").image("latest", &weather).build(),
            repo("office/sheets")
                .list("latest", &list("sheets").child(&child).build())
                .build(),
            repo("org.example-app/tool_kit")
                .image("latest", &image("plain").build())
                .build(),
        ],
    )
    .await;
}

/// Empty or blank text matches nothing.
pub async fn search_empty_text_matches_nothing(store: &dyn Store) {
    catalog(store).await;
    for text in ["", "   ", "\t\n"] {
        let page = search(store, text, 0, 10).await;
        assert_eq!(page, SearchPage::default(), "{text:?}");
    }
}

/// Every term must match somewhere (name, title or description).
pub async fn search_all_terms_must_match(store: &dyn Store) {
    catalog(store).await;
    assert_eq!(
        hit_set(store, "gnome").await,
        ["gnome/calculator", "gnome/weather"]
    );
    assert_eq!(
        hit_set(store, "gnome calculator").await,
        ["gnome/calculator"]
    );
    assert_eq!(
        hit_set(store, "calculator arithmetic").await,
        ["gnome/calculator"]
    );
    assert_eq!(hit_set(store, "forecasts weather").await, ["gnome/weather"]);
    assert!(hit_set(store, "gnome spreadsheet").await.is_empty());
    assert!(hit_set(store, "nonexistent").await.is_empty());
}

/// Terms match as word prefixes, case-insensitively (also beyond ASCII); repository
/// names split into words at `/ . _ -`.
pub async fn search_prefix_and_case_insensitive(store: &dyn Store) {
    catalog(store).await;
    assert_eq!(
        hit_set(store, "CALC").await,
        ["gnome/calculator", "kde/kcalc"]
    );
    assert_eq!(hit_set(store, "Arith").await, ["gnome/calculator"]);
    assert!(
        hit_set(store, "ulator").await.is_empty(),
        "not a word prefix"
    );
    assert_eq!(hit_set(store, "ÜBER").await, ["gnome/weather"]);
    for word in ["org", "example", "app", "tool", "kit"] {
        assert_eq!(
            hit_set(store, word).await,
            ["org.example-app/tool_kit"],
            "name word {word:?}"
        );
    }
}

/// Titles and descriptions of images inside tagged lists count; those of untagged
/// manifests and of images whose tags were deleted do not.
pub async fn search_uses_tagged_images_only(store: &dyn Store) {
    catalog(store).await;
    let page = search(store, "spread", 0, 10).await;
    assert_eq!(page.total, 1);
    assert_eq!(page.hits[0].repository, "office/sheets");
    assert_eq!(page.hits[0].title.as_deref(), Some("Spreadsheet"));
    assert_eq!(
        page.hits[0].description.as_deref(),
        Some("Tables, charts and formulas")
    );
    let loose = image("loose").label("name", "Zebra").build();
    let snapshot = repo("zoo")
        .image("latest", &image("zoo").build())
        .extra(Manifest::Image(loose))
        .build();
    ok(store.replace_repository(&snapshot).await, "replace");
    assert!(
        hit_set(store, "zebra").await.is_empty(),
        "untagged manifest"
    );
    ok(
        store.apply(&delete_tag("gnome/weather", "latest")).await,
        "delete tag",
    );
    assert!(hit_set(store, "forecasts").await.is_empty(), "deleted tag");
}

/// Hits carry the resolved title and description.
pub async fn search_hits_describe_repositories(store: &dyn Store) {
    catalog(store).await;
    let page = search(store, "kcalc", 0, 10).await;
    assert_eq!(page.total, 1);
    let hit = &page.hits[0];
    assert_eq!(hit.repository, "kde/kcalc");
    assert_eq!(hit.title.as_deref(), Some("KCalc"));
    assert_eq!(
        hit.description.as_deref(),
        Some("Scientific calculator for the desktop")
    );
    let page = search(store, "kit", 0, 10).await;
    assert_eq!(page.hits[0].title, None);
    assert_eq!(page.hits[0].description, None);
}

/// `offset`/`limit` page through one stable order; `total` counts every hit.
pub async fn search_paging_and_total(store: &dyn Store) {
    let names = ["tools/e", "tools/a", "tools/d", "tools/c", "tools/b"];
    let snapshots: Vec<_> = names
        .iter()
        .map(|n| repo(n).image("latest", &image(n).build()).build())
        .collect();
    load(store, &snapshots).await;
    let all = search(store, "tools", 0, 100).await;
    assert_eq!(all.total, 5);
    let order: Vec<_> = all.hits.iter().map(|h| h.repository.clone()).collect();
    assert!(
        all.hits.windows(2).all(|w| w[0].score >= w[1].score),
        "best first: {:?}",
        all.hits
    );
    let mut paged = Vec::new();
    for offset in [0, 2, 4] {
        let page = search(store, "tools", offset, 2).await;
        assert_eq!(page.total, 5, "total on every page");
        paged.extend(page.hits.into_iter().map(|h| h.repository));
    }
    assert_eq!(paged, order, "pages concatenate to the full order");
    let past = search(store, "tools", 10, 2).await;
    assert_eq!((past.total, past.hits.len()), (5, 0));
    let none = search(store, "tools", 0, 0).await;
    assert_eq!((none.total, none.hits.len()), (5, 0));
    // The full range of the parameters is accepted.
    let unlimited = search(store, "tools", 0, u64::MAX).await;
    assert_eq!(unlimited.hits.len(), 5);
    let far = search(store, "tools", u64::MAX, u64::MAX).await;
    assert_eq!((far.total, far.hits.len()), (5, 0));
    if !store.capabilities().ranked_search {
        // Equal relevance: ties are broken by repository name.
        let mut sorted = names.map(String::from).to_vec();
        sorted.sort();
        assert_eq!(order, sorted);
    }
}

/// Without a relevance model, a term found in the name outranks the same term found
/// only in a description.
pub async fn search_ranking_prefers_names(store: &dyn Store) {
    let described = image("described")
        .label("description", "A viewer for weather maps")
        .build();
    load(
        store,
        &[
            repo("aaa/maps").image("latest", &described).build(),
            repo("weather").image("latest", &image("w").build()).build(),
        ],
    )
    .await;
    let page = search(store, "weather", 0, 10).await;
    assert_eq!(page.total, 2);
    if !store.capabilities().ranked_search {
        assert_eq!(page.hits[0].repository, "weather");
        assert!(page.hits[0].score > page.hits[1].score);
    }
}
