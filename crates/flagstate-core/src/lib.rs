//! # flagstate-core
//!
//! The heart of flagstate: everything that is neither SQL nor HTTP.
//!
//! - [`model`]: images, image lists, tags and repositories as the index sees them.
//! - [`name`]: [`RepositoryName`] and [`Tag`], parsed (= validated) once at the edge.
//! - [`index`]: the registry index protocol's JSON format and its deterministic writer.
//! - [`query`]: parsing `/index/*` query strings into an [`IndexQuery`], its canonical
//!   form, and the reference semantics ([`IndexQuery::evaluate_repository`]).
//! - [`store`]: the [`Store`] trait every backend implements.
//! - [`memory`]: [`MemoryStore`], the in-process store that runs the reference semantics.
//! - `conformance` (feature `conformance`): the suite every backend runs from its tests.
//! - [`registry`]: the registry client (distribution API, auth, retries, digest checks).
//! - [`events`]: parsing registry webhook notifications (distribution, CloudEvents).
//! - [`indexer`]: full scans, event application, debounced reconcile, periodic GC.
//! - `testkit` (feature `testkit`): a real distribution registry for tests, and pushing.
//!
//! Start at [`Store`] to add a backend, at [`IndexQuery`] to understand what a query
//! means, and at `docs/architecture.md` for the whole picture.

#![warn(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod digest;
pub mod events;
pub mod flatpak;
pub mod icons;
pub mod index;
pub mod indexer;
pub mod memory;
pub mod model;
pub mod name;
pub mod query;
pub mod registry;
pub mod search;
pub mod static_index;
pub mod store;
pub mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use digest::{Digest, DigestError};
pub use index::{ImageEntry, IndexResponse, ListEntryOut, RepositoryEntry};
pub use memory::MemoryStore;
pub use model::{Image, ImageList, ListEntry, Manifest, Platform, RepositorySnapshot, TagChange};
pub use name::{NameError, RepositoryName, Tag};
pub use query::{Filter, IndexQuery, Pattern, QueryError, ValueTest};
pub use store::{
    Capabilities, GcStats, Generation, SearchHit, SearchPage, Store, StoreError, StoreExt,
    StoreNotReady,
};
