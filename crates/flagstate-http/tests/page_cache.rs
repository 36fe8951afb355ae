//! The web UI's page cache: a page is built once per (host, URL) and store generation,
//! served compressed when asked, rebuilt after the index changes, and errors are never
//! cached.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use common::*;
use flagstate_core::Store;
use flagstate_core::conformance::fixtures::{image, repo};
use flagstate_http::{AppState, HttpConfig, router_with};

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[tokio::test]
async fn pages_are_built_once_per_generation_and_host() {
    let store = Arc::new(InstrumentedStore::default());
    fill(&store.inner).await;
    let state = AppState::new(store.clone(), None, HttpConfig::default());
    let app = router_with(state.clone(), flagstate_http::ui::routes());
    let queries = || store.queries.load(Ordering::SeqCst);

    // `/apps` runs one broad store query per build.
    let first = get(&app, "/apps", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let built = queries();
    assert!(built >= 1);
    let again = get(&app, "/apps", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        queries(),
        built,
        "the second request is served from the cache"
    );
    assert_eq!(again.header("content-encoding"), Some("gzip"));
    assert_eq!(again.header("vary"), Some("Accept-Encoding"));
    assert_eq!(gunzip(&again.body), String::from_utf8_lossy(&first.body));
    let etag = first.header("etag").unwrap().to_owned();
    let not_modified = get(&app, "/apps", &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(queries(), built);
    assert!(!state.page_cache().unwrap().is_empty());

    // Pull commands name the requested host when the registry URL is relative, so the
    // host is part of the key.
    get(&app, "/apps", &[("host", "other.example.org")]).await;
    assert_eq!(queries(), built * 2, "another host is another page");

    // A change to the index is seen at once: the page is built again.
    let added = image("cached page newcomer")
        .label("org.flatpak.ref", "app/org.example.Newcomer/x86_64/stable")
        .build();
    store
        .replace_repository(&repo("apps/newcomer").image("latest", &added).build())
        .await
        .unwrap();
    let changed = get(&app, "/apps", &[]).await;
    assert_eq!(queries(), built * 3);
    assert!(
        String::from_utf8_lossy(&changed.body).contains("org.example.Newcomer"),
        "the new app is listed"
    );
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn failed_pages_are_not_cached() {
    let store = Arc::new(InstrumentedStore::default());
    fill(&store.inner).await;
    let state = AppState::new(store.clone(), None, HttpConfig::default());
    let app = router_with(state.clone(), flagstate_http::ui::routes());
    assert_eq!(
        get(&app, "/r/no/such/repository", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/?page=x", &[]).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        state.page_cache().unwrap().len(),
        0,
        "errors leave nothing behind"
    );
    // The store failing is a 503 now and a page again once it is back.
    store.fault.store(1, Ordering::SeqCst);
    assert_eq!(
        get(&app, "/", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    store.fault.store(0, Ordering::SeqCst);
    assert_eq!(get(&app, "/", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn page_entries_zero_turns_the_page_cache_off() {
    let store = Arc::new(InstrumentedStore::default());
    fill(&store.inner).await;
    let config = {
        let mut fields = HttpConfig::default();
        fields.page_cache_entries = 0;
        fields
    };
    let state = AppState::new(store.clone(), None, config);
    assert!(state.page_cache().is_none());
    let app = router_with(state, flagstate_http::ui::routes());
    let first = get(&app, "/apps", &[]).await;
    let built = store.queries.load(Ordering::SeqCst);
    let second = get(&app, "/apps", &[]).await;
    assert_eq!(
        store.queries.load(Ordering::SeqCst),
        built * 2,
        "built every time"
    );
    assert_eq!(first.body, second.body);
    assert_eq!(first.header("etag"), second.header("etag"));
}
