//! # flagstate-core
//!
//! The heart of flagstate: everything that is neither SQL nor HTTP.
//!
//! - [`model`]: images, image lists, tags and repositories as the index sees them.
//! - [`index`]: the registry index protocol's JSON format and its deterministic writer.
//! - [`query`]: parsing `/index/*` query strings into an [`IndexQuery`], its canonical
//!   form, and the reference semantics ([`IndexQuery::evaluate_repository`]).
//! - [`store`]: the [`Store`] trait every backend implements, and [`MemoryStore`].
//! - `conformance` (feature `conformance`): the suite every backend runs from its tests.
//!
//! Start at [`Store`] to add a backend, at [`IndexQuery`] to understand what a query
//! means, and at `docs/architecture.md` for the whole picture.

#![warn(missing_docs)]

pub mod digest;
pub mod index;
pub mod model;
pub mod query;
pub mod store;

pub use digest::{Digest, DigestError};
pub use index::{ImageEntry, IndexResponse, ListEntryOut, RepositoryEntry};
pub use model::{Image, ImageList, ListEntry, Manifest, Platform, RepositorySnapshot, TagChange};
pub use query::{Filter, IndexQuery, Pattern, QueryError, ValueTest};
pub use store::{
    Capabilities, GcStats, Generation, SearchHit, SearchPage, Store, StoreError, StoreExt,
};
