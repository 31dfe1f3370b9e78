//! One connection pool to one engine, opened once per process.
//!
//! # Promises
//!
//! * **SQLite** (embedded): WAL journal, `synchronous = FULL`, so a
//!   committed transaction is on disk before the call that made it
//!   returns, and readers never block the writer. Every write goes through
//!   one writer connection (a pool of its own, size 1), so writers queue
//!   in this process, first come first served, and start the moment the
//!   previous one commits. (With several connections writing, SQLite's
//!   busy handler makes a blocked writer poll the lock with sleeps of 1,
//!   2, 5, 10 … ms: measured here, 90 commits per second while the
//!   threads slept, instead of thousands.) The file is locked
//!   (`<file>.lock`) for as long as the process runs: a second control
//!   plane on the same file is refused at start-up instead of corrupting
//!   it (SQLite is one process's database here; replicas need PostgreSQL).
//! * **PostgreSQL**: a pool of `NUDGE_CP_DATABASE_POOL_SIZE` connections;
//!   TLS as the URL's `sslmode` asks, through rustls.
//! * [`Database::open`] waits for the database up to
//!   `NUDGE_CP_DATABASE_CONNECT_TIMEOUT`, then fails with an error that
//!   names `NUDGE_CP_DATABASE_URL` with the password redacted. Once open,
//!   a database that goes away makes calls fail with
//!   [`StorageError::Unavailable`]; the pool reconnects by itself when it
//!   comes back.
//! * The schema is brought up to date (see `migrate`) before `open`
//!   returns.

use std::fs::File;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StorageError;
use super::location::DatabaseLocation;
use super::metrics::{PoolState, StorageMetrics};

/// Runs `$body` with `$pool` bound to the engine's pool (`SqlitePool` or
/// `PgPool`) and `$engine` to its [`Engine`]: one query text, compiled for
/// both engines. SQL in the body uses `$1`-style placeholders, which both
/// engines read.
///
/// `with_pool!(write …)` binds the pool that writes: SQLite's one writer
/// connection (see the module doc), PostgreSQL's one pool. Use it for every
/// statement or transaction that changes data; plain reads use the rest.
macro_rules! with_pool {
    (@on $chosen:expr, $pool:ident, $engine:ident => $body:expr) => {
        match $chosen {
            $crate::storage::database::Pool::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $engine = $crate::storage::Engine::Sqlite;
                $body
            }
            $crate::storage::database::Pool::Postgres($pool) => {
                #[allow(unused_variables)]
                let $engine = $crate::storage::Engine::Postgres;
                $body
            }
        }
    };
    (write $db:expr, $pool:ident, $engine:ident => $body:expr) => {
        $crate::storage::database::with_pool!(@on $db.writer(), $pool, $engine => $body)
    };
    (write $db:expr, $pool:ident => $body:expr) => {
        $crate::storage::database::with_pool!(@on $db.writer(), $pool, _engine => $body)
    };
    ($db:expr, $pool:ident => $body:expr) => {
        $crate::storage::database::with_pool!(@on $db.pool(), $pool, _engine => $body)
    };
    ($db:expr, $pool:ident, $engine:ident => $body:expr) => {
        $crate::storage::database::with_pool!(@on $db.pool(), $pool, $engine => $body)
    };
}

pub(crate) use with_pool;

/// How long a connection may wait for SQLite's write lock before the call
/// fails: far above any one transaction of ours.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The SQLite writer connection's page cache, in KiB (SQLite's
/// `cache_size` takes a negative number as KiB; its default is 2 MiB).
/// Ingest inserts into indexes whose hot pages are spread across the
/// file (a user's newest events, the dedupe ids): with 2 MiB they are
/// read back from the operating system on most inserts once the store
/// holds a million events or so, and the CPU per stored event grew by a
/// third (README, storage benchmark). Readers keep the default: they read
/// recent events, in order.
const SQLITE_WRITER_CACHE_KIB: i64 = 64 * 1024;
/// How long a call waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between connection attempts at start-up.
const CONNECT_RETRY: Duration = Duration::from_millis(500);

/// Which engine a [`Database`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub location: DatabaseLocation,
    /// Connections in the pool (PostgreSQL); SQLite uses a few readers and
    /// its one writer whatever this says.
    pub pool_size: u32,
    /// How long start-up waits for the database to answer.
    pub connect_timeout: Duration,
}

impl DatabaseSettings {
    /// SQLite in `path` with defaults: for tests and tools.
    pub fn sqlite(path: impl Into<std::path::PathBuf>) -> Self {
        DatabaseSettings {
            location: DatabaseLocation::Sqlite(path.into()),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The engine's pool. Queries are written once and compiled for both arms
/// by `with_pool!`.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The open database. Cheap to clone; every store shares it.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// What writes go through: SQLite's one writer connection; on
    /// PostgreSQL the same pool as `pool`.
    writer: Pool,
    location: DatabaseLocation,
    metrics: StorageMetrics,
    /// Held open so the file lock lasts until [`Database::close`] (SQLite):
    /// released there, not when the last clone drops, so a restart in the
    /// same process does not race a task still holding a clone.
    lock: std::sync::Mutex<Option<File>>,
    /// How to open a connection of its own (PostgreSQL): for listeners,
    /// which hold theirs outside the pool (see `wakeups`).
    listen_options: Option<PgConnectOptions>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects (waiting up to `settings.connect_timeout`), then migrates.
    pub async fn open(
        settings: &DatabaseSettings,
        metrics: StorageMetrics,
    ) -> Result<Database, StorageError> {
        let (pool, writer, lock, listen_options) = match &settings.location {
            DatabaseLocation::Sqlite(path) => {
                let lock = lock_sqlite_file(path, &settings.location)?;
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(settings.pool_size.clamp(2, 8))
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options.clone())
                    .await
                    .map_err(|error| connect_error(&settings.location, &error))?;
                // Writers wait here for their turn, as long as they would
                // have waited for SQLite's lock.
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(SQLITE_BUSY_TIMEOUT)
                    .connect_with(
                        options.pragma("cache_size", format!("-{SQLITE_WRITER_CACHE_KIB}")),
                    )
                    .await
                    .map_err(|error| connect_error(&settings.location, &error))?;
                (Pool::Sqlite(pool), Pool::Sqlite(writer), Some(lock), None)
            }
            DatabaseLocation::Postgres(url) => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|error| connect_error(&settings.location, &error))?
                    .application_name("nudge-control-plane");
                let pool = connect_postgres(settings, options.clone()).await?;
                (
                    Pool::Postgres(pool.clone()),
                    Pool::Postgres(pool),
                    None,
                    Some(options),
                )
            }
        };
        let database = Database {
            inner: Arc::new(Inner {
                pool,
                writer,
                location: settings.location.clone(),
                metrics,
                lock: std::sync::Mutex::new(lock),
                listen_options,
            }),
        };
        super::migrate::run(&database).await?;
        let weak: std::sync::Weak<dyn PoolState> = Arc::downgrade(&database.inner) as _;
        database.inner.metrics.watch(weak);
        Ok(database)
    }

    pub fn engine(&self) -> Engine {
        match self.inner.pool {
            Pool::Sqlite(_) => Engine::Sqlite,
            Pool::Postgres(_) => Engine::Postgres,
        }
    }

    /// Where it is, password redacted.
    pub fn location(&self) -> &DatabaseLocation {
        &self.inner.location
    }

    /// Options for a connection outside the pool; `None` on SQLite.
    pub(crate) fn listen_options(&self) -> Option<&PgConnectOptions> {
        self.inner.listen_options.as_ref()
    }

    /// The pool for reads (see `with_pool!`).
    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The pool for writes (see `with_pool!(write …)`).
    pub(crate) fn writer(&self) -> &Pool {
        &self.inner.writer
    }

    pub(crate) fn metrics(&self) -> &StorageMetrics {
        &self.inner.metrics
    }

    /// One round trip: whether the database answers now (readiness).
    pub async fn ping(&self) -> Result<(), StorageError> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Waits for running calls, closes every connection and releases the
    /// SQLite file lock (shutdown).
    pub async fn close(&self) {
        for pool in [&self.inner.pool, &self.inner.writer] {
            match pool {
                Pool::Sqlite(pool) => pool.close().await,
                Pool::Postgres(pool) => pool.close().await,
            }
        }
        self.inner
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

impl PoolState for Inner {
    /// SQLite's writer counts with its readers; on PostgreSQL `writer` is
    /// `pool` itself.
    fn state(&self) -> (u32, usize) {
        let counts = |pool: &Pool| match pool {
            Pool::Sqlite(pool) => (pool.size(), pool.num_idle()),
            Pool::Postgres(pool) => (pool.size(), pool.num_idle()),
        };
        let (open, idle) = counts(&self.pool);
        if matches!(self.pool, Pool::Postgres(_)) {
            return (open, idle);
        }
        let (writer_open, writer_idle) = counts(&self.writer);
        (open + writer_open, idle + writer_idle)
    }
}

/// Begins a transaction that will write. On SQLite it is `BEGIN
/// IMMEDIATE`: the write lock is taken up front, so a transaction that
/// reads, decides and writes never finds its snapshot outdated at its
/// first write (a deferred one would fail with `SQLITE_BUSY` then instead
/// of waiting). On PostgreSQL a plain `BEGIN`; rows a decision rests on
/// are read `FOR UPDATE`.
pub(crate) async fn begin_write<DB: sqlx::Database>(
    metrics: &StorageMetrics,
    pool: &sqlx::Pool<DB>,
    engine: Engine,
) -> Result<sqlx::Transaction<'static, DB>, StorageError> {
    let _waiting = metrics.waiting();
    Ok(match engine {
        Engine::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Engine::Postgres => pool.begin().await?,
    })
}

async fn connect_postgres(
    settings: &DatabaseSettings,
    options: PgConnectOptions,
) -> Result<PgPool, StorageError> {
    let started = Instant::now();
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(settings.pool_size.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(error) if started.elapsed() + CONNECT_RETRY < settings.connect_timeout => {
                tracing::warn!(database = %settings.location, %error, "database not reachable yet; retrying");
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            Err(error) => return Err(connect_error(&settings.location, &error)),
        }
    }
}

fn connect_error(location: &DatabaseLocation, error: &dyn std::fmt::Display) -> StorageError {
    StorageError::Connect {
        location: location.redacted(),
        reason: error.to_string(),
    }
}

/// Creates the file's directory and takes `<file>.lock` exclusively.
fn lock_sqlite_file(
    path: &std::path::Path,
    location: &DatabaseLocation,
) -> Result<File, StorageError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|error| connect_error(location, &error))?;
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = File::create(&lock_path).map_err(|error| connect_error(location, &error))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::InUse {
            location: location.redacted(),
        }),
        Err(std::fs::TryLockError::Error(error)) => Err(connect_error(location, &error)),
    }
}
