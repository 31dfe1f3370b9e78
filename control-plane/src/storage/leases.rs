//! Leases (table `leases`, migration 0010): named, time-bounded ownership
//! shared by every control plane on one database. What they guard is the
//! callers' business: event-feed partitions (`engine::feed`), tasks that
//! must run on one replica at a time (the engine's timers, the analytics
//! folder) or once per due time (housekeeping), and each replica's
//! heartbeat, which says how many replicas are alive.
//!
//! # Promises
//!
//! * **One holder at a time.** Taking a lease is one upsert that succeeds
//!   only when the lease is free, expired or already the caller's; on
//!   PostgreSQL concurrent upserts of one name serialize on its row and the
//!   loser sees the winner's row, so two replicas never both hold it.
//! * **The database's clock decides.** Expiry is stored and compared in
//!   the database's time, so replicas with skewed clocks agree on who
//!   holds what. A holder must still stop acting on a lease before its TTL
//!   runs out by its own clock: callers renew at a fraction of the TTL and
//!   treat a failed renewal as lost.
//! * **Losing a lease is never silent**: every renewal answers which of the
//!   asked names the caller now holds.
//! * **Due once.** [`LeaseTable::take_due`] is taken by at most one caller
//!   per period, whoever asks first after it fell due.

use std::time::Duration;

use super::StorageError;
use super::database::{Database, Engine, with_pool};

/// The database's clock, unix microseconds, in each engine's SQL.
pub(super) fn now_sql(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
        Engine::Postgres => "CAST(extract(epoch from clock_timestamp()) * 1000000 AS BIGINT)",
    }
}

/// The `leases` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    database: Database,
}

impl LeaseTable {
    pub(super) fn new(database: Database) -> Self {
        LeaseTable { database }
    }

    /// Takes or renews each of `names` for `holder` until `ttl` from now,
    /// where the lease is free, expired or already `holder`'s; answers the
    /// names `holder` holds now (in no particular order). One statement.
    pub async fn hold(
        &self,
        names: &[String],
        holder: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, StorageError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // Rows locked in one order by everyone: two replicas upserting
        // overlapping sets cannot deadlock.
        let mut names = names.to_vec();
        names.sort_unstable();
        names.dedup();
        let ttl_us = micros(ttl);
        let held: Vec<String> = with_pool!(write self.database, pool, engine => {
            let now = now_sql(engine);
            let values = (0..names.len())
                .map(|i| format!("(${}, $1, {now} + $2)", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO leases (name, holder, expires_at_us) VALUES {values} \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at_us = excluded.expires_at_us \
                 WHERE leases.holder = excluded.holder OR leases.expires_at_us <= {now} \
                 RETURNING name"
            );
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(holder)
                .bind(ttl_us);
            for name in &names {
                query = query.bind(name);
            }
            query.fetch_all(pool).await?
        });
        Ok(held)
    }

    /// Gives `names` up if `holder` holds them, so another replica may
    /// take them at once (a clean shutdown, a rebalance).
    pub async fn release(&self, names: &[String], holder: &str) -> Result<(), StorageError> {
        for chunk in names.chunks(500) {
            let placeholders = (0..chunk.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("DELETE FROM leases WHERE holder = $1 AND name IN ({placeholders})");
            with_pool!(write self.database, pool => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(holder);
                for name in chunk {
                    query = query.bind(name);
                }
                query.execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Deletes leases that expired more than `grace` ago (heartbeats of
    /// processes long gone, finished turns): housekeeping. Returns how
    /// many.
    pub async fn prune_expired(&self, grace: Duration) -> Result<u64, StorageError> {
        let grace_us = micros(grace);
        let removed = with_pool!(write self.database, pool, engine => {
            let sql = format!(
                "DELETE FROM leases WHERE expires_at_us < {} - $1",
                now_sql(engine)
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(grace_us)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed)
    }

    /// Forgets every lease when this process is the database's only one
    /// (SQLite: the file is locked to it), so a restart after a crash does
    /// not wait for the dead process's leases to expire. A no-op on
    /// PostgreSQL, where other replicas' leases are live.
    pub(super) async fn clear_if_alone(&self) -> Result<(), StorageError> {
        if self.database.engine() == Engine::Sqlite {
            with_pool!(write self.database, pool => {
                sqlx::query("DELETE FROM leases").execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Every unexpired lease whose name starts with `prefix`, as
    /// `(name, holder)`, by name.
    pub async fn live(&self, prefix: &str) -> Result<Vec<(String, String)>, StorageError> {
        let rows: Vec<(String, String)> = with_pool!(self.database, pool, engine => {
            let sql = format!(
                "SELECT name, holder FROM leases \
                 WHERE substr(name, 1, length($1)) = $1 AND expires_at_us > {} ORDER BY name",
                now_sql(engine)
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(prefix)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Takes `name` for `holder` for `every` from now if it is free or
    /// expired (whoever held it last): `true` means "this run is due and
    /// it is yours". Asked by every replica, it is `true` for one of them
    /// per period.
    pub async fn take_due(
        &self,
        name: &str,
        holder: &str,
        every: Duration,
    ) -> Result<bool, StorageError> {
        let every_us = micros(every);
        let taken: Option<String> = with_pool!(write self.database, pool, engine => {
            let now = now_sql(engine);
            let sql = format!(
                "INSERT INTO leases (name, holder, expires_at_us) VALUES ($1, $2, {now} + $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at_us = excluded.expires_at_us \
                 WHERE leases.expires_at_us <= {now} \
                 RETURNING name"
            );
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(name)
                .bind(holder)
                .bind(every_us)
                .fetch_optional(pool)
                .await?
        });
        Ok(taken.is_some())
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX / 2)
}

/// A task that runs on one replica at a time (the analytics folder): the
/// replica that holds the lease `name` runs it, renewing the lease each
/// time it asks; when that replica dies, another takes over after `ttl`.
#[derive(Debug, Clone)]
pub struct Singleton {
    leases: LeaseTable,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Singleton {
    pub fn new(leases: LeaseTable, name: &str, holder: &str, ttl: Duration) -> Self {
        Singleton {
            leases,
            name: name.to_owned(),
            holder: holder.to_owned(),
            ttl,
        }
    }

    /// Whether this replica may run the task now: takes or renews the
    /// lease. Ask again at least every `ttl / 2` while running.
    pub async fn hold(&self) -> Result<bool, StorageError> {
        let held = self
            .leases
            .hold(std::slice::from_ref(&self.name), &self.holder, self.ttl)
            .await?;
        Ok(!held.is_empty())
    }

    /// Gives the lease up (clean shutdown).
    pub async fn release(&self) -> Result<(), StorageError> {
        self.leases
            .release(std::slice::from_ref(&self.name), &self.holder)
            .await
    }
}
