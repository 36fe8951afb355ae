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

/// How hard a commit tries to survive power loss (`PRAGMA synchronous` of the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: every commit is fsynced before it returns, so a write that
    /// was acknowledged survives an operating-system crash or power loss. The default,
    /// because `/events` acknowledges a notification once its change is committed and
    /// the registry never sends it again.
    #[default]
    Full,
    /// `synchronous = NORMAL` in WAL mode: a commit survives the process being killed at
    /// any moment and the database is never corrupted, but after an operating-system
    /// crash or power loss the last commits before it may be rolled back, including
    /// acknowledged events, until the next full scan repairs them. Commits are cheaper
    /// (no fsync per commit; the WAL is synced at checkpoints).
    Normal,
}

impl Durability {
    /// The `PRAGMA synchronous` value.
    pub fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// What opening a database file checks before using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckOnOpen {
    /// `PRAGMA quick_check`: reads every page and verifies the b-tree structure (not
    /// index contents against tables); a corrupt file is refused with what the check
    /// reported. Costs one read of the whole file.
    #[default]
    Quick,
    /// No check: a corrupt page surfaces as errors of the queries that touch it.
    Skip,
}

/// Tuning for [`SqliteStore::open_with`](crate::SqliteStore::open_with). New fields may
/// come in any release: start from [`SqliteOptions::default`] and set the fields you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Number of read-only connections queries run on concurrently (at least 1).
    pub readers: usize,
    /// How long a connection waits for a lock held by another process before failing
    /// with [`StoreError::Unavailable`](flagstate_core::StoreError::Unavailable).
    pub busy_timeout: Duration,
    /// Page cache per connection, in KiB.
    pub cache_kib: u32,
    /// Commit durability of the writer; default [`Durability::Full`].
    pub durability: Durability,
    /// Integrity check of a database file at open; default [`CheckOnOpen::Quick`].
    pub check_on_open: CheckOnOpen,
    /// How stale the generation may be for commits of *other* processes on the same file
    /// (a read-only server following a writer): the generation is read from the database
    /// at most once per this interval; the store's own writes are seen at once.
    /// `Duration::ZERO` reads it on every call. Default: 500 ms.
    pub generation_refresh: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            cache_kib: 8 * 1024,
            durability: Durability::default(),
            check_on_open: CheckOnOpen::default(),
            generation_refresh: DEFAULT_GENERATION_REFRESH,
        }
    }
}

/// Default of [`SqliteOptions::generation_refresh`].
pub const DEFAULT_GENERATION_REFRESH: Duration = Duration::from_millis(500);

/// How long [`Connections::probe_write`] waits for a write lock another process holds.
const PROBE_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

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
    /// The busy timeout every connection runs with.
    busy_timeout: Duration,
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

/// Reads back the `PRAGMA synchronous` of a connection.
pub(crate) fn durability(conn: &mut Connection) -> Result<Durability> {
    let level: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    match level {
        1 => Ok(Durability::Normal),
        2 => Ok(Durability::Full),
        other => Err(Error::UnexpectedSynchronous(other)),
    }
}

/// Runs `PRAGMA quick_check` and refuses a database it finds damaged.
fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let corrupt = |report: String| Error::Corrupt {
        path: path.to_owned(),
        report,
    };
    let found = conn
        .prepare("PRAGMA quick_check(10)")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        });
    match found {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(()),
        // One problem per line (rows may hold several), on one line of the message.
        Ok(rows) => Err(corrupt(
            rows.iter()
                .flat_map(|row| row.lines())
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with("*** in database"))
                .collect::<Vec<_>>()
                .join("; "),
        )),
        Err(e) if is_not_a_database(&e) => Err(corrupt(e.to_string())),
        Err(e) => Err(opening(path)(e)),
    }
}

fn check_on_open(conn: &Connection, options: &SqliteOptions, path: &Path) -> Result<()> {
    match options.check_on_open {
        CheckOnOpen::Quick => quick_check(conn, path),
        CheckOnOpen::Skip => Ok(()),
    }
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
        // SQLite silently opens a file it may not write read-only; a writer that cannot
        // write would accept nothing, so it refuses to start.
        if writer
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(opening(path))?
        {
            return Err(Error::NotWritable {
                path: path.to_owned(),
            });
        }
        configure(&writer, options, path)?;
        // Check ownership, version and integrity before anything can change the file.
        schema::check(&schema::inspect(&writer).map_err(opening(path))?, path)?;
        check_on_open(&writer, options, path)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(opening(path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "SQLite refused WAL mode");
        }
        writer.pragma_update(None, "synchronous", options.durability.pragma())?;
        schema::migrate(&mut writer, path)?;
        let readers = shared(open_readers(path, options)?);
        Ok(Connections {
            path: path.to_owned(),
            writer: Some(Arc::new(Mutex::new(writer))),
            readers,
            next_reader: AtomicUsize::new(0),
            busy_timeout: options.busy_timeout,
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
            check_on_open(first, options, path)?;
        }
        Ok(Connections {
            path: path.to_owned(),
            writer: None,
            readers: shared(readers),
            next_reader: AtomicUsize::new(0),
            busy_timeout: options.busy_timeout,
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
            busy_timeout: options.busy_timeout,
        })
    }

    /// Whether writes are refused.
    pub(crate) fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    /// Whether the writer can start a write transaction right now: the file is writable
    /// and no other process holds the write lock for longer than a short wait
    /// (`BEGIN IMMEDIATE; ROLLBACK`). Fails with [`Error::ReadOnly`] for a read-only store.
    pub(crate) async fn probe_write(&self) -> Result<()> {
        let path = self.path.clone();
        let busy_timeout = self.busy_timeout;
        self.write(move |conn| {
            if conn.is_readonly(rusqlite::MAIN_DB)? {
                return Err(Error::NotWritable { path });
            }
            conn.busy_timeout(PROBE_BUSY_TIMEOUT)?;
            let probe = conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK");
            if probe.is_err() && !conn.is_autocommit() {
                // ROLLBACK itself failed after BEGIN succeeded; leave no transaction open.
                let _ = conn.execute_batch("ROLLBACK");
            }
            conn.busy_timeout(busy_timeout)?;
            Ok(probe?)
        })
        .await
    }

    /// Whether reads have connections of their own (all but an in-memory store).
    pub(crate) fn has_readers(&self) -> bool {
        !self.readers.is_empty()
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
        let conn = self.reader().await?;
        tokio::task::spawn_blocking(move || work(&conn)).await?
    }

    /// Like [`read`](Self::read), but returns once a connection is had and `work` has
    /// started on its blocking thread, for work that hands its results over as it goes
    /// (and so may hold its connection for long). Such work never takes the first
    /// reader when there are several: that one is kept for short reads (the generation,
    /// manifests, listings), which therefore never queue behind a long stream.
    pub(crate) async fn read_detached<F>(&self, work: F) -> Result<()>
    where
        F: FnOnce(&Connection) + Send + 'static,
    {
        let streams = self.readers.get(1..).unwrap_or_default();
        let conn = self.reader_among(streams, streams).await?;
        tokio::task::spawn_blocking(move || work(&conn));
        Ok(())
    }

    /// A reader connection (the writer for an in-memory store), held until dropped: an
    /// idle one, else the first reader, which long streams never hold.
    async fn reader(&self) -> Result<tokio::sync::OwnedMutexGuard<Connection>> {
        self.reader_among(&self.readers, self.readers.get(..1).unwrap_or_default())
            .await
    }

    /// An idle one of `idle` readers, else a turn on one of `queue` (each: all readers
    /// when empty).
    async fn reader_among(
        &self,
        idle: &[Shared],
        queue: &[Shared],
    ) -> Result<tokio::sync::OwnedMutexGuard<Connection>> {
        let all = &self.readers[..];
        let idle = if idle.is_empty() { all } else { idle };
        let queue = if queue.is_empty() { all } else { queue };
        Ok(if self.readers.is_empty() {
            let writer = self.writer.clone().ok_or(Error::ReadOnly)?;
            writer.lock_owned().await
        } else {
            let idle = idle
                .iter()
                .find_map(|r| Arc::clone(r).try_lock_owned().ok());
            match idle {
                Some(guard) => guard,
                None => {
                    let turn = self.next_reader.fetch_add(1, Ordering::Relaxed);
                    let reader = Arc::clone(&queue[turn % queue.len()]);
                    reader.lock_owned().await
                }
            }
        })
    }
}
