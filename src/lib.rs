//! # flagstate
//!
//! Indexes the metadata of a container (OCI) registry and answers the registry index
//! protocol's queries over it, fast and cacheably; Flatpak reads its remotes' contents
//! this way, and `podman search` its search endpoint.
//!
//! This crate is the facade over the workspace: it re-exports the member crates behind
//! features, so an application depends on `flagstate` alone and picks what it needs.
//!
//! | module | feature | what |
//! |---|---|---|
//! | [`core`] | always | data model, index format, queries, `Store` trait, registry client, indexer |
//! | `sqlite` | `sqlite` | `SqliteStore`, the zero-setup store in one file |
//! | `pg` | `postgres` | `PgStore`, one writer and read-only replicas on PostgreSQL |
//! | `http` | `http` | the axum router serving the protocol |
//!
//! The `flagstate` binary (`serve`, `scan`, `query`, `check`, `index`) composes them; see
//! `docs/configuration.md` for running it.

#![warn(missing_docs)]

pub use flagstate_core as core;

#[cfg(feature = "sqlite")]
pub use flagstate_sqlite as sqlite;

#[cfg(feature = "postgres")]
pub use flagstate_pg as pg;

#[cfg(feature = "http")]
pub use flagstate_http as http;
