//! The database schema and its versioned migrations.
//!
//! The schema version lives in `PRAGMA user_version`; `PRAGMA application_id` marks the
//! file as flagstate's so that a database created by another program is never modified.
//! Migrations only ever add: each runs in its own transaction together with the version
//! bump, so a crash leaves the database at the old or the new version, never between.
//!
//! Layout (why it looks like this):
//! - `manifests` holds each manifest once, by digest, with the columns queries filter on
//!   (`os`, `architecture`) and the image's resolved title/description (immutable, so
//!   resolved once at insert). Its JSON (the source of truth when loading) lives in
//!   `manifest_bodies`: kept apart so that filtering walks narrow rows instead of rows
//!   carrying kilobytes of Flatpak metadata and icons.
//! - `properties` is the normalised `(manifest, kind, key, value)` table of image labels
//!   (kind 0) and annotations (kind 1). Its `(kind, key, value)` index answers
//!   `label:K:exists`, `label:K=V` and prefix range scans for `label:K:matches` without
//!   touching the manifests, which is what makes the Flatpak query cheap. A JSON column
//!   with `json_extract` could not be indexed for arbitrary keys, and one column per key
//!   is impossible with open-ended label names.
//! - `list_entries` stores each list child with its *effective* platform (the list's,
//!   else the child config's — see `flagstate_core::query`), computed once at insert time
//!   since both manifests are immutable, so platform filters on list children are plain
//!   indexed comparisons.
//! - `tags` is keyed by `(repository, tag)`, with indexes by tag (the `tag=` filter) and by
//!   manifest (joining candidate images back to their tags, and garbage collection).
//! - `search` is an FTS5 table (rowid = repository id) over the words of the repository
//!   name and of the titles/descriptions of its tagged images; `repositories.title` and
//!   `.description` keep the text a search hit shows.
//! - `meta.generation` is the caching generation, updated in the same transaction as the
//!   change it describes; `meta.registry_url` is the public registry URL answers name
//!   (version 2), set by the writer.
//!
//! All text columns use SQLite's default BINARY collation (bytewise), and nothing relies
//! on SQL ordering for output order anyway: results are sorted in Rust.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Error, Result};

/// `PRAGMA application_id` of flagstate databases ("flag" in ASCII).
pub(crate) const APPLICATION_ID: i64 = 0x666c_6167;

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1: the initial schema.
    r#"
    CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        generation INTEGER NOT NULL
    );
    INSERT INTO meta (id, generation) VALUES (1, 0);

    CREATE TABLE repositories (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        title TEXT,
        description TEXT
    );

    CREATE TABLE manifests (
        id INTEGER PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        is_list INTEGER NOT NULL,
        os TEXT,
        architecture TEXT,
        title TEXT,
        description TEXT
    );

    CREATE TABLE manifest_bodies (
        manifest_id INTEGER PRIMARY KEY REFERENCES manifests (id) ON DELETE CASCADE,
        body TEXT NOT NULL
    );

    CREATE TABLE list_entries (
        list_id INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        child_id INTEGER NOT NULL REFERENCES manifests (id),
        os TEXT NOT NULL,
        architecture TEXT NOT NULL,
        PRIMARY KEY (list_id, position)
    ) WITHOUT ROWID;
    CREATE INDEX list_entries_by_child ON list_entries (child_id);

    CREATE TABLE tags (
        repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        manifest_id INTEGER NOT NULL REFERENCES manifests (id),
        PRIMARY KEY (repository_id, tag)
    ) WITHOUT ROWID;
    CREATE INDEX tags_by_tag ON tags (tag, repository_id);
    CREATE INDEX tags_by_manifest ON tags (manifest_id);

    CREATE TABLE properties (
        manifest_id INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
        kind INTEGER NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (manifest_id, kind, key)
    ) WITHOUT ROWID;
    CREATE INDEX properties_by_value ON properties (kind, key, value);

    CREATE VIRTUAL TABLE search USING fts5 (
        name, titles, descriptions,
        tokenize = "unicode61 remove_diacritics 0 categories 'L* N* Co M* S*'"
    );
    "#,
    // Version 2: the public registry URL the writer serves the index with, so read-only
    // servers of the same file name the same `Registry`.
    r#"
    ALTER TABLE meta ADD COLUMN registry_url TEXT;
    "#,
];

/// The newest schema version this build understands.
pub(crate) const SUPPORTED_VERSION: i64 = MIGRATIONS.len() as i64;

/// What a database file currently holds.
pub(crate) struct SchemaState {
    pub(crate) version: i64,
    pub(crate) application_id: i64,
    pub(crate) tables: i64,
}

/// Reads the version, application id and number of tables.
pub(crate) fn inspect(conn: &Connection) -> rusqlite::Result<SchemaState> {
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let application_id = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let tables = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    Ok(SchemaState {
        version,
        application_id,
        tables,
    })
}

/// Checks that a database may be used (by any connection): it is flagstate's or empty,
/// and not from a newer version.
pub(crate) fn check(state: &SchemaState, path: &std::path::Path) -> Result<()> {
    let ours = state.application_id == APPLICATION_ID
        || (state.application_id == 0 && state.version == 0 && state.tables == 0);
    if !ours {
        return Err(Error::ForeignDatabase {
            path: path.to_owned(),
            application_id: state.application_id,
            tables: state.tables,
        });
    }
    if state.version > SUPPORTED_VERSION {
        return Err(Error::SchemaTooNew {
            found: state.version,
            supported: SUPPORTED_VERSION,
        });
    }
    Ok(())
}

/// Brings the schema up to [`SUPPORTED_VERSION`], one transaction per migration.
pub(crate) fn migrate(conn: &mut Connection, path: &std::path::Path) -> Result<()> {
    loop {
        // Re-read inside the write transaction so that two processes opening the same new
        // file at once cannot both apply a migration.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state = inspect(&tx)?;
        check(&state, path)?;
        if state.version >= SUPPORTED_VERSION {
            return Ok(());
        }
        let index = usize::try_from(state.version).unwrap_or(0);
        tx.execute_batch(MIGRATIONS[index])?;
        tx.pragma_update(None, "user_version", state.version + 1)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.commit()?;
        tracing::info!(
            version = state.version + 1,
            path = %path.display(),
            "migrated SQLite store schema"
        );
    }
}

#[cfg(test)]
mod tests {
    use flagstate_core::conformance::fixtures::{flatpak_app, repo};
    use flagstate_core::{IndexQuery, IndexResponse, Store, StoreExt};
    use rusqlite::Connection;

    use super::{APPLICATION_ID, MIGRATIONS};
    use crate::{SCHEMA_VERSION, SqliteStore, read, write};

    /// A database file at schema version 1, as the first release wrote it, holding data
    /// (written through the same write path, which only touches version-1 tables), opens
    /// and upgrades in place: data and generation kept, no registry URL until one is set.
    #[tokio::test]
    async fn a_version_1_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let app = flatpak_app("org.example.Old", "amd64").build();
        let (before, generation) = {
            let mut conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            write::replace_repository(&mut conn, &repo("old/app").image("stable", &app).build())
                .unwrap();
            let results = read::query(&conn, &IndexQuery::all()).unwrap();
            (
                IndexResponse::new("/", results).to_json(),
                write::generation(&conn).unwrap(),
            )
        };
        const {
            assert!(
                SCHEMA_VERSION > 1,
                "this test needs a newer schema than version 1"
            )
        };

        let store = SqliteStore::open(&path).unwrap();
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(store.generation().await.unwrap(), generation);
        assert_eq!(
            store
                .index("/", &IndexQuery::all())
                .await
                .unwrap()
                .to_json(),
            before,
            "the upgrade changed what the index answers"
        );
        assert_eq!(store.registry_url().await.unwrap(), None);
        store.set_registry_url("http://r.example").await.unwrap();
        drop(store);
        let reopened = SqliteStore::open_read_only(&path).unwrap();
        assert_eq!(
            reopened.registry_url().await.unwrap().as_deref(),
            Some("http://r.example")
        );
    }
}
