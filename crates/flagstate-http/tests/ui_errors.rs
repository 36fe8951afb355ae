//! Store failures on UI pages: a clear HTML page with the right status, no internals.

mod ui_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use flagstate_core::store::Generation;
use flagstate_core::{
    Digest, GcStats, IndexQuery, Manifest, RepositoryEntry, RepositorySnapshot, SearchPage, Store,
    StoreError, TagChange,
};
use ui_support::{app, get};

/// A store whose database has gone away; no real backend can be made to fail on cue.
#[derive(Debug)]
struct DownStore;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable {
        store: "test",
        source: "connection refused to 10.0.0.9:5432 (secret detail)".into(),
    })
}

#[async_trait]
impl Store for DownStore {
    async fn replace_repository(&self, _: &RepositorySnapshot) -> Result<Generation, StoreError> {
        down()
    }
    async fn remove_repository(
        &self,
        _: &flagstate_core::RepositoryName,
    ) -> Result<Generation, StoreError> {
        down()
    }
    async fn apply(&self, _: &TagChange) -> Result<Generation, StoreError> {
        down()
    }
    async fn repositories(&self) -> Result<Vec<flagstate_core::RepositoryName>, StoreError> {
        down()
    }
    async fn repository_tags(
        &self,
        _: &flagstate_core::RepositoryName,
    ) -> Result<Option<BTreeMap<flagstate_core::Tag, Digest>>, StoreError> {
        down()
    }
    async fn known_manifests(&self, _: &[Digest]) -> Result<BTreeSet<Digest>, StoreError> {
        down()
    }
    async fn manifest(&self, _: &Digest) -> Result<Option<Manifest>, StoreError> {
        down()
    }
    async fn query(&self, _: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError> {
        down()
    }
    async fn list_repositories(
        &self,
        _: &flagstate_core::discovery::RepositoryListing,
    ) -> Result<Vec<flagstate_core::discovery::RepositoryInfo>, StoreError> {
        down()
    }
    async fn list_tags(
        &self,
        _: &flagstate_core::RepositoryName,
        _: &flagstate_core::discovery::TagListing,
    ) -> Result<Option<Vec<flagstate_core::discovery::TagInfo>>, StoreError> {
        down()
    }
    async fn list_manifests(
        &self,
        _: &flagstate_core::RepositoryName,
        _: &flagstate_core::ManifestListing,
    ) -> Result<Option<Vec<flagstate_core::ManifestInfo>>, StoreError> {
        down()
    }
    async fn list_referrers(
        &self,
        _: &flagstate_core::RepositoryName,
        _: &flagstate_core::Digest,
        _: Option<&str>,
    ) -> Result<Option<Vec<flagstate_core::PushedManifest>>, StoreError> {
        down()
    }
    async fn tag_history(
        &self,
        _: &flagstate_core::RepositoryName,
        _: &flagstate_core::Tag,
    ) -> Result<Option<Vec<flagstate_core::discovery::HistoryEntry>>, StoreError> {
        down()
    }
    async fn prune_history(
        &self,
        _: &flagstate_core::discovery::HistoryRetention,
        _: flagstate_core::Timestamp,
    ) -> Result<u64, StoreError> {
        down()
    }
    async fn changes_since(
        &self,
        _: flagstate_core::ChangeCursor,
        _: &flagstate_core::ChangeFilter,
        _: usize,
    ) -> Result<flagstate_core::ChangePage, StoreError> {
        down()
    }
    async fn prune_changes(
        &self,
        _: &flagstate_core::ChangeRetention,
        _: flagstate_core::Timestamp,
    ) -> Result<u64, StoreError> {
        down()
    }
    async fn delivery_cursor(
        &self,
        _: &str,
    ) -> Result<Option<flagstate_core::ChangeCursor>, StoreError> {
        down()
    }
    async fn set_delivery_cursor(
        &self,
        _: &str,
        _: flagstate_core::ChangeCursor,
    ) -> Result<(), StoreError> {
        down()
    }
    async fn search(&self, _: &str, _: u64, _: u64) -> Result<SearchPage, StoreError> {
        down()
    }
    async fn generation(&self) -> Result<Generation, StoreError> {
        down()
    }
    async fn registry_url(&self) -> Result<Option<String>, StoreError> {
        down()
    }
    async fn set_registry_url(&self, _url: &str) -> Result<Generation, StoreError> {
        down()
    }
    async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        down()
    }
    async fn readiness(&self) -> Result<(), flagstate_core::store::StoreNotReady> {
        down().map_err(flagstate_core::store::StoreNotReady::Unreadable)
    }
}

#[tokio::test]
async fn unavailable_store_gives_503_pages_without_details() {
    let app = app(Arc::new(DownStore), "/");
    let digest = Digest::sha256_of(b"x");
    for uri in [
        "/".to_owned(),
        "/r/some/repo".to_owned(),
        format!("/i/{digest}"),
        "/search?q=x".to_owned(),
        "/apps".to_owned(),
    ] {
        let page = get(&app, &uri).await;
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(page.body.contains("Temporarily unavailable"), "{uri}");
        assert!(
            !page.body.contains("secret detail"),
            "{uri}: internals leaked"
        );
        assert_eq!(page.headers["cache-control"], "no-store");
    }
    // Input is checked before the store is asked.
    assert_eq!(get(&app, "/?page=0").await.status, StatusCode::BAD_REQUEST);
}
