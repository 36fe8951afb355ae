//! # flagstate-core
//!
//! The heart of flagstate: everything that is neither SQL nor HTTP.
//!
//! - [`model`]: images, image lists, tags and repositories as the index sees them.
//! - [`name`]: [`RepositoryName`] and [`Tag`], parsed (= validated) once at the edge.
//! - [`response`]: the JSON answer of the registry index protocol (`/index/*`) and its
//!   deterministic writer.
//! - [`query`]: parsing `/index/*` query strings into an [`IndexQuery`], its canonical
//!   form, and the reference semantics ([`IndexQuery::evaluate_repository`]).
//! - [`store`]: the [`Store`] trait every backend implements.
//! - [`memory`]: [`MemoryStore`], the in-process store that runs the reference semantics.
//! - [`search`], [`flatpak`] (AppStream, labels), [`digest`], [`sync`]: the rest of the
//!   model every part shares.
//! - [`generation`]: the in-process generation cache the SQL stores share (when a
//!   generation counts as confirmed, and for how long).
//! - [`events`]: parsing registry webhook notifications (distribution, CloudEvents).
//! - `conformance` (feature `conformance`): the suite every backend runs from its tests.
//! - `registry` (feature `registry`): the registry client (distribution API, auth,
//!   retries, digest checks).
//! - `indexer` (feature `indexer`, implies `registry`): full scans, event application,
//!   debounced reconcile, periodic GC.
//! - `icons` (feature `icons`): moving `data:` URI icons into content-addressed files.
//! - `static_index` (feature `static-index`, implies `icons`): writing static index files.
//! - `testkit` (feature `testkit`, implies `registry`): a real distribution registry for
//!   tests, and pushing.
//! - `webhooks` (feature `webhooks`, implies `registry`): delivering the change log
//!   ([`changes`]) to configured endpoints as CloudEvents, at least once and in order.
//!
//! ## Features
//!
//! | feature | default | modules | brings in |
//! |---|---|---|---|
//! | `registry` | yes | `registry` | reqwest, rustls, oci-spec, url, httpdate, base64, rand |
//! | `indexer` | yes | `indexer` | `registry`, futures, tokio-util |
//! | `icons` | yes | `icons` | base64, tempfile |
//! | `static-index` | yes | `static_index` | `icons`, flate2, tempfile |
//! | `conformance` | no | `conformance` | futures, rand |
//! | `testkit` | no | `testkit` | `registry`, bcrypt, tempfile |
//! | `webhooks` | no | `webhooks` | `registry`, tokio-util |
//! | `openapi` | no | — (OpenAPI schemas of the `response` types and `ChangeEvent`) | utoipa |
//!
//! With `default-features = false` the crate is the data model, index format, query
//! engine, `Store` trait and [`MemoryStore`]: what a store backend needs, without an HTTP
//! client. The store crates depend on it that way.
//!
//! Start at [`Store`] to add a backend, at [`IndexQuery`] to understand what a query
//! means, and at `docs/architecture.md` for the whole picture.

#![warn(missing_docs)]

pub mod changes;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod digest;
pub mod discovery;
pub mod events;
#[cfg(feature = "icons")]
mod files;
pub mod flatpak;
pub mod generation;
#[cfg(feature = "icons")]
pub mod icons;
#[cfg(feature = "indexer")]
pub mod indexer;
pub mod memory;
pub mod model;
pub mod name;
pub mod query;
#[cfg(feature = "registry")]
pub mod registry;
pub mod response;
pub mod search;
#[cfg(feature = "static-index")]
pub mod static_index;
pub mod store;
pub mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod timestamp;
#[cfg(feature = "webhooks")]
pub mod webhooks;

pub use changes::{
    ChangeCursor, ChangeEvent, ChangeFilter, ChangeKind, ChangePage, ChangeRecord, ChangeRetention,
};
pub use digest::{Digest, DigestError};
pub use discovery::{
    HistoryEntry, HistoryRetention, ListOrder, Listing, ManifestInfo, ManifestListing,
    ManifestPosition, Position, RepositoryInfo, RepositoryListing, TagInfo, TagListing, Untagged,
};
pub use memory::MemoryStore;
pub use model::{
    Image, ImageList, ListEntry, Manifest, Platform, PushedManifest, RepositorySnapshot, TagChange,
};
pub use name::{NameError, RepositoryName, Tag};
pub use query::{Filter, IndexQuery, Pattern, QueryError, ValueTest};
pub use response::{
    ImageEntry, IndexResponse, ListEntryOut, RepositoryEntry, ResponseWriter, WriteError,
};
pub use store::{
    Capabilities, ConsumerGone, EntrySender, EntryStream, GcStats, Generation, SearchHit,
    SearchPage, Store, StoreError, StoreExt, StoreNotReady,
};
pub use timestamp::{Timestamp, TimestampError};
