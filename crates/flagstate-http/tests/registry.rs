//! End to end with a real distribution registry: the registry delivers its webhook
//! notifications over a real socket to `/events` (with a bearer token), the indexer
//! fetches what they name from the registry, and `/assert` waits until the index shows
//! the change. Skipped (loudly) when no registry binary is available, unless
//! `FLAGSTATE_REQUIRE_REGISTRY=1`.

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::*;
use flagstate_core::MemoryStore;
use flagstate_core::indexer::{Indexer, IndexerConfig, NoProgress};
use flagstate_core::registry::{RegistryClient, RegistryConfig};
use flagstate_core::testkit::{ImageSpec, Notifications, TestRegistry, TestRegistryOptions};
use flagstate_http::{AppState, HttpConfig, router};
use serde_json::json;

const TOKEN: &str = "OPEN_SESAME";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_notifications_reach_the_index() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = TestRegistryOptions {
        notifications: Some(Notifications {
            url: format!("http://127.0.0.1:{port}/events"),
            bearer_token: Some(TOKEN.into()),
            ignore_blobs_and_pulls: false,
        }),
        ..TestRegistryOptions::default()
    };
    let Some(registry) = TestRegistry::start_or_skip(options).await else {
        return;
    };
    let store = Arc::new(MemoryStore::new());
    let client = RegistryClient::new(RegistryConfig::new(registry.url().parse().unwrap())).unwrap();
    let indexer = Arc::new(Indexer::new(
        client,
        store.clone(),
        IndexerConfig::default(),
    ));
    let config = {
        let mut fields = HttpConfig::default();
        fields.events_token = Some(TOKEN.into());
        fields.assert_endpoint = true;
        fields
    };
    let state = AppState::new(store, Some(indexer.clone()), config);
    let app = router(state.clone());
    let server = tokio::spawn(axum::serve(listener, app.clone()).into_future());

    get(&app, "/readyz", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(get(&app, "/readyz", &[]).await.status, StatusCode::OK);

    let pusher = registry.pusher();
    let spec = ImageSpec::new("linux", "amd64")
        .label("org.flatpak.ref", "app/org.example.Hello/x86_64/stable");
    let pushed = pusher
        .push_image("apps/hello", Some("latest"), &spec)
        .await
        .unwrap();
    let wait = |kind: &str| {
        json!({"Query": FLATPAK_QUERY, "Assertions": [{"Type": kind, "Test": {"Results": [
            {"Name": "apps/hello", "Images": [{"Digest": pushed.digest.to_string(), "Tags": ["latest"]}]}]}}]})
            .to_string()
    };
    let r = request(
        &app,
        Method::POST,
        "/assert?timeout=30",
        &[],
        wait("contains"),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{:?}\nregistry log: {}",
        r.body,
        std::fs::read_to_string(registry.log_path()).unwrap_or_default()
    );
    assert!(state.metrics().events_applied.get() >= 1);

    pusher
        .delete_manifest("apps/hello", &pushed.digest)
        .await
        .unwrap();
    let r = request(
        &app,
        Method::POST,
        "/assert?timeout=30",
        &[],
        wait("not-contains"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let before = indexer.client().stats();
    let scraped = get(&app, "/metrics", &[]).await;
    let after = indexer.client().stats();
    let text = String::from_utf8_lossy(&scraped.body).into_owned();
    assert!(!text.contains("reason=\"unauthorized\""), "{text}");
    // The requests the indexer sent the registry, as the client counted them.
    let value = |line: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    // The scan found an empty registry (one catalog page, no tag list); the pushed
    // image was fetched when its notification arrived.
    assert!(before.catalog_pages > 0 && before.manifest_gets > 0 && before.blob_gets > 0);
    for (kind, low, high) in [
        ("catalog_page", before.catalog_pages, after.catalog_pages),
        ("tag_page", before.tag_pages, after.tag_pages),
        ("manifest_get", before.manifest_gets, after.manifest_gets),
        (
            "manifest_check",
            before.manifest_checks,
            after.manifest_checks,
        ),
        ("blob_get", before.blob_gets, after.blob_gets),
    ] {
        let n = value(&format!(
            "flagstate_registry_requests_total{{kind=\"{kind}\"}}"
        ));
        assert!(low <= n && n <= high, "{kind}: {n} not in {low}..={high}");
    }
    assert_eq!(value("flagstate_registry_retries_total"), after.retries);
    server.abort();
}
