//! Caching of UI pages: ETag, 304, Cache-Control; the content-addressed stylesheet.

mod ui_support;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use flagstate_core::{Manifest, RepositorySnapshot, Store};
use ui_support::{app, fixture, get, get_with, image};

#[tokio::test]
async fn pages_carry_etag_and_max_age_and_answer_304() {
    let f = fixture().await;
    let app = app(f.store.clone(), "/");
    for uri in ["/", "/r/apps/viewer", "/apps", "/search?q=viewer"] {
        let page = get(&app, uri).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.headers["cache-control"], "max-age=60", "{uri}");
        let etag = page.headers["etag"].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 20,
            "{etag}"
        );

        let again = get_with(&app, uri, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{uri}");
        assert!(again.body.is_empty());
        assert_eq!(again.headers["etag"], etag.as_str());
        assert_eq!(again.headers["cache-control"], "max-age=60");

        let weak = format!("\"other\", W/{etag}");
        assert_eq!(
            get_with(&app, uri, &[("if-none-match", &weak)])
                .await
                .status,
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            get_with(&app, uri, &[("if-none-match", "\"stale\"")])
                .await
                .status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn etag_is_stable_for_same_data_and_changes_with_it() {
    let f = fixture().await;
    let one = get(&app(f.store.clone(), "/"), "/").await;
    let two = get(&app(f.store.clone(), "/"), "/").await;
    assert_eq!(one.body, two.body);
    assert_eq!(one.headers["etag"], two.headers["etag"]);

    let img = image("new one", "amd64", &[("name", "Newcomer")], &[]);
    f.store
        .replace_repository(&RepositorySnapshot {
            artifacts: Default::default(),
            name: "aaa-new".parse().unwrap(),
            tags: BTreeMap::from([("v1".parse().unwrap(), img.digest.clone())]),
            manifests: vec![Manifest::Image(img)],
            at: flagstate_core::Timestamp::now(),
        })
        .await
        .unwrap();
    let three = get(&app(f.store.clone(), "/"), "/").await;
    assert!(three.body.contains("Newcomer"));
    assert_ne!(three.headers["etag"], one.headers["etag"]);
    let old = one.headers["etag"].to_str().unwrap();
    assert_eq!(
        get_with(&app(f.store.clone(), "/"), "/", &[("if-none-match", old)])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn stylesheet_is_content_addressed_and_cached_long() {
    let f = fixture().await;
    let app = app(f.store.clone(), "/");
    let home = get(&app, "/").await.body;
    let start = home.find("href=\"/static/style-").expect("stylesheet link") + 6;
    let end = start + home[start..].find('"').unwrap();
    let href = &home[start..end];
    let css = get(&app, href).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        css.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(css.body.contains("@media"));
    let etag = css.headers["etag"].to_str().unwrap();
    assert_eq!(
        get_with(&app, href, &[("if-none-match", etag)])
            .await
            .status,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get(&app, "/static/style.css").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/static/other.js").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn head_requests_are_answered() {
    let f = fixture().await;
    let app = app(f.store.clone(), "/");
    let resp = tower::ServiceExt::oneshot(
        app,
        axum::http::Request::head("/r/base/os")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("etag"));
}
