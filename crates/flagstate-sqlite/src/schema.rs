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
//! - Discovery (version 3): `repositories.created` / `.updated` and `tags.updated` are
//!   milliseconds since the epoch, indexed by `(updated, name)` for the time-ordered
//!   listings; `manifests.media_type` / `.created` copy the two body fields a tag listing
//!   shows, so listing tags never decodes bodies. `tag_history` has one row per digest a
//!   tag pointed at; its rowid keeps insertion order and it names the digest as text,
//!   since garbage collection deletes manifests that only history still mentions.
//! - `change_log` (version 4) holds one row per visible change, keyed by the generation
//!   of its transaction and its position within it (the change cursor), so reading after
//!   a cursor is a range scan of the primary key; `meta.change_floor_*` is the position
//!   retention has dropped the log up to.
//! - `deliveries` (version 5) holds, per webhook endpoint name, the change cursor up to
//!   which the endpoint acknowledged the log (its two columns as `change_log`'s key).
//! - Version 6: `manifests.size` (NULL for manifests stored before it, which the next
//!   scan reads again) and `pushed_manifests`, the manifests a repository holds by digest
//!   alone (pushed without a tag), keyed by `(repository, digest)`, naming the digest as
//!   text because `manifests` holds indexable images and lists only; with the `subject`
//!   and `artifact_type` the referrers listing selects on (indexed by subject).
//! - `artifact_tags` (version 8): tags pointing at artifacts (manifests that are neither
//!   images nor lists), apart from `tags` so that no query path can meet them; each names
//!   a digest of `pushed_manifests` of its repository, which holds what the artifact is.
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
    // Version 3: what the discovery listings need. Times are milliseconds since the
    // epoch; rows that exist already are stamped with the time of the upgrade (nothing
    // better is known), and each existing tag starts its history there.
    r#"
    ALTER TABLE repositories ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE repositories ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tags ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE manifests ADD COLUMN media_type TEXT;
    ALTER TABLE manifests ADD COLUMN created TEXT;

    UPDATE repositories SET
        created = CAST(unixepoch('subsec') * 1000 AS INTEGER),
        updated = CAST(unixepoch('subsec') * 1000 AS INTEGER);
    UPDATE tags SET updated = CAST(unixepoch('subsec') * 1000 AS INTEGER);
    UPDATE manifests SET
        media_type = (SELECT json_extract(b.body, '$.media_type') FROM manifest_bodies b
                      WHERE b.manifest_id = manifests.id),
        created = (SELECT json_extract(b.body, '$.created') FROM manifest_bodies b
                   WHERE b.manifest_id = manifests.id AND NOT manifests.is_list);

    CREATE TABLE tag_history (
        id INTEGER PRIMARY KEY,
        repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        since INTEGER NOT NULL
    );
    CREATE INDEX tag_history_by_tag ON tag_history (repository_id, tag, id);
    INSERT INTO tag_history (repository_id, tag, digest, since)
        SELECT t.repository_id, t.tag, m.digest, t.updated
        FROM tags t JOIN manifests m ON m.id = t.manifest_id
        ORDER BY t.repository_id, t.tag;

    CREATE INDEX repositories_by_updated ON repositories (updated, name);
    CREATE INDEX tags_by_updated ON tags (repository_id, updated, tag);
    "#,
    // Version 4: the change log. A database upgraded to it starts its log at its current
    // generation: a reader cannot ask for changes from before the log existed.
    r#"
    CREATE TABLE change_log (
        generation INTEGER NOT NULL,
        position INTEGER NOT NULL,
        time INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        repository TEXT NOT NULL,
        tag TEXT,
        digest TEXT,
        previous_digest TEXT,
        media_type TEXT,
        PRIMARY KEY (generation, position)
    ) WITHOUT ROWID;
    ALTER TABLE meta ADD COLUMN change_floor_generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE meta ADD COLUMN change_floor_position INTEGER NOT NULL DEFAULT 4294967295;
    UPDATE meta SET change_floor_generation = generation;
    "#,
    // Version 5: where the change log's deliveries to each webhook endpoint stand (the
    // last acknowledged cursor), so a restarted writer resumes them.
    r#"
    CREATE TABLE deliveries (
        endpoint TEXT PRIMARY KEY,
        generation INTEGER NOT NULL,
        position INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // Version 6: manifest sizes, and the manifests repositories hold by digest alone.
    // Manifests stored before it have no size (NULL); the next scan reads them again and
    // fills it in.
    r#"
    ALTER TABLE manifests ADD COLUMN size INTEGER;
    CREATE TABLE pushed_manifests (
        repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        pushed INTEGER NOT NULL,
        artifact_type TEXT,
        subject TEXT,
        annotations TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (repository_id, digest)
    ) WITHOUT ROWID;
    CREATE INDEX pushed_manifests_by_subject ON pushed_manifests (repository_id, subject)
        WHERE subject IS NOT NULL;
    "#,
    // Version 7: change records of referrers carry the manifest they refer to and their
    // artifact type. Records written before it have neither (NULL), as they had then.
    r#"
    ALTER TABLE change_log ADD COLUMN subject TEXT;
    ALTER TABLE change_log ADD COLUMN artifact_type TEXT;
    "#,
    // Version 8: tags pointing at artifacts. Before it such tags were not kept; the next
    // scan finds them.
    r#"
    CREATE TABLE artifact_tags (
        repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated INTEGER NOT NULL,
        PRIMARY KEY (repository_id, tag)
    ) WITHOUT ROWID;
    CREATE INDEX artifact_tags_by_updated ON artifact_tags (repository_id, updated, tag);
    CREATE INDEX artifact_tags_by_digest ON artifact_tags (repository_id, digest);
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
    use flagstate_core::discovery::{ListOrder, Listing, TagListing};
    use flagstate_core::{IndexQuery, Manifest, MemoryStore, Store, StoreExt};
    use rusqlite::{Connection, params};

    use super::{APPLICATION_ID, MIGRATIONS};
    use crate::{SCHEMA_VERSION, SqliteStore};

    /// Writes a database file at schema `version` holding one Flatpak app tagged
    /// `stable` in `old/app`, with the SQL that release's write path ran (version 1 and
    /// 2 tables only), and returns the generation it stored.
    fn old_database(path: &std::path::Path, version: usize, app: &flagstate_core::Image) -> i64 {
        let mut conn = Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &MIGRATIONS[..version] {
            tx.execute_batch(migration).unwrap();
        }
        tx.pragma_update(None, "user_version", version as i64)
            .unwrap();
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        let body = serde_json::to_string(&Manifest::Image(app.clone())).unwrap();
        tx.execute(
            "INSERT INTO manifests (id, digest, is_list, os, architecture) VALUES (1, ?1, 0, ?2, ?3)",
            params![app.digest.as_str(), app.platform.os, app.platform.architecture],
        )
        .unwrap();
        tx.execute("INSERT INTO manifest_bodies VALUES (1, ?1)", [body])
            .unwrap();
        for (kind, map) in [(0, &app.labels), (1, &app.annotations)] {
            for (key, value) in map {
                tx.execute(
                    "INSERT INTO properties VALUES (1, ?1, ?2, ?3)",
                    params![kind, key, value],
                )
                .unwrap();
            }
        }
        tx.execute(
            "INSERT INTO repositories (id, name) VALUES (1, 'old/app')",
            [],
        )
        .unwrap();
        if version >= 3 {
            // What version 3's write path stored with a tag: its time and history.
            tx.execute(
                "INSERT INTO tags (repository_id, tag, manifest_id, updated) VALUES (1, 'stable', 1, 5)",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO tag_history (repository_id, tag, digest, since) VALUES (1, 'stable', ?1, 5)",
                [app.digest.as_str()],
            )
            .unwrap();
            tx.execute(
                "UPDATE manifests SET media_type = ?1, created = ?2",
                params![app.media_type, app.created],
            )
            .unwrap();
        } else {
            tx.execute("INSERT INTO tags VALUES (1, 'stable', 1)", [])
                .unwrap();
        }
        if version >= 4 {
            // What version 4's write path logged for that write.
            tx.execute(
                "INSERT INTO change_log (generation, position, time, kind, repository)
                 VALUES (7, 0, 5, 1, 'old/app')",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO change_log (generation, position, time, kind, repository, tag, digest, media_type)
                 VALUES (7, 1, 5, 3, 'old/app', 'stable', ?1, ?2)",
                params![app.digest.as_str(), app.media_type],
            )
            .unwrap();
        }
        if version >= 6 {
            // What version 6's write path stored and logged for a signature of the app
            // pushed by digest.
            tx.execute(
                "INSERT INTO pushed_manifests (repository_id, digest, media_type, size, pushed,
                                               artifact_type, subject)
                 VALUES (1, ?1, ?2, 321, 5, ?3, ?4)",
                params![
                    old_signature().as_str(),
                    OLD_SIGNATURE_MEDIA_TYPE,
                    OLD_SIGNATURE_TYPE,
                    app.digest.as_str()
                ],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO change_log (generation, position, time, kind, repository, digest, media_type)
                 VALUES (7, 2, 5, 6, 'old/app', ?1, ?2)",
                params![old_signature().as_str(), OLD_SIGNATURE_MEDIA_TYPE],
            )
            .unwrap();
        }
        tx.execute("UPDATE meta SET generation = 7", []).unwrap();
        tx.commit().unwrap();
        7
    }

    /// The digest of the signature [`old_database`] stores from version 6 on.
    fn old_signature() -> flagstate_core::Digest {
        flagstate_core::Digest::sha256_of(b"old signature")
    }
    const OLD_SIGNATURE_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
    const OLD_SIGNATURE_TYPE: &str = "application/vnd.example.signature";

    /// Database files of every earlier schema version, holding data, open and upgrade
    /// in place: the index answers what it answered, the generation is kept, each tag
    /// starts its history at its current digest, and nothing is stamped from the future.
    #[tokio::test]
    async fn databases_of_earlier_versions_are_upgraded_in_place() {
        const {
            assert!(
                SCHEMA_VERSION == 8,
                "add the new version's tables to old_database and check them here"
            )
        };
        let app = flatpak_app("org.example.Old", "amd64")
            .created("2025-01-01T00:00:00Z")
            .build();
        let reference = MemoryStore::new();
        reference
            .replace_repository(&repo("old/app").image("stable", &app).build())
            .await
            .unwrap();
        let expected = reference
            .index("/", &IndexQuery::all())
            .await
            .unwrap()
            .to_json();
        for version in 1..MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("v{version}.db"));
            let generation = old_database(&path, version, &app);
            let before = flagstate_core::Timestamp::now();

            let store = SqliteStore::open(&path).unwrap();
            let found: i64 = Connection::open(&path)
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(found, SCHEMA_VERSION, "from version {version}");
            assert_eq!(store.generation().await.unwrap(), generation as u64);
            assert_eq!(
                store
                    .index("/", &IndexQuery::all())
                    .await
                    .unwrap()
                    .to_json(),
                expected,
                "upgrading from version {version} changed what the index answers"
            );
            assert_eq!(store.registry_url().await.unwrap(), None);
            let name = "old/app".parse().unwrap();
            let tags = store
                .list_tags(&name, &TagListing::all(Listing::first(ListOrder::Name, 10)))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(tags.len(), 1);
            assert_eq!(tags[0].media_type, app.media_type);
            assert_eq!(tags[0].created.as_deref(), Some("2025-01-01T00:00:00Z"));
            let stamped = tags[0].updated;
            if version >= 3 {
                assert_eq!(stamped.as_millis(), 5, "version 3 kept times already");
            } else {
                assert!(
                    before <= stamped && stamped <= flagstate_core::Timestamp::now(),
                    "existing tags are stamped with the time of the upgrade"
                );
            }
            let history = store
                .tag_history(&name, &"stable".parse().unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(history.len(), 1);
            assert_eq!(
                (&history[0].digest, history[0].since),
                (&app.digest, stamped)
            );
            let log = store
                .changes_since(
                    flagstate_core::ChangeCursor::at_generation(0),
                    &flagstate_core::ChangeFilter::default(),
                    10,
                )
                .await
                .unwrap();
            if version >= 4 {
                // The log of version 4 is kept as it was.
                let kinds: Vec<_> = log.records.iter().map(|r| r.kind).collect();
                let mut logged = vec![
                    flagstate_core::ChangeKind::RepositoryCreated,
                    flagstate_core::ChangeKind::TagCreated,
                ];
                if version >= 6 {
                    logged.push(flagstate_core::ChangeKind::ManifestUntaggedCreated);
                }
                assert_eq!(kinds, logged, "from version {version}");
                // Records from before version 7 name no subject or artifact type.
                assert!(
                    log.records
                        .iter()
                        .all(|r| r.subject.is_none() && r.artifact_type.is_none())
                );
                assert_eq!(log.records[1].digest.as_ref(), Some(&app.digest));
                assert_eq!(log.oldest, flagstate_core::ChangeCursor::at_generation(0));
            } else {
                // The log starts at the upgrade: nothing from before it can be asked for.
                assert!(log.records.is_empty());
                assert_eq!(
                    log.oldest,
                    flagstate_core::ChangeCursor::at_generation(generation as u64)
                );
            }
            // Delivery state (version 5) starts empty and is kept.
            assert_eq!(store.delivery_cursor("hook").await.unwrap(), None);
            let delivered = flagstate_core::ChangeCursor {
                generation: generation as u64,
                index: 1,
            };
            store.set_delivery_cursor("hook", delivered).await.unwrap();
            // Manifests stored before sizes were kept have none, and count as unknown
            // so that the next scan reads them again; no repository holds untagged ones.
            let listing = flagstate_core::ManifestListing {
                untagged: flagstate_core::Untagged::Include,
                after: None,
                limit: 10,
            };
            let manifests = store
                .list_manifests(&name, &listing)
                .await
                .unwrap()
                .unwrap();
            let tagged: Vec<_> = manifests.iter().filter(|m| m.tag.is_some()).collect();
            assert_eq!(tagged.len(), 1);
            assert_eq!(tagged[0].size, None);
            assert_eq!(
                manifests.len(),
                if version >= 6 { 2 } else { 1 },
                "from version {version}"
            );
            let known = store
                .known_manifests(std::slice::from_ref(&app.digest))
                .await
                .unwrap();
            assert!(known.is_empty(), "from version {version}");
            // A manifest held by digest before version 8 can be tagged as an artifact:
            // the tag is listed with the type the first push stated, and stays out of
            // the index.
            if version >= 6 {
                let tagged = flagstate_core::PushedManifest {
                    artifact_type: Some("application/vnd.example.other".into()),
                    ..flagstate_core::conformance::fixtures::artifact("old signature", "x")
                };
                assert_eq!(tagged.digest, old_signature());
                store
                    .apply(&flagstate_core::TagChange::PutArtifact {
                        repository: name.clone(),
                        tag: "sig".parse().unwrap(),
                        manifest: tagged,
                        at: flagstate_core::Timestamp::now(),
                    })
                    .await
                    .unwrap();
                let tags = store
                    .list_tags(&name, &TagListing::all(Listing::first(ListOrder::Name, 10)))
                    .await
                    .unwrap()
                    .unwrap();
                let artifact_types: Vec<_> =
                    tags.iter().map(|t| t.artifact_type.as_deref()).collect();
                assert_eq!(artifact_types, [Some(OLD_SIGNATURE_TYPE), None]);
                assert_eq!(
                    store
                        .index("/", &IndexQuery::all())
                        .await
                        .unwrap()
                        .to_json(),
                    expected,
                    "an artifact tag is not indexed"
                );
                store
                    .apply(&flagstate_core::TagChange::DeleteTag {
                        repository: name.clone(),
                        tag: "sig".parse().unwrap(),
                        at: flagstate_core::Timestamp::now(),
                    })
                    .await
                    .unwrap();
            }
            // A referrer stored by version 6 is served, and its deletion is now logged
            // with its subject and artifact type.
            let referrers = store
                .list_referrers(&name, &app.digest, None)
                .await
                .unwrap()
                .unwrap();
            if version >= 6 {
                assert_eq!(referrers.len(), 1);
                assert_eq!(referrers[0].digest, old_signature());
                let at = store.generation().await.unwrap();
                store
                    .apply(&flagstate_core::TagChange::DeleteManifest {
                        repository: name.clone(),
                        digest: old_signature(),
                        at: flagstate_core::Timestamp::now(),
                    })
                    .await
                    .unwrap();
                let deleted = store
                    .changes_since(
                        flagstate_core::ChangeCursor::at_generation(at),
                        &flagstate_core::ChangeFilter::default(),
                        10,
                    )
                    .await
                    .unwrap()
                    .records;
                let kinds: Vec<_> = deleted.iter().map(|r| r.kind).collect();
                assert_eq!(
                    kinds,
                    [
                        flagstate_core::ChangeKind::ManifestUntaggedDeleted,
                        flagstate_core::ChangeKind::ReferrerDeleted
                    ]
                );
                assert_eq!(deleted[1].subject.as_ref(), Some(&app.digest));
                assert_eq!(
                    deleted[1].artifact_type.as_deref(),
                    Some(OLD_SIGNATURE_TYPE)
                );
            } else {
                assert!(referrers.is_empty());
            }
            store.set_registry_url("http://r.example").await.unwrap();
            drop(store);
            let reopened = SqliteStore::open_read_only(&path).unwrap();
            assert_eq!(
                reopened.registry_url().await.unwrap().as_deref(),
                Some("http://r.example")
            );
            assert_eq!(
                reopened.delivery_cursor("hook").await.unwrap(),
                Some(delivered)
            );
        }
    }
}
