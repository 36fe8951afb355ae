//! The web UI merged into the full API router, as `flagstate serve` builds it.

mod ui_support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use flagstate_http::{AppState, HttpConfig, router, router_with, ui};
use ui_support::{fixture, get};

fn state(store: Arc<dyn flagstate_core::Store>) -> AppState {
    let config = {
        let mut fields = HttpConfig::default();
        fields.public_registry_url = "https://registry.example.org".into();
        fields.max_age_html = Duration::from_secs(120);
        fields
    };
    AppState::new(store, None, config)
}

#[tokio::test]
async fn ui_pages_use_the_http_configuration() {
    let f = fixture().await;
    let app: Router = router_with(state(f.store.clone()), ui::routes());
    let home = get(&app, "/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert_eq!(home.headers["cache-control"], "max-age=120");
    let repo = get(&app, "/r/base/os").await;
    assert!(
        repo.body
            .contains("podman pull registry.example.org/base/os:latest")
    );
    // The API is still there, and unknown paths are the API's 404, not a page.
    let index = get(&app, "/index/static?repository=base/os").await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(
        index
            .body
            .starts_with("{\"Registry\":\"https://registry.example.org\"")
    );
    let missing = get(&app, "/no/such/page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(!missing.body.contains("<html"));
}

#[tokio::test]
async fn without_the_ui_there_are_no_pages() {
    let f = fixture().await;
    let app = router(state(f.store.clone()));
    assert_eq!(get(&app, "/").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/r/base/os").await.status, StatusCode::NOT_FOUND);
}
