//! The other endpoints: search for docker/podman, the catalog, `/assert`, icons, health,
//! readiness, metrics, and the JSON 404/405 answers.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::*;
use flagstate_core::conformance::fixtures::{delete_tag, image, put_image};
use flagstate_core::indexer::NoProgress;
use flagstate_core::{MemoryStore, Store};
use flagstate_http::{AppState, HttpConfig, router, router_with};
use serde_json::json;

#[tokio::test]
async fn v2_ping_answers_like_a_registry() {
    let (app, _) = app(Arc::new(MemoryStore::new()), HttpConfig::default());
    let r = get(&app, "/v2/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({}));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    // Under /v2/ errors take the distribution format, which registry clients read.
    let r = get(&app, "/v2/foo/manifests/latest", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["errors"][0]["code"], "UNSUPPORTED");
}

#[tokio::test]
async fn v1_search_speaks_docker_hub() {
    let (app, _) = app(filled_store().await, HttpConfig::default());
    let r = get(&app, "/v1/search?n=25&q=editor", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"query": "editor", "num_results": 1, "page": 1, "num_pages": 1, "page_size": 25,
               "results": [{"name": "tools/editor", "description": "A small text editor",
                            "star_count": 0, "is_official": false, "is_automated": false}]})
    );
    // `+` is a space, as podman encodes `a b`; every term must match.
    let r = get(&app, "/v1/search?q=small+editor", &[]).await;
    assert_eq!(r.json()["num_results"], 1);
    assert_eq!(r.json()["query"], "small editor");
    let r = get(&app, "/v1/search?q=nothing-like-this", &[]).await;
    assert_eq!(r.json()["results"], json!([]));
    assert_eq!(r.json()["num_pages"], 0);
    let r = get(&app, "/v1/search", &[]).await;
    assert_eq!(r.json()["num_results"], 0);
    let r = get(&app, "/v1/search?q=editor&n=1000&page=2", &[]).await;
    assert_eq!(
        (r.json()["page_size"].clone(), r.json()["page"].clone()),
        (json!(100), json!(2))
    );
    assert_eq!(r.json()["results"], json!([]));
    for bad in [
        "n=0",
        "n=-1",
        "n=abc",
        "page=0",
        "page=x",
        "n=1.5",
        "page=18446744073709551615",
    ] {
        let m = get(&app, &format!("/v1/search?q=editor&{bad}"), &[])
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_parameter");
        let name = bad.split('=').next().unwrap();
        assert!(m.contains(name), "{bad}: {m}");
    }
}

#[tokio::test]
async fn catalog_pages_with_link() {
    let (app, _) = app(filled_store().await, HttpConfig::default());
    let r = get(&app, "/v2/_catalog", &[]).await;
    assert_eq!(
        r.json(),
        json!({"repositories": ["apps/org.example.app", "library/busybox", "tools/editor"]})
    );
    assert_eq!(r.header("link"), None);
    let r = get(&app, "/v2/_catalog?n=2", &[]).await;
    assert_eq!(
        r.json()["repositories"],
        json!(["apps/org.example.app", "library/busybox"])
    );
    let link = r.header("link").unwrap();
    assert_eq!(
        link,
        "</v2/_catalog?last=library%2Fbusybox&n=2>; rel=\"next\""
    );
    let r = get(&app, "/v2/_catalog?last=library%2Fbusybox&n=2", &[]).await;
    assert_eq!(r.json()["repositories"], json!(["tools/editor"]));
    assert_eq!(r.header("link"), None);
    let r = get(&app, "/v2/_catalog?last=zzz", &[]).await;
    assert_eq!(r.json()["repositories"], json!([]));
    for bad in ["n=0", "n=1001", "n=x"] {
        get(&app, &format!("/v2/_catalog?{bad}"), &[])
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_parameter");
    }
}

fn assert_config() -> HttpConfig {
    {
        let mut fields = HttpConfig::default();
        fields.assert_endpoint = true;
        fields.max_assert_timeout = Duration::from_secs(5);
        fields
    }
}

async fn assert_post(app: &axum::Router, uri: &str, body: serde_json::Value) -> Reply {
    request(
        app,
        Method::POST,
        uri,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn assert_is_404_when_disabled() {
    let (app, _) = app(filled_store().await, HttpConfig::default());
    let r = assert_post(&app, "/assert", json!({"Query": "", "Assertions": []})).await;
    r.expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn assert_checks_the_query_answer() {
    let (app, _) = app(filled_store().await, assert_config());
    let has_editor = json!({"Results": [{"Name": "tools/editor"}]});
    let ok = |kind: &str, query: &str, test: &serde_json::Value| json!({"Query": query, "Assertions": [{"Type": kind, "Test": test}]});
    let r = assert_post(&app, "/assert", ok("contains", "", &has_editor)).await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({"Result": true}))
    );
    // The query is honoured: the editor is not an arm64 image.
    let r = assert_post(
        &app,
        "/assert",
        ok("contains", "architecture=arm64", &has_editor),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["Result"], false);
    assert_eq!(r.json()["Failed"], json!([0]));
    assert_eq!(
        r.json()["Response"]["Results"][0]["Name"],
        "apps/org.example.app"
    );
    let r = assert_post(
        &app,
        "/assert",
        ok("not-contains", "?architecture=arm64", &has_editor),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = assert_post(
        &app,
        "/assert",
        json!({"Query": "/index/static?repository=tools/editor", "Assertions": [
            {"Type": "contains", "Test": {"Results": [{"Images": [{"Tags": ["v1"]}]}]}},
            {"Type": "not-contains", "Test": {"Results": [{"Name": "library/busybox"}]}}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn assert_waits_for_a_change() {
    let store = filled_store().await;
    let (app, _) = app(store.clone(), assert_config());
    let later = tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let img = image("newcomer").build();
            store
                .apply(&put_image("team/newcomer", "v1", &img))
                .await
                .unwrap();
        }
    });
    let body = json!({"Query": "tag=v1", "Assertions": [
        {"Type": "contains", "Test": {"Results": [{"Name": "team/newcomer"}]}}]});
    let r = assert_post(&app, "/assert?timeout=5", body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    later.await.unwrap();
    store
        .apply(&delete_tag("team/newcomer", "v1"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let r = assert_post(&app, "/assert?timeout=0.3", body).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn assert_rejects_bad_requests() {
    let (app, _) = app(filled_store().await, assert_config());
    let good = json!({"Query": "", "Assertions": []});
    for (uri, body, code) in [
        ("/assert?timeout=abc", good.to_string(), "invalid_parameter"),
        ("/assert?timeout=-2", good.to_string(), "invalid_parameter"),
        ("/assert", "{".to_owned(), "invalid_assertion"),
        (
            "/assert",
            json!({"Assertions": []}).to_string(),
            "invalid_assertion",
        ),
        (
            "/assert",
            json!({"Query": 1, "Assertions": []}).to_string(),
            "invalid_assertion",
        ),
        (
            "/assert",
            json!({"Query": "", "Assertions": [{"Type": "equals", "Test": 1}]}).to_string(),
            "invalid_assertion",
        ),
        (
            "/assert",
            json!({"Query": "", "Assertions": [{"Type": "contains"}]}).to_string(),
            "invalid_assertion",
        ),
        (
            "/assert",
            json!({"Query": "", "Assertions": [], "Extra": 1}).to_string(),
            "invalid_assertion",
        ),
        (
            "/assert",
            json!({"Query": "nope=1", "Assertions": []}).to_string(),
            "invalid_query",
        ),
    ] {
        let r = request(&app, Method::POST, uri, &[], body.clone()).await;
        r.expect_error(StatusCode::BAD_REQUEST, code);
    }
    let huge = json!({"Query": "x".repeat(2 * 1024 * 1024), "Assertions": []}).to_string();
    request(&app, Method::POST, "/assert", &[], huge)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn icons_are_served_immutable_with_strict_paths() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "ab".to_owned() + &"0123456789abcdef".repeat(4)[2..];
    std::fs::create_dir_all(dir.path().join("ab")).unwrap();
    std::fs::write(
        dir.path().join("ab").join(format!("{}.png", &hash[2..])),
        b"\x89PNG fake",
    )
    .unwrap();
    std::fs::write(dir.path().join("secret.png"), b"no").unwrap();
    let config = {
        let mut fields = HttpConfig::default();
        fields.icons_dir = Some(dir.path().to_owned());
        fields
    };
    let (app, _) = app(Arc::new(MemoryStore::new()), config);
    let uri = format!("/icons/ab/{}.png", &hash[2..]);
    let r = get(&app, &uri, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"\x89PNG fake");
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let etag = r.header("etag").unwrap().to_owned();
    let r = get(&app, &uri, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let missing = format!("/icons/ab/{}.png", "f".repeat(62));
    for bad in [
        missing.as_str(),
        "/icons/ab/secret.png",
        "/icons/..%2F/secret.png",
        "/icons/ab/..%2F..%2Fsecret.png",
        "/icons/AB/0.png",
        "/icons/ab",
        "/icons/ab/%ff.png",
    ] {
        get(&app, bad, &[])
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    let (none, _) = common::app(Arc::new(MemoryStore::new()), HttpConfig::default());
    get(&none, &uri, &[])
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn health_and_readiness() {
    let store = Arc::new(InstrumentedStore::default());
    let (app, _) = app(store.clone(), HttpConfig::default());
    let r = get(&app, "/healthz", &[]).await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    assert_eq!(get(&app, "/readyz", &[]).await.status, StatusCode::OK);
    store.fault.store(1, Ordering::SeqCst);
    // Liveness does not depend on the store; readiness does (tests/health.rs has more).
    assert_eq!(get(&app, "/healthz", &[]).await.status, StatusCode::OK);
    let m = get(&app, "/readyz", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(m.starts_with("store unreadable: "), "{m}");

    let memory = Arc::new(MemoryStore::new());
    let indexer = unreachable_indexer(memory.clone());
    let state = AppState::new(memory, Some(indexer.clone()), HttpConfig::default());
    let writer = router(state);
    let m = get(&writer, "/readyz", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(m.contains("first full scan"), "{m}");
    // A full scan against the unreachable registry fails, so readiness stays off and
    // says why.
    assert!(indexer.full_scan(&NoProgress).await.is_err());
    let m = get(&writer, "/readyz", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(m.contains("last scan error"), "{m}");

    // The ready path with an indexer is covered by tests/registry.rs (real registry).
}

#[tokio::test]
async fn metrics_count_requests_cache_and_store() {
    let (app, _) = app(filled_store().await, HttpConfig::default());
    for _ in 0..3 {
        get(&app, &format!("/index/static?{FLATPAK_QUERY}"), &[]).await;
    }
    get(&app, "/index/static?bogus=1", &[]).await;
    get(&app, "/no/such/path/1", &[]).await;
    get(&app, "/no/such/path/2", &[]).await;
    let r = get(&app, "/metrics", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = std::str::from_utf8(&r.body).unwrap();
    for line in [
        "flagstate_http_requests_total{route=\"/index/static\",method=\"GET\",status=\"200\"} 3",
        "flagstate_http_requests_total{route=\"/index/static\",method=\"GET\",status=\"400\"} 1",
        "flagstate_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 2",
        "flagstate_http_request_duration_seconds_count{route=\"/index/static\"} 4",
        "flagstate_index_cache_hits_total 2",
        "flagstate_index_cache_misses_total 1",
        "flagstate_index_cache_entries 1",
        "flagstate_store_generation 3",
        "flagstate_store_up 1",
        "flagstate_indexer_first_scan_done 1",
        // Counts since start are counters, exported with `_total`.
        "# TYPE flagstate_indexer_full_scans counter",
        "flagstate_indexer_full_scans_total 0",
        "# TYPE flagstate_indexer_events_failed counter",
        "# TYPE flagstate_indexer_reconciles_dropped counter",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_as_json() {
    let (app, _) = app(filled_store().await, HttpConfig::default());
    for path in [
        "/",
        "/index",
        "/index/static/x",
        "/whatever",
        "/v1/search/x",
    ] {
        let m = get(&app, path, &[])
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
        assert!(m.contains(path), "{m}");
    }
    for (method, path, allow) in [
        (Method::POST, "/index/static", "GET,HEAD"),
        (Method::DELETE, "/index/dynamic", "GET,HEAD"),
        (Method::GET, "/events", "POST"),
        (Method::PUT, "/v2/", "GET,HEAD"),
    ] {
        let r = request(&app, method.clone(), path, &[], "").await;
        let m = r.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert!(m.contains(method.as_str()), "{m}");
        assert_eq!(r.header("allow"), Some(allow), "{path}");
    }
}

#[tokio::test]
async fn extra_routes_merge_with_the_api() {
    let state = AppState::new(filled_store().await, None, HttpConfig::default());
    let app = router_with(state, flagstate_http::ui::routes());
    let home = get(&app, "/", &[]).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(
        home.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(get(&app, "/index/static", &[]).await.status, StatusCode::OK);
    get(&app, "/definitely/not/here", &[])
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}
