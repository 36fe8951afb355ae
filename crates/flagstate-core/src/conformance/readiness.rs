//! Readiness contract: a healthy store says it is ready, before and after writes, and
//! asking changes nothing.

use super::fixtures::{image, repo};
use super::ok;
use crate::query::IndexQuery;
use crate::store::Store;

/// A healthy store — empty, then written to — passes [`Store::readiness`], and the probe
/// leaves the generation and the data as they were.
pub async fn healthy_store_is_ready(store: &dyn Store) {
    if let Err(e) = store.readiness().await {
        panic!("a fresh store must be ready: {e}");
    }
    let img = image("ready").label("k", "v").build();
    let written = ok(
        store
            .replace_repository(&repo("ready/app").image("latest", &img).build())
            .await,
        "replace_repository",
    );
    let before = ok(store.query(&IndexQuery::all()).await, "query all");
    for _ in 0..3 {
        if let Err(e) = store.readiness().await {
            panic!("a store that was just written to must be ready: {e}");
        }
    }
    assert_eq!(
        ok(store.generation().await, "generation"),
        written,
        "readiness must not bump the generation"
    );
    assert_eq!(
        ok(store.query(&IndexQuery::all()).await, "query all"),
        before,
        "readiness must not change the data"
    );
    // The probe released whatever it took: writes still go through.
    let other = image("ready again").build();
    let next = ok(
        store
            .replace_repository(&repo("ready/other").image("latest", &other).build())
            .await,
        "replace_repository after readiness",
    );
    assert_eq!(next, written + 1);
}
