//! Shared helpers of the HTTP tests: a store filled with known data, the router over it,
//! and a one-call request runner.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use flagstate_core::conformance::fixtures::{flatpak_app, image, list, repo};
use flagstate_core::indexer::{Indexer, IndexerConfig};
use flagstate_core::registry::{RegistryClient, RegistryConfig, RetryPolicy};
use flagstate_core::response::RepositoryEntry;
use flagstate_core::{
    Digest, GcStats, Generation, Manifest, MemoryStore, RepositorySnapshot, SearchPage, Store,
    StoreError, TagChange,
};
use flagstate_http::{AppState, HttpConfig, router};
use tower::ServiceExt;

/// The query Flatpak 1.14 sends, verbatim.
pub const FLATPAK_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

/// Repositories of [`filled_store`]: a Flatpak app (amd64 + arm64), a multi-arch list,
/// and a described tool.
pub async fn fill(store: &dyn Store) {
    let app = flatpak_app("org.example.App", "amd64").build();
    let app_arm = flatpak_app("org.example.App", "arm64").build();
    store
        .replace_repository(
            &repo("apps/org.example.app")
                .image("latest", &app)
                .image("latest-arm", &app_arm)
                .build(),
        )
        .await
        .unwrap();
    let amd = image("busybox amd64").build();
    let arm = image("busybox arm64").arch("arm64").build();
    let l = list("busybox list").child(&amd).child(&arm).build();
    store
        .replace_repository(
            &repo("library/busybox")
                .list("latest", &l)
                .list("1.36", &l)
                .build(),
        )
        .await
        .unwrap();
    let editor = image("editor")
        .label("org.opencontainers.image.title", "Editor")
        .label(
            "org.opencontainers.image.description",
            "A small text editor",
        )
        .build();
    store
        .replace_repository(&repo("tools/editor").image("v1", &editor).build())
        .await
        .unwrap();
}

/// A MemoryStore holding [`fill`]'s data.
pub async fn filled_store() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    fill(store.as_ref()).await;
    store
}

/// The router over `store` with `config` and no indexer.
pub fn app(store: Arc<dyn Store>, config: HttpConfig) -> (Router, AppState) {
    let state = AppState::new(store, None, config);
    (router(state.clone()), state)
}

/// An indexer over `store` whose registry refuses connections: events that need no
/// registry access (deletes, pushes of known digests) apply for real, others fail.
pub fn unreachable_indexer(store: Arc<dyn Store>) -> Arc<Indexer> {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut cfg = RegistryConfig::new(format!("http://127.0.0.1:{port}/").parse().unwrap());
    cfg.retry = RetryPolicy::none();
    cfg.timeout = std::time::Duration::from_secs(5);
    let client = RegistryClient::new(cfg).unwrap();
    Arc::new(Indexer::new(client, store, IndexerConfig::default()))
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts a JSON error with `status` and `code`; returns the message.
    pub fn expect_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "body: {:?}", self.body);
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        v["error"]["message"].as_str().unwrap().to_owned()
    }
}

/// Sends one request through the router.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

/// `GET uri` with extra headers.
pub async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    request(app, Method::GET, uri, headers, Body::empty()).await
}

/// Any request.
pub async fn request(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    send(app, builder.body(body.into()).unwrap()).await
}

/// A store that counts queries and can be switched to fail, for the faults a real store
/// cannot be made to produce on demand (unavailability, backend errors).
#[derive(Debug, Default)]
pub struct InstrumentedStore {
    pub inner: MemoryStore,
    pub queries: AtomicU64,
    /// 0 = healthy, 1 = unavailable, 2 = backend error, 3 = readiness finds that a
    /// write could not start (other calls then fail as backend errors).
    pub fault: AtomicU64,
    /// Readiness checks run.
    pub readiness_checks: AtomicU64,
    /// Milliseconds each readiness check takes.
    pub readiness_delay_ms: AtomicU64,
    /// Milliseconds each index query takes (a slow store, or a very large index).
    pub query_delay_ms: AtomicU64,
}

impl InstrumentedStore {
    fn check(&self) -> Result<(), StoreError> {
        let source = || -> Box<dyn std::error::Error + Send + Sync> { "connection refused".into() };
        match self.fault.load(Ordering::SeqCst) {
            0 => Ok(()),
            1 => Err(StoreError::Unavailable {
                store: "test",
                source: source(),
            }),
            _ => Err(StoreError::Backend {
                store: "test",
                source: source(),
            }),
        }
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn replace_repository(&self, s: &RepositorySnapshot) -> Result<Generation, StoreError> {
        self.check()?;
        self.inner.replace_repository(s).await
    }
    async fn remove_repository(
        &self,
        name: &flagstate_core::RepositoryName,
    ) -> Result<Generation, StoreError> {
        self.check()?;
        self.inner.remove_repository(name).await
    }
    async fn apply(&self, change: &TagChange) -> Result<Generation, StoreError> {
        self.check()?;
        self.inner.apply(change).await
    }
    async fn repositories(&self) -> Result<Vec<flagstate_core::RepositoryName>, StoreError> {
        self.check()?;
        self.inner.repositories().await
    }
    async fn repository_tags(
        &self,
        name: &flagstate_core::RepositoryName,
    ) -> Result<Option<BTreeMap<flagstate_core::Tag, Digest>>, StoreError> {
        self.check()?;
        self.inner.repository_tags(name).await
    }
    async fn known_manifests(&self, d: &[Digest]) -> Result<BTreeSet<Digest>, StoreError> {
        self.check()?;
        self.inner.known_manifests(d).await
    }
    async fn manifest(&self, d: &Digest) -> Result<Option<Manifest>, StoreError> {
        self.check()?;
        self.inner.manifest(d).await
    }
    async fn query(
        &self,
        q: &flagstate_core::IndexQuery,
    ) -> Result<Vec<RepositoryEntry>, StoreError> {
        self.check()?;
        self.queries.fetch_add(1, Ordering::SeqCst);
        let delay = self.query_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        self.inner.query(q).await
    }
    async fn list_repositories(
        &self,
        listing: &flagstate_core::discovery::RepositoryListing,
    ) -> Result<Vec<flagstate_core::discovery::RepositoryInfo>, StoreError> {
        self.check()?;
        self.inner.list_repositories(listing).await
    }
    async fn list_tags(
        &self,
        repository: &flagstate_core::RepositoryName,
        listing: &flagstate_core::discovery::TagListing,
    ) -> Result<Option<Vec<flagstate_core::discovery::TagInfo>>, StoreError> {
        self.check()?;
        self.inner.list_tags(repository, listing).await
    }
    async fn list_manifests(
        &self,
        repository: &flagstate_core::RepositoryName,
        listing: &flagstate_core::ManifestListing,
    ) -> Result<Option<Vec<flagstate_core::ManifestInfo>>, StoreError> {
        self.check()?;
        self.inner.list_manifests(repository, listing).await
    }
    async fn list_referrers(
        &self,
        repository: &flagstate_core::RepositoryName,
        subject: &flagstate_core::Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<flagstate_core::PushedManifest>>, StoreError> {
        self.check()?;
        self.inner
            .list_referrers(repository, subject, artifact_type)
            .await
    }
    async fn tag_history(
        &self,
        repository: &flagstate_core::RepositoryName,
        tag: &flagstate_core::Tag,
    ) -> Result<Option<Vec<flagstate_core::discovery::HistoryEntry>>, StoreError> {
        self.check()?;
        self.inner.tag_history(repository, tag).await
    }
    async fn prune_history(
        &self,
        retention: &flagstate_core::discovery::HistoryRetention,
        now: flagstate_core::Timestamp,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.prune_history(retention, now).await
    }
    async fn changes_since(
        &self,
        after: flagstate_core::ChangeCursor,
        filter: &flagstate_core::ChangeFilter,
        limit: usize,
    ) -> Result<flagstate_core::ChangePage, StoreError> {
        self.check()?;
        self.inner.changes_since(after, filter, limit).await
    }
    async fn prune_changes(
        &self,
        retention: &flagstate_core::ChangeRetention,
        now: flagstate_core::Timestamp,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.prune_changes(retention, now).await
    }
    async fn delivery_cursor(
        &self,
        endpoint: &str,
    ) -> Result<Option<flagstate_core::ChangeCursor>, StoreError> {
        self.check()?;
        self.inner.delivery_cursor(endpoint).await
    }
    async fn set_delivery_cursor(
        &self,
        endpoint: &str,
        cursor: flagstate_core::ChangeCursor,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_delivery_cursor(endpoint, cursor).await
    }
    async fn search(&self, text: &str, offset: u64, limit: u64) -> Result<SearchPage, StoreError> {
        self.check()?;
        self.inner.search(text, offset, limit).await
    }
    async fn generation(&self) -> Result<Generation, StoreError> {
        self.check()?;
        self.inner.generation().await
    }
    async fn registry_url(&self) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.registry_url().await
    }
    async fn set_registry_url(&self, url: &str) -> Result<Generation, StoreError> {
        self.check()?;
        self.inner.set_registry_url(url).await
    }
    async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        self.check()?;
        self.inner.collect_garbage().await
    }
    async fn readiness(&self) -> Result<(), flagstate_core::store::StoreNotReady> {
        use flagstate_core::store::StoreNotReady;
        self.readiness_checks.fetch_add(1, Ordering::SeqCst);
        let delay = self.readiness_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        if self.fault.load(Ordering::SeqCst) == 3 {
            return Err(StoreNotReady::NotWritable(StoreError::Unavailable {
                store: "test",
                source: "database is locked".into(),
            }));
        }
        self.check().map_err(StoreNotReady::Unreadable)?;
        self.inner.readiness().await
    }
}
