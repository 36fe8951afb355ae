//! The shared store conformance suite, run twice: on an in-memory database (one
//! connection) and on a database file (WAL, separate reader connections).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use flagstate_core::{
    Capabilities, Digest, GcStats, Generation, IndexQuery, Manifest, RepositoryEntry,
    RepositorySnapshot, SearchPage, Store, StoreError, TagChange,
};
use flagstate_sqlite::SqliteStore;

mod in_memory {
    use super::*;

    async fn fresh() -> SqliteStore {
        SqliteStore::open_in_memory().unwrap()
    }

    flagstate_core::conformance_tests!(fresh);
}

mod on_disk {
    use super::*;

    async fn fresh() -> OnDisk {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("index.db")).unwrap();
        OnDisk { store, _dir: dir }
    }

    flagstate_core::conformance_tests!(fresh);
}

/// A store in a temporary directory that lives as long as the store.
#[derive(Debug)]
struct OnDisk {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl Store for OnDisk {
    async fn replace_repository(&self, s: &RepositorySnapshot) -> Result<Generation, StoreError> {
        self.store.replace_repository(s).await
    }
    async fn remove_repository(&self, name: &str) -> Result<Generation, StoreError> {
        self.store.remove_repository(name).await
    }
    async fn apply(&self, change: &TagChange) -> Result<Generation, StoreError> {
        self.store.apply(change).await
    }
    async fn repositories(&self) -> Result<Vec<String>, StoreError> {
        self.store.repositories().await
    }
    async fn repository_tags(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Digest>>, StoreError> {
        self.store.repository_tags(name).await
    }
    async fn known_manifests(&self, digests: &[Digest]) -> Result<BTreeSet<Digest>, StoreError> {
        self.store.known_manifests(digests).await
    }
    async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>, StoreError> {
        self.store.manifest(digest).await
    }
    async fn query(&self, query: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError> {
        self.store.query(query).await
    }
    async fn search(&self, text: &str, offset: u64, limit: u64) -> Result<SearchPage, StoreError> {
        self.store.search(text, offset, limit).await
    }
    async fn generation(&self) -> Result<Generation, StoreError> {
        self.store.generation().await
    }
    async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        self.store.collect_garbage().await
    }
    fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }
}
