//! Opening databases: persistence, schema versions, foreign and broken files, read-only
//! mode and lock contention.

mod common;

use std::time::Duration;

use common::{image, snapshot};
use flagstate_core::{IndexQuery, Store, StoreError, TagChange};
use flagstate_sqlite::{SCHEMA_VERSION, SqliteOptions, SqliteStore};

fn backend_message(result: Result<SqliteStore, StoreError>) -> String {
    match result {
        Err(StoreError::Backend { store, source }) => {
            assert_eq!(store, "sqlite");
            source.to_string()
        }
        Err(other) => panic!("expected a backend error, got {other:?}"),
        Ok(store) => panic!("expected an error, opened {store:?}"),
    }
}

#[tokio::test]
async fn reopen_keeps_data_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let img = image("a", &[("name", "Alpha")]);
    let generation = {
        let store = SqliteStore::open(&path).unwrap();
        store
            .replace_repository(&snapshot("app", &[("latest", &img)]))
            .await
            .unwrap()
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.generation().await.unwrap(), generation);
    assert_eq!(store.repositories().await.unwrap(), ["app"]);
    let results = store.query(&IndexQuery::all()).await.unwrap();
    assert_eq!(results[0].images[0].digest, img.digest);
    assert_eq!(store.search("alp", 0, 10).await.unwrap().total, 1);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    drop(SqliteStore::open(&path).unwrap());
    let newer = SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    for result in [SqliteStore::open(&path), SqliteStore::open_read_only(&path)] {
        match result {
            Err(StoreError::SchemaTooNew {
                store,
                found,
                supported,
            }) => {
                assert_eq!((store, found, supported), ("sqlite", newer, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, newer, "the newer database was modified");
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let content = "this is a text file, not a database\n".repeat(200);
    std::fs::write(&path, &content).unwrap();
    for result in [SqliteStore::open(&path), SqliteStore::open_read_only(&path)] {
        let message = backend_message(result);
        assert!(message.contains("not a SQLite database"), "{message}");
        assert!(message.contains("index.db"), "{message}");
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
}

#[tokio::test]
async fn a_corrupt_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .replace_repository(&snapshot("app", &[("latest", &image("a", &[]))]))
            .await
            .unwrap();
    }
    assert!(
        !dir.path().join("index.db-wal").exists(),
        "closing the store must checkpoint the WAL into the file"
    );
    // Keep the 100-byte header (so SQLite recognises the file) and overwrite the schema
    // page and the pages after it.
    let mut bytes = std::fs::read(&path).unwrap();
    for (i, b) in bytes.iter_mut().enumerate().skip(100).take(16 * 1024) {
        *b = (i % 251) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();
    let message = backend_message(SqliteStore::open(&path));
    assert!(
        message.contains("corrupt") || message.contains("malformed"),
        "{message}"
    );
}

#[tokio::test]
async fn a_database_of_another_program_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .unwrap();
    let message = backend_message(SqliteStore::open(&path));
    assert!(message.contains("not created by flagstate"), "{message}");
    let body: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT body FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(body, "keep me");
}

#[tokio::test]
async fn read_only_refuses_writes_and_follows_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let writer = SqliteStore::open(&path).unwrap();
    let a = image("a", &[]);
    writer
        .replace_repository(&snapshot("app", &[("latest", &a)]))
        .await
        .unwrap();
    let reader = SqliteStore::open_read_only(&path).unwrap();
    assert!(reader.is_read_only());
    assert_eq!(reader.repositories().await.unwrap(), ["app"]);
    let refused = [
        reader
            .replace_repository(&snapshot("other", &[("latest", &a)]))
            .await,
        reader.remove_repository(&"app".parse().unwrap()).await,
        reader
            .apply(&TagChange::DeleteTag {
                repository: "app".parse().unwrap(),
                tag: "latest".parse().unwrap(),
                at: flagstate_core::Timestamp::now(),
            })
            .await,
    ];
    for result in refused {
        assert!(
            matches!(result, Err(StoreError::ReadOnly { store: "sqlite" })),
            "{result:?}"
        );
    }
    assert!(matches!(
        reader.collect_garbage().await,
        Err(StoreError::ReadOnly { .. })
    ));
    let g = writer
        .replace_repository(&snapshot("other", &[("v1", &a)]))
        .await
        .unwrap();
    assert_eq!(reader.generation().await.unwrap(), g);
    assert_eq!(reader.repositories().await.unwrap(), ["app", "other"]);
}

/// `generation_refresh` bounds how stale another process's commits are seen: within the
/// interval the generation is answered from memory (no database read), the store's own
/// writes are seen at once, and with a zero interval every call reads the file.
#[tokio::test]
async fn generation_refresh_bounds_how_stale_other_writers_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let a = image("a", &[]);
    let writer = SqliteStore::open(&path).unwrap();
    let g1 = writer
        .replace_repository(&snapshot("app", &[("latest", &a)]))
        .await
        .unwrap();
    let cached = SqliteStore::open_read_only_with(&path, {
        let mut fields = SqliteOptions::default();
        fields.generation_refresh = Duration::from_secs(3600);
        fields
    })
    .unwrap();
    let every_call = SqliteStore::open_read_only_with(&path, {
        let mut fields = SqliteOptions::default();
        fields.generation_refresh = Duration::ZERO;
        fields
    })
    .unwrap();
    assert_eq!(cached.generation().await.unwrap(), g1);
    assert_eq!(every_call.generation().await.unwrap(), g1);

    let g2 = writer
        .replace_repository(&snapshot("app", &[("latest", &a), ("v2", &a)]))
        .await
        .unwrap();
    assert!(g2 > g1);
    assert_eq!(
        writer.generation().await.unwrap(),
        g2,
        "own writes: at once"
    );
    assert_eq!(every_call.generation().await.unwrap(), g2);
    assert_eq!(
        cached.generation().await.unwrap(),
        g1,
        "within the interval the generation comes from memory"
    );
    // The data itself is always read from the file.
    assert_eq!(
        cached
            .repository_tags(&"app".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn read_only_needs_an_existing_up_to_date_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let message = backend_message(SqliteStore::open_read_only(&missing));
    assert!(message.contains("missing.db"), "{message}");
    assert!(!missing.exists(), "a read-only open created the file");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let message = backend_message(SqliteStore::open_read_only(&empty));
    assert!(message.contains("open it read-write once"), "{message}");
}

#[tokio::test]
async fn a_lock_held_elsewhere_makes_writes_unavailable_not_broken() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let options = {
        let mut fields = SqliteOptions::default();
        fields.busy_timeout = Duration::from_millis(100);
        fields
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    let a = image("a", &[]);
    store
        .replace_repository(&snapshot("app", &[("latest", &a)]))
        .await
        .unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let result = store
        .replace_repository(&snapshot("app", &[("v2", &a)]))
        .await;
    assert!(
        matches!(
            result,
            Err(StoreError::Unavailable {
                store: "sqlite",
                ..
            })
        ),
        "{result:?}"
    );
    // Readers are not blocked by a writer in WAL mode.
    assert_eq!(store.repositories().await.unwrap(), ["app"]);
    other.execute_batch("ROLLBACK").unwrap();
    store
        .replace_repository(&snapshot("app", &[("v2", &a)]))
        .await
        .unwrap();
    let tags = store
        .repository_tags(&"app".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["v2"]);
}

#[tokio::test]
async fn a_path_in_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/index.db");
    let message = backend_message(SqliteStore::open(&path));
    assert!(message.contains("cannot open"), "{message}");
    assert!(message.contains("no/such/dir/index.db"), "{message}");
}
