//! Durability, integrity and readiness of database files: the writer's `synchronous`
//! level, refusing corrupt and unwritable files at open, and the readiness probe.

use std::time::Duration;

use flagstate_core::store::StoreNotReady;
use flagstate_core::{IndexQuery, Store, StoreError};
use flagstate_sqlite::{CheckOnOpen, Durability, SqliteOptions, SqliteStore};

#[path = "common/damage.rs"]
mod damage;

use damage::{ReadOnlyFile, corrupt_later_pages, populated_database};

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

/// `PRAGMA synchronous` as a fresh connection to the file reports it (the database
/// default, not the writer's setting, which is per connection).
fn file_default_synchronous(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn writer_commits_with_synchronous_full_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.durability().await.unwrap(), Some(Durability::Full));
    assert_eq!(SqliteOptions::default().durability, Durability::Full);
    drop(store);
    // The level belongs to the connection: nothing about it is stored in the file.
    assert_eq!(file_default_synchronous(&path), 2);
}

#[tokio::test]
async fn synchronous_normal_is_an_explicit_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let options = {
        let mut fields = SqliteOptions::default();
        fields.durability = Durability::Normal;
        fields
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    assert_eq!(store.durability().await.unwrap(), Some(Durability::Normal));
    drop(store);
    // Reopening without the option goes back to FULL.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.durability().await.unwrap(), Some(Durability::Full));
    drop(store);
    let replica = SqliteStore::open_read_only(&path).unwrap();
    assert_eq!(replica.durability().await.unwrap(), None);
}

#[tokio::test]
async fn corrupt_file_is_refused_at_open_naming_file_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    populated_database(&path, 300).await;
    assert!(corrupt_later_pages(&path) > 0);

    for message in [
        backend_message(SqliteStore::open(&path)),
        backend_message(SqliteStore::open_read_only(&path)),
    ] {
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("corrupt"), "{message}");
        assert!(
            message.contains("PRAGMA quick_check reported: "),
            "{message}"
        );
        // What the check found is passed on, not just "failed".
        let report = message
            .split("PRAGMA quick_check reported: ")
            .nth(1)
            .unwrap();
        assert!(report.len() > 20, "{message}");
        // Each finding on the one line of the message.
        assert!(!message.contains('\n'), "{message}");
        assert!(report.contains("page"), "{message}");
    }

    // Without the check the same file opens, and the damage surfaces in queries: the
    // state the check exists to prevent (a server that starts, then fails requests).
    let unchecked = SqliteStore::open_with(&path, {
        let mut fields = SqliteOptions::default();
        fields.check_on_open = CheckOnOpen::Skip;
        fields
    })
    .unwrap();
    assert!(unchecked.query(&IndexQuery::all()).await.is_err());
}

#[tokio::test]
async fn healthy_file_passes_the_check_and_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    populated_database(&path, 20).await;
    let store = SqliteStore::open(&path).unwrap();
    store.readiness().await.unwrap();
    assert_eq!(store.repositories().await.unwrap().len(), 20);
    let replica = SqliteStore::open_read_only(&path).unwrap();
    replica.readiness().await.unwrap();
}

#[tokio::test]
async fn writer_refuses_a_read_only_file_and_a_replica_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    populated_database(&path, 20).await;
    let _read_only = ReadOnlyFile::new(&path);

    let message = backend_message(SqliteStore::open(&path));
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("cannot be written"), "{message}");
    assert!(message.contains("read_only: true"), "{message}");

    // Reading needs no write access to the database file.
    let replica = SqliteStore::open_read_only(&path).unwrap();
    replica.readiness().await.unwrap();
    assert_eq!(replica.repositories().await.unwrap().len(), 20);
}

#[tokio::test]
async fn readiness_fails_while_another_process_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let store = SqliteStore::open_with(&path, {
        let mut fields = SqliteOptions::default();
        fields.busy_timeout = Duration::from_secs(30);
        fields
    })
    .unwrap();
    store.readiness().await.unwrap();

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    match store.readiness().await {
        Err(StoreNotReady::NotWritable(StoreError::Unavailable { store, source })) => {
            assert_eq!(store, "sqlite");
            assert!(source.to_string().contains("locked"), "{source}");
        }
        other => panic!("expected not writable, got {other:?}"),
    }
    // The probe waits briefly, not for the store's 30 s busy timeout.
    assert!(started.elapsed() < Duration::from_secs(10));
    // Reads still work meanwhile (WAL), and the probe left the store's own timeout in
    // place and no transaction open.
    assert_eq!(store.generation().await.unwrap(), 0);
    other.execute_batch("ROLLBACK").unwrap();
    store.readiness().await.unwrap();
    let replica = SqliteStore::open_read_only(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    // A replica never writes, so another writer's lock does not concern it.
    replica.readiness().await.unwrap();
    other.execute_batch("ROLLBACK").unwrap();
}
