//! Liveness and readiness: `/healthz` answers while the process serves, whatever the
//! store does; `/readyz` answers 503 naming the store problem or the unfinished scan.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use common::*;
use flagstate_core::MemoryStore;
use flagstate_core::indexer::NoProgress;
use flagstate_http::{AppState, HttpConfig, router};
use serde_json::json;

#[tokio::test]
async fn healthz_is_200_while_the_store_fails() {
    let store = Arc::new(InstrumentedStore::default());
    let (app, _) = app(store.clone(), HttpConfig::default());
    for fault in [0, 1, 2, 3] {
        store.fault.store(fault, Ordering::SeqCst);
        let r = get(&app, "/healthz", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "fault {fault}");
        assert_eq!(r.json(), json!({"status": "ok"}), "fault {fault}");
    }
}

#[tokio::test]
async fn readyz_names_an_unreadable_store() {
    let store = Arc::new(InstrumentedStore::default());
    let (app, _) = app(store.clone(), HttpConfig::default());
    let r = get(&app, "/readyz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"status": "ready", "indexer": false}));

    for fault in [1, 2] {
        store.fault.store(fault, Ordering::SeqCst);
        let r = get(&app, "/readyz", &[]).await;
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let m = r.expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
        assert!(m.starts_with("store unreadable: "), "{m}");
        assert!(m.contains("connection refused"), "{m}");
    }
    store.fault.store(0, Ordering::SeqCst);
    assert_eq!(get(&app, "/readyz", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn readyz_names_a_store_that_cannot_write() {
    let store = Arc::new(InstrumentedStore::default());
    let (app, _) = app(store.clone(), HttpConfig::default());
    store.fault.store(3, Ordering::SeqCst);
    let m = get(&app, "/readyz", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(m.starts_with("store not writable: "), "{m}");
    assert!(m.contains("database is locked"), "{m}");
}

#[tokio::test]
async fn readyz_checks_the_store_before_the_scan() {
    // With an indexer whose first scan has not run, a failing store is still the
    // reason named: it is what an operator must fix first.
    let store = Arc::new(InstrumentedStore::default());
    let indexer = unreachable_indexer(store.clone());
    let writer = router(AppState::new(
        store.clone(),
        Some(indexer),
        HttpConfig::default(),
    ));
    let m = get(&writer, "/readyz", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(m.starts_with("first scan not done: "), "{m}");
    store.fault.store(1, Ordering::SeqCst);
    let m = get(&writer, "/readyz", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(m.starts_with("store unreadable: "), "{m}");
}

#[tokio::test]
async fn readyz_reports_the_last_scan_error_until_a_scan_succeeds() {
    let memory = Arc::new(MemoryStore::new());
    let indexer = unreachable_indexer(memory.clone());
    let writer = router(AppState::new(
        memory,
        Some(indexer.clone()),
        HttpConfig::default(),
    ));
    assert!(indexer.full_scan(&NoProgress).await.is_err());
    let m = get(&writer, "/readyz", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(m.starts_with("first scan not done: "), "{m}");
    assert!(m.contains("last scan error"), "{m}");
}

#[tokio::test]
async fn concurrent_probes_share_one_store_check() {
    let store = Arc::new(InstrumentedStore::default());
    store.readiness_delay_ms.store(200, Ordering::SeqCst);
    let (app, _) = app(store.clone(), HttpConfig::default());
    let probes: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get(&app, "/readyz", &[]).await.status })
        })
        .collect();
    for probe in probes {
        assert_eq!(probe.await.unwrap(), StatusCode::OK);
    }
    // Probes that arrived while a check ran took its result.
    let checks = store.readiness_checks.load(Ordering::SeqCst);
    assert!((1..=2).contains(&checks), "{checks} checks for 20 probes");
    // A probe after the last check finished checks again.
    assert_eq!(get(&app, "/readyz", &[]).await.status, StatusCode::OK);
    assert_eq!(store.readiness_checks.load(Ordering::SeqCst), checks + 1);
}
