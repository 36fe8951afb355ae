//! The shared store conformance suite, run twice: on an in-memory database (one
//! connection) and on a database file (WAL, separate reader connections).

use flagstate_core::conformance::Guarded;
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

    /// The temporary directory lives as long as the store.
    async fn fresh() -> Guarded<SqliteStore, tempfile::TempDir> {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("index.db")).unwrap();
        Guarded::new(store, dir)
    }

    flagstate_core::conformance_tests!(fresh);
}
