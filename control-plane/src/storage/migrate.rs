//! Versioned schema migrations, applied at start-up, forward only.
//!
//! Each migration has one file per engine (`control-plane/migrations/
//! {sqlite,postgres}/NNNN_name.sql`), compiled into the binary; the two
//! files of a version describe the same tables. The table
//! `schema_migrations` records each applied version with a checksum of
//! its text.
//!
//! # Promises
//!
//! * **One migrator at a time.** PostgreSQL: a session advisory lock is
//!   held while migrating, so replicas starting together migrate once and
//!   the others wait, then find nothing to do. SQLite: everything runs in
//!   one `BEGIN IMMEDIATE` transaction (and the file is one process's).
//! * **All or nothing per version**: a version's statements and its record
//!   commit together.
//! * **No silent drift.** A database whose schema is newer than this build
//!   (a downgrade), or whose applied migration text differs from this
//!   build's, is refused with [`StorageError::Schema`] saying so.

use sha2::{Digest, Sha256};
use sqlx::Connection;

use super::StorageError;
use super::database::{Database, Engine, Pool};

/// One version of the schema.
struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Every migration, oldest first. Append only: an applied migration's
/// text never changes (its checksum is checked). Versions may have gaps
/// (work on several versions lands in any order): each missing version is
/// applied, in ascending order, whatever is applied already.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sqlite: include_str!("../../migrations/sqlite/0001_events.sql"),
        postgres: include_str!("../../migrations/postgres/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "preferences_devices",
        sqlite: include_str!("../../migrations/sqlite/0002_preferences_devices.sql"),
        postgres: include_str!("../../migrations/postgres/0002_preferences_devices.sql"),
    },
    Migration {
        version: 3,
        name: "notifications_deliveries",
        sqlite: include_str!("../../migrations/sqlite/0003_notifications_deliveries.sql"),
        postgres: include_str!("../../migrations/postgres/0003_notifications_deliveries.sql"),
    },
    Migration {
        version: 4,
        name: "parked_events",
        sqlite: include_str!("../../migrations/sqlite/0004_parked_events.sql"),
        postgres: include_str!("../../migrations/postgres/0004_parked_events.sql"),
    },
    Migration {
        version: 5,
        name: "inbox",
        sqlite: include_str!("../../migrations/sqlite/0005_inbox.sql"),
        postgres: include_str!("../../migrations/postgres/0005_inbox.sql"),
    },
    Migration {
        version: 6,
        name: "engine_state",
        sqlite: include_str!("../../migrations/sqlite/0006_engine_state.sql"),
        postgres: include_str!("../../migrations/postgres/0006_engine_state.sql"),
    },
    Migration {
        version: 7,
        name: "catalog",
        sqlite: include_str!("../../migrations/sqlite/0007_catalog.sql"),
        postgres: include_str!("../../migrations/postgres/0007_catalog.sql"),
    },
    Migration {
        version: 8,
        name: "analytics",
        sqlite: include_str!("../../migrations/sqlite/0008_analytics.sql"),
        postgres: include_str!("../../migrations/postgres/0008_analytics.sql"),
    },
    Migration {
        version: 9,
        name: "digest_folds",
        sqlite: include_str!("../../migrations/sqlite/0009_digest_folds.sql"),
        postgres: include_str!("../../migrations/postgres/0009_digest_folds.sql"),
    },
    Migration {
        version: 10,
        name: "replicas",
        sqlite: include_str!("../../migrations/sqlite/0010_replicas.sql"),
        postgres: include_str!("../../migrations/postgres/0010_replicas.sql"),
    },
    Migration {
        version: 11,
        name: "callback_ids",
        sqlite: include_str!("../../migrations/sqlite/0011_callback_ids.sql"),
        postgres: include_str!("../../migrations/postgres/0011_callback_ids.sql"),
    },
    Migration {
        version: 12,
        name: "event_partitions",
        sqlite: include_str!("../../migrations/sqlite/0012_event_partitions.sql"),
        postgres: include_str!("../../migrations/postgres/0012_event_partitions.sql"),
    },
    Migration {
        version: 13,
        name: "rollup_fillfactor",
        sqlite: include_str!("../../migrations/sqlite/0013_rollup_fillfactor.sql"),
        postgres: include_str!("../../migrations/postgres/0013_rollup_fillfactor.sql"),
    },
    Migration {
        version: 14,
        name: "inbox_snooze",
        sqlite: include_str!("../../migrations/sqlite/0014_inbox_snooze.sql"),
        postgres: include_str!("../../migrations/postgres/0014_inbox_snooze.sql"),
    },
    Migration {
        version: 15,
        name: "notification_throttles",
        sqlite: include_str!("../../migrations/sqlite/0015_notification_throttles.sql"),
        postgres: include_str!("../../migrations/postgres/0015_notification_throttles.sql"),
    },
    Migration {
        version: 16,
        name: "digest_groups",
        sqlite: include_str!("../../migrations/sqlite/0016_digest_groups.sql"),
        postgres: include_str!("../../migrations/postgres/0016_digest_groups.sql"),
    },
    Migration {
        version: 17,
        name: "topics_broadcasts",
        sqlite: include_str!("../../migrations/sqlite/0017_topics_broadcasts.sql"),
        postgres: include_str!("../../migrations/postgres/0017_topics_broadcasts.sql"),
    },
];

/// The key of the advisory lock migrations hold on PostgreSQL ("nudge-mg").
const MIGRATION_LOCK: i64 = 0x6e75_6467_652d_6d67;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
    version BIGINT PRIMARY KEY, \
    name TEXT NOT NULL, \
    checksum TEXT NOT NULL, \
    applied_at_ms BIGINT NOT NULL)";

/// The newest version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Brings `database`'s schema to [`latest_version`].
pub(super) async fn run(database: &Database) -> Result<(), StorageError> {
    match database.pool() {
        Pool::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            // IMMEDIATE takes the write lock up front: the check and the
            // changes happen under it.
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            let result = apply_sqlite(&mut conn).await;
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            sqlx::raw_sql(end).execute(&mut *conn).await?;
            result
        }
        Pool::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
            let result = async {
                let mut tx = conn.begin().await?;
                let applied = apply_postgres(&mut tx).await;
                match applied {
                    Ok(()) => tx.commit().await.map_err(StorageError::from),
                    Err(error) => Err(error),
                }
            }
            .await;
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
            result
        }
    }
}

/// Checks what is applied and applies the rest, inside the caller's
/// transaction on `$conn` (a `&mut` connection of either engine).
macro_rules! apply {
    ($conn:expr, $engine:expr) => {{
        let engine: Engine = $engine;
        sqlx::raw_sql(CREATE_TABLE).execute(&mut *$conn).await?;
        let applied: Vec<(i64, String)> =
            sqlx::query_as("SELECT version, checksum FROM schema_migrations ORDER BY version")
                .fetch_all(&mut *$conn)
                .await?;
        check_applied(&applied, engine)?;
        for migration in MIGRATIONS
            .iter()
            .filter(|m| !applied.iter().any(|(version, _)| *version == m.version))
        {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applying schema migration"
            );
            sqlx::raw_sql(migration.text(engine))
                .execute(&mut *$conn)
                .await
                .map_err(|error| migration.failed(&error))?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(migration.checksum(engine))
            .bind(jiff::Timestamp::now().as_millisecond())
            .execute(&mut *$conn)
            .await?;
        }
        Ok::<(), StorageError>(())
    }};
}

async fn apply_sqlite(conn: &mut sqlx::SqliteConnection) -> Result<(), StorageError> {
    apply!(conn, Engine::Sqlite)
}

async fn apply_postgres(conn: &mut sqlx::PgConnection) -> Result<(), StorageError> {
    apply!(conn, Engine::Postgres)
}

/// Refuses a database whose applied versions this build does not know or
/// whose applied text differs from this build's.
fn check_applied(applied: &[(i64, String)], engine: Engine) -> Result<(), StorageError> {
    let latest = latest_version();
    for (version, checksum) in applied {
        let Some(migration) = MIGRATIONS.iter().find(|m| m.version == *version) else {
            return Err(StorageError::Schema(format!(
                "the database's schema is at version {version}, newer than this build's {latest}: run a control plane of that version or later"
            )));
        };
        if *checksum != migration.checksum(engine) {
            return Err(StorageError::Schema(format!(
                "migration {version} ({}) applied to this database differs from this build's: the schema was changed by hand or by another build",
                migration.name
            )));
        }
    }
    Ok(())
}

impl Migration {
    fn text(&self, engine: Engine) -> &'static str {
        match engine {
            Engine::Sqlite => self.sqlite,
            Engine::Postgres => self.postgres,
        }
    }

    fn failed(&self, error: &sqlx::Error) -> StorageError {
        StorageError::Schema(format!(
            "migration {} ({}) failed: {error}",
            self.version, self.name
        ))
    }

    fn checksum(&self, engine: Engine) -> String {
        let digest = Sha256::digest(self.text(engine).as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
