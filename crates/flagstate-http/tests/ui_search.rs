//! The search page: full text through `Store::search`, filters through index queries.

mod ui_support;

use axum::http::StatusCode;
use ui_support::{BULK, app, fixture, get};

fn cards(body: &str) -> usize {
    body.matches("<li class=\"card\">").count()
}

#[tokio::test]
async fn empty_search_shows_only_the_form() {
    let f = fixture().await;
    let page = get(&app(f.store.clone(), "/"), "/search").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(cards(&page.body), 0);
    assert!(!page.body.contains("results-heading"));
}

#[tokio::test]
async fn text_search_finds_repositories_and_pages() {
    let f = fixture().await;
    let app = app(f.store.clone(), "/");
    let page = get(&app, "/search?q=viewer").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("href=\"/r/apps/viewer\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("href=\"/r/evil\""));
    assert!(
        page.body.contains("value=\"viewer\""),
        "query kept in the form"
    );

    let first = get(&app, "/search?q=filler").await.body;
    assert!(first.contains(&format!("{BULK} results")), "{first}");
    assert_eq!(cards(&first), 24);
    assert!(first.contains("href=\"/search?q=filler&#38;page=2\""));
    let second = get(&app, "/search?q=filler&page=2").await.body;
    assert_eq!(cards(&second), BULK - 24);
    assert_eq!(
        get(&app, "/search?q=filler&page=3").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/search?q=filler&page=0").await.status,
        StatusCode::BAD_REQUEST
    );

    let none = get(&app, "/search?q=zzzznothing").await.body;
    assert!(none.contains("0 results") && none.contains("Nothing matches"));
}

#[tokio::test]
async fn architecture_os_and_label_filters_narrow_results() {
    let f = fixture().await;
    let app = app(f.store.clone(), "/");
    let arm = get(&app, "/search?arch=arm64").await.body;
    assert_eq!(cards(&arm), 2, "{arm}");
    assert!(arm.contains("href=\"/r/apps/viewer\"") && arm.contains("href=\"/r/base/os\""));
    // Only the matching child of the list is counted.
    assert!(arm.contains("1 image · 1 list · linux/arm64"), "{arm}");

    let both = get(&app, "/search?q=viewer&arch=arm64&os=linux").await.body;
    assert_eq!(cards(&both), 1);
    let nothing = get(&app, "/search?q=viewer&arch=s390x").await.body;
    assert_eq!(cards(&nothing), 0);
    assert!(nothing.contains("value=\"s390x\""));
    assert_eq!(cards(&get(&app, "/search?os=windows").await.body), 0);

    let flatpaks = get(&app, "/search?label=org.flatpak.ref").await.body;
    assert_eq!(cards(&flatpaks), 1);
    assert!(flatpaks.contains("href=\"/r/apps/viewer\""));
    let valued = get(&app, "/search?label=name%3DFiller+03").await.body;
    assert_eq!(cards(&valued), 1, "{valued}");
    assert!(valued.contains("href=\"/r/bulk/repo-03\""));
    let with_text = get(&app, "/search?q=filler&label=name").await.body;
    assert!(with_text.contains(&format!("{BULK} results")));
}

#[tokio::test]
async fn bad_filters_are_400_with_the_reason() {
    let f = fixture().await;
    let app = app(f.store.clone(), "/");
    let page = get(&app, "/search?label=%3Dvalue").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("empty key"), "{}", page.body);
}

#[tokio::test]
async fn filters_apply_past_the_first_batch_of_text_hits_up_to_a_limit() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use flagstate_core::model::RepositorySnapshot;
    use flagstate_core::{Manifest, MemoryStore, Store};
    use flagstate_http::ui::FILTERED_HIT_LIMIT;
    use ui_support::image;

    // More repositories than the limit match the word; the arm64 ones are spread over
    // the whole relevance order, so later batches must be filtered too.
    let store = Arc::new(MemoryStore::new());
    let repositories = FILTERED_HIT_LIMIT as usize + 500;
    let mut arm_within_limit = 0;
    for n in 0..repositories {
        let arch = if n % 1000 == 999 { "arm64" } else { "amd64" };
        let img = image(
            &format!("many {n}"),
            arch,
            &[("name", &format!("Widget {n:05}"))],
            &[],
        );
        store
            .replace_repository(&RepositorySnapshot {
                artifacts: Default::default(),
                name: format!("many/widget-{n:05}").parse().unwrap(),
                tags: BTreeMap::from([("v1".parse().unwrap(), img.digest.clone())]),
                manifests: vec![Manifest::Image(img)],
                at: flagstate_core::Timestamp::now(),
            })
            .await
            .unwrap();
        if arch == "arm64" && n < FILTERED_HIT_LIMIT as usize {
            arm_within_limit += 1;
        }
    }
    let app = app(store.clone() as Arc<dyn Store>, "/");
    let total = store.search("widget", 0, 1).await.unwrap().total;
    assert_eq!(total, repositories as u64);

    let page = get(&app, "/search?q=widget&arch=arm64").await.body;
    // Every arm64 repository among the best FILTERED_HIT_LIMIT hits, whichever batch it
    // was in (the store ranks equal hits by name).
    assert!(arm_within_limit > 1);
    assert_eq!(cards(&page), arm_within_limit, "{page}");
    assert!(page.contains(&format!(
        "The words match {repositories} repositories; the filters were applied to the {FILTERED_HIT_LIMIT} best matches"
    )));
    // Under the limit, no notice.
    let few = get(&app, "/search?q=widget+00999&arch=arm64").await.body;
    assert_eq!(cards(&few), 1, "{few}");
    assert!(!few.contains("best matches"));
}
