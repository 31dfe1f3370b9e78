//! Time partitions of `events` and `event_ids` on PostgreSQL (migration
//! 0012): made ahead of time, dropped whole when their time has passed.
//!
//! # Layout
//!
//! Each table is partitioned by `ingested_at` into 7-day spans that start
//! on Mondays (UTC), one partition per span named after its first day
//! (`events_p20261130`: Monday 30 November 2026 up to, not including,
//! the next Monday), plus the DEFAULT partition (`events_default`), which
//! holds the rows stored before the migration and any row no span covers.
//!
//! # Promises
//!
//! * [`Partitions::ensure`] makes the spans of the current week and the
//!   next [`SPANS_AHEAD`] weeks. It runs at start-up and from
//!   housekeeping, serialized across replicas by an advisory lock; so
//!   rows land in a span of their own even when a pass is missed for two
//!   weeks. A span whose rows already sit in the default partition (made
//!   too late) is not made: its rows stay there and are removed by row
//!   when they are old.
//! * [`Partitions::drop_before`] removes every span that ends at or
//!   before the cutoff, whole: detached from its table in one short
//!   transaction (no scan), then counted, dropped and taken off the
//!   table's counter in another. A span detached by a pass that stopped
//!   halfway is finished by the next. Then rows of the default partition
//!   older than the cutoff are deleted in chunks. So a row lives until its
//!   whole span is older than the cutoff: up to 7 days longer than the
//!   limit, never shorter.
//! * DDL waits at most 5 s for its table lock (readers and
//!   the ingest writer hold weaker locks for milliseconds); a pass that
//!   could not take it fails and is retried by the next one, rather than
//!   queueing every reader behind it.
//! * Only tables named by this module's pattern are touched.

use jiff::Timestamp;
use jiff::civil::Date;
use sqlx::PgPool;

use super::StorageError;

/// Weeks made ahead of the current one.
pub const SPANS_AHEAD: i64 = 2;
/// How long partition DDL waits for its lock before giving up: 5 s.
const SET_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '5s'";
/// The key of the advisory lock partition maintenance holds ("nudge-pt").
const PARTITION_LOCK: i64 = 0x6e75_6467_652d_7074;
/// Rows one delete of old default-partition rows removes.
const DELETE_CHUNK: i64 = 5000;
const DAY_MS: i64 = 86_400_000;
const SPAN_DAYS: i64 = 7;
/// 1970-01-01 was a Thursday: Mondays are 3 days before a multiple of 7.
const MONDAY_OFFSET_DAYS: i64 = 3;

/// A time-partitioned table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionedTable {
    Events,
    EventIds,
}

impl PartitionedTable {
    pub const ALL: [PartitionedTable; 2] = [PartitionedTable::Events, PartitionedTable::EventIds];

    /// The table's name, also the prefix of its partitions' names.
    pub fn name(self) -> &'static str {
        match self {
            PartitionedTable::Events => "events",
            PartitionedTable::EventIds => "event_ids",
        }
    }

    /// The row of `counters` that counts the table's rows.
    fn counter(self) -> &'static str {
        self.name()
    }
}

/// One 7-day span: `[start_ms, start_ms + 7 days)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// Days since 1970-01-01 of its first day (a Monday).
    first_day: i64,
}

impl Span {
    /// The span holding `at`.
    pub fn of(at: Timestamp) -> Span {
        let day = at.as_millisecond().div_euclid(DAY_MS);
        let index = (day + MONDAY_OFFSET_DAYS).div_euclid(SPAN_DAYS);
        Span {
            first_day: index * SPAN_DAYS - MONDAY_OFFSET_DAYS,
        }
    }

    fn next(self, spans: i64) -> Span {
        Span {
            first_day: self.first_day + spans * SPAN_DAYS,
        }
    }

    fn start_ms(self) -> i64 {
        self.first_day * DAY_MS
    }

    fn end_ms(self) -> i64 {
        (self.first_day + SPAN_DAYS) * DAY_MS
    }

    fn first_date(self) -> Option<Date> {
        Timestamp::from_millisecond(self.start_ms())
            .ok()
            .map(|at| at.to_zoned(jiff::tz::TimeZone::UTC).date())
    }

    /// `events_p20261130`.
    fn table_name(self, table: PartitionedTable) -> Option<String> {
        let date = self.first_date()?;
        Some(format!("{}_p{}", table.name(), date.strftime("%Y%m%d")))
    }

    /// The span a partition named by [`Span::table_name`] covers.
    fn from_table_name(table: PartitionedTable, name: &str) -> Option<Span> {
        let digits = name.strip_prefix(table.name())?.strip_prefix("_p")?;
        if digits.len() != 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let date = Date::strptime("%Y%m%d", digits).ok()?;
        let at = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
        let span = Span::of(at);
        (span.table_name(table).as_deref() == Some(name)).then_some(span)
    }
}

/// Partition maintenance over a PostgreSQL pool.
pub struct Partitions<'a> {
    pool: &'a PgPool,
}

impl<'a> Partitions<'a> {
    pub fn new(pool: &'a PgPool) -> Self {
        Partitions { pool }
    }

    /// Makes the spans from `now`'s through [`SPANS_AHEAD`] weeks later
    /// for every table; how many it made.
    pub async fn ensure(&self, now: Timestamp) -> Result<u64, StorageError> {
        let mut made = 0;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        set_lock_timeout(&mut tx).await?;
        for table in PartitionedTable::ALL {
            let current = Span::of(now);
            for ahead in 0..=SPANS_AHEAD {
                let span = current.next(ahead);
                let Some(name) = span.table_name(table) else {
                    continue;
                };
                if relation_exists(&mut tx, &name).await? {
                    continue;
                }
                // Rows of this span already in the default partition would
                // make the CREATE fail (and it would scan for them anyway):
                // such a span stays in the default partition.
                let stranded: Option<i32> = sqlx::query_scalar(safe(format!(
                    "SELECT 1 FROM {}_default WHERE ingested_at >= $1 AND ingested_at < $2 LIMIT 1",
                    table.name()
                )))
                .bind(span.start_ms())
                .bind(span.end_ms())
                .fetch_optional(&mut *tx)
                .await?;
                if stranded.is_some() {
                    tracing::warn!(
                        partition = %name,
                        "rows of this span are already in the default partition; the span stays there"
                    );
                    continue;
                }
                sqlx::raw_sql(safe(format!(
                    "CREATE TABLE {name} PARTITION OF {} FOR VALUES FROM ({}) TO ({})",
                    table.name(),
                    span.start_ms(),
                    span.end_ms()
                )))
                .execute(&mut *tx)
                .await?;
                made += 1;
            }
        }
        tx.commit().await?;
        Ok(made)
    }

    /// Removes `table`'s rows ingested before `cutoff` as the module doc
    /// says: whole spans, then old rows of the default partition; how
    /// many rows.
    pub async fn drop_before(
        &self,
        table: PartitionedTable,
        cutoff: Timestamp,
    ) -> Result<u64, StorageError> {
        let cutoff_ms = cutoff.as_millisecond();
        for (name, span) in self.spans(table, true).await? {
            if span.end_ms() <= cutoff_ms {
                let mut tx = self.pool.begin().await?;
                set_lock_timeout(&mut tx).await?;
                sqlx::raw_sql(safe(format!(
                    "ALTER TABLE {} DETACH PARTITION {name}",
                    table.name()
                )))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        let mut removed = 0;
        // Every detached span: this pass's, and any a stopped pass left.
        for (name, _) in self.spans(table, false).await? {
            let mut tx = self.pool.begin().await?;
            set_lock_timeout(&mut tx).await?;
            let rows: i64 = sqlx::query_scalar(safe(format!("SELECT count(*) FROM {name}")))
                .fetch_one(&mut *tx)
                .await?;
            sqlx::raw_sql(safe(format!("DROP TABLE {name}")))
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE counters SET value = value - $1 WHERE name = $2")
                .bind(rows)
                .bind(table.counter())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            removed += u64::try_from(rows).unwrap_or(0);
        }
        loop {
            let mut tx = self.pool.begin().await?;
            let deleted = sqlx::query(safe(format!(
                "DELETE FROM {0}_default WHERE ctid IN \
                   (SELECT ctid FROM {0}_default WHERE ingested_at < $1 LIMIT $2)",
                table.name()
            )))
            .bind(cutoff_ms)
            .bind(DELETE_CHUNK)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if deleted > 0 {
                sqlx::query("UPDATE counters SET value = value - $1 WHERE name = $2")
                    .bind(i64::try_from(deleted).unwrap_or(i64::MAX))
                    .bind(table.counter())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            removed += deleted;
            if deleted == 0 {
                return Ok(removed);
            }
        }
    }

    /// `table`'s span partitions that are attached (`attached`) or
    /// detached ones left by [`Self::drop_before`], oldest first.
    pub async fn spans(
        &self,
        table: PartitionedTable,
        attached: bool,
    ) -> Result<Vec<(String, Span)>, StorageError> {
        let names: Vec<String> = if attached {
            sqlx::query_scalar(
                "SELECT child.relname::text FROM pg_inherits \
                   JOIN pg_class child ON child.oid = pg_inherits.inhrelid \
                   WHERE pg_inherits.inhparent = to_regclass($1)",
            )
            .bind(table.name())
            .fetch_all(self.pool)
            .await?
        } else {
            sqlx::query_scalar(
                "SELECT relname::text FROM pg_class \
                   WHERE relkind = 'r' AND NOT relispartition \
                     AND relnamespace = current_schema()::regnamespace \
                     AND starts_with(relname::text, $1)",
            )
            .bind(format!("{}_p", table.name()))
            .fetch_all(self.pool)
            .await?
        };
        let mut spans: Vec<(String, Span)> = names
            .into_iter()
            .filter_map(|name| Span::from_table_name(table, &name).map(|span| (name, span)))
            .collect();
        spans.sort_by_key(|(_, span)| *span);
        Ok(spans)
    }
}

/// SQL with table names in it. Every name is made here: a table's from
/// [`PartitionedTable::name`], a span's from it and the span's digits
/// (`Span::table_name`; names read back from the catalog are used only
/// once [`Span::from_table_name`] made them again), so nothing from
/// outside reaches the text.
fn safe(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

async fn set_lock_timeout(tx: &mut sqlx::PgConnection) -> Result<(), StorageError> {
    sqlx::raw_sql(SET_LOCK_TIMEOUT).execute(tx).await?;
    Ok(())
}

async fn relation_exists(tx: &mut sqlx::PgConnection, name: &str) -> Result<bool, StorageError> {
    let found: Option<bool> = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_optional(tx)
        .await?;
    Ok(found.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn spans_are_weeks_from_monday_utc() {
        // Friday 4 December 2026 is in the week of Monday 30 November.
        let span = Span::of(at("2026-12-04T11:00:00Z"));
        assert_eq!(
            span.table_name(PartitionedTable::Events).as_deref(),
            Some("events_p20261130")
        );
        assert_eq!(span.start_ms(), at("2026-11-30T00:00:00Z").as_millisecond());
        assert_eq!(span.end_ms(), at("2026-12-07T00:00:00Z").as_millisecond());
        // The last millisecond of Sunday is still in it; Monday 00:00 is not.
        assert_eq!(Span::of(at("2026-12-06T23:59:59.999Z")), span);
        assert_eq!(Span::of(at("2026-12-07T00:00:00Z")), span.next(1));
        // Before 1970 too (Monday 29 December 1969).
        assert_eq!(
            Span::of(at("1970-01-01T00:00:00Z"))
                .table_name(PartitionedTable::EventIds)
                .as_deref(),
            Some("event_ids_p19691229")
        );
    }

    #[test]
    fn only_this_modules_names_are_spans() {
        let span = Span::of(at("2026-12-04T11:00:00Z"));
        assert_eq!(
            Span::from_table_name(PartitionedTable::Events, "events_p20261130"),
            Some(span)
        );
        for other in [
            "events_default",
            "events_p2026113",
            "events_p20261201", // a Tuesday: not a span's first day
            "events_p2026113x",
            "event_ids_p20261130",
            "events_p20261130_old",
        ] {
            assert_eq!(
                Span::from_table_name(PartitionedTable::Events, other),
                None,
                "{other}"
            );
        }
    }
}
