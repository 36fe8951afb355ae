//! Opening SQLite connections and running blocking database work off the async runtime.
//!
//! One writer connection, guarded by an async mutex, serialises every write (SQLite
//! allows one writer at a time anyway, and taking the lock asynchronously keeps waiting
//! writers off the blocking thread pool). Reads go to a small set of read-only
//! connections that WAL mode lets run concurrently with the writer. Every call runs on
//! tokio's blocking pool via `spawn_blocking`.
//!
//! The pool is hand-written (a few lines over `tokio::sync::Mutex`) rather than taken
//! from r2d2/deadpool because their SQLite adapters pin specific rusqlite versions, and
//! a fixed set of connections opened up front needs no creation, recycling or health
//! logic.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Mutex;

use crate::error::{Error, Result, is_not_a_database};
use crate::schema;

/// How hard a commit tries to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = NORMAL` in WAL mode: a commit survives the process being killed at
    /// any moment; after an operating-system crash or power loss the last transactions
    /// before the crash may be rolled back, but the database is never corrupted. The index
    /// can always be rebuilt from the registry, so this is the default.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is also fsynced before it returns.
    Full,
}

/// Tuning for [`SqliteStore::open_with`](crate::SqliteStore::open_with).
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Number of read-only connections queries run on concurrently (at least 1).
    pub readers: usize,
    /// How long a connection waits for a lock held by another process before failing
    /// with [`StoreError::Unavailable`](flagstate_core::StoreError::Unavailable).
    pub busy_timeout: Duration,
    /// Page cache per connection, in KiB.
    pub cache_kib: u32,
    /// Commit durability.
    pub durability: Durability,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            cache_kib: 8 * 1024,
            durability: Durability::Normal,
        }
    }
}

type Shared = Arc<Mutex<Connection>>;

/// The connections of one store.
#[derive(Debug)]
pub(crate) struct Connections {
    /// Where the database lives, for messages.
    pub(crate) path: PathBuf,
    /// Empty for an in-memory store, whose only connection is the writer. Declared
    /// before `writer` so readers close first: the last connection to close checkpoints
    /// the WAL into the database file, and only the writer can.
    readers: Vec<Shared>,
    /// `None` for a read-only store.
    writer: Option<Shared>,
    next_reader: AtomicUsize,
}

/// Wraps an error from opening or first touching `path`, recognising non-databases.
fn opening(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| {
        if is_not_a_database(&source) {
            Error::NotADatabase {
                path: path.to_owned(),
                source,
            }
        } else {
            Error::Open {
                path: path.to_owned(),
                source,
            }
        }
    }
}

fn configure(conn: &Connection, options: &SqliteOptions, path: &Path) -> Result<()> {
    conn.busy_timeout(options.busy_timeout)
        .map_err(opening(path))?;
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_kib))
        .map_err(opening(path))?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(opening(path))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(opening(path))?;
    // Reading the schema is the first thing that touches the file's contents, so a file
    // that is not a database fails here with a clear error.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(opening(path))?;
    Ok(())
}

fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(opening(path))?;
    configure(&conn, options, path)?;
    Ok(conn)
}

fn open_readers(path: &Path, options: &SqliteOptions) -> Result<Vec<Connection>> {
    (0..options.readers.max(1))
        .map(|_| open_reader(path, options))
        .collect()
}

fn shared(connections: Vec<Connection>) -> Vec<Shared> {
    connections
        .into_iter()
        .map(|c| Arc::new(Mutex::new(c)))
        .collect()
}

impl Connections {
    /// Opens (creating if needed) and migrates a database file.
    pub(crate) fn open(path: &Path, options: &SqliteOptions) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut writer = Connection::open_with_flags(path, flags).map_err(opening(path))?;
        configure(&writer, options, path)?;
        // Check ownership and version before anything can change the file.
        schema::check(&schema::inspect(&writer).map_err(opening(path))?, path)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(opening(path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "SQLite refused WAL mode");
        }
        let synchronous = match options.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        writer.pragma_update(None, "synchronous", synchronous)?;
        schema::migrate(&mut writer, path)?;
        let readers = shared(open_readers(path, options)?);
        Ok(Connections {
            path: path.to_owned(),
            writer: Some(Arc::new(Mutex::new(writer))),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Opens an existing database for reading only.
    pub(crate) fn open_read_only(path: &Path, options: &SqliteOptions) -> Result<Self> {
        let readers = open_readers(path, options)?;
        if let Some(first) = readers.first() {
            let state = schema::inspect(first).map_err(opening(path))?;
            schema::check(&state, path)?;
            if state.version < schema::SUPPORTED_VERSION {
                return Err(Error::SchemaTooOld {
                    path: path.to_owned(),
                    found: state.version,
                    supported: schema::SUPPORTED_VERSION,
                });
            }
        }
        Ok(Connections {
            path: path.to_owned(),
            writer: None,
            readers: shared(readers),
            next_reader: AtomicUsize::new(0),
        })
    }

    /// A private in-memory database on a single connection.
    pub(crate) fn open_in_memory(options: &SqliteOptions) -> Result<Self> {
        let path = Path::new(":memory:");
        let mut conn = Connection::open_in_memory().map_err(opening(path))?;
        configure(&conn, options, path)?;
        schema::migrate(&mut conn, path)?;
        Ok(Connections {
            path: path.to_owned(),
            writer: Some(Arc::new(Mutex::new(conn))),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Whether writes are refused.
    pub(crate) fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    /// Runs `work` on the writer connection on a blocking thread.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let writer = self.writer.clone().ok_or(Error::ReadOnly)?;
        let mut conn = writer.lock_owned().await;
        tokio::task::spawn_blocking(move || work(&mut conn)).await?
    }

    /// Runs `work` on a reader connection (the writer for an in-memory store) on a
    /// blocking thread. Prefers an idle connection; otherwise queues on one in turn.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let conn = if self.readers.is_empty() {
            let writer = self.writer.clone().ok_or(Error::ReadOnly)?;
            writer.lock_owned().await
        } else {
            let idle = self
                .readers
                .iter()
                .find_map(|r| Arc::clone(r).try_lock_owned().ok());
            match idle {
                Some(guard) => guard,
                None => {
                    let turn = self.next_reader.fetch_add(1, Ordering::Relaxed);
                    let reader = Arc::clone(&self.readers[turn % self.readers.len()]);
                    reader.lock_owned().await
                }
            }
        };
        tokio::task::spawn_blocking(move || work(&conn)).await?
    }
}
