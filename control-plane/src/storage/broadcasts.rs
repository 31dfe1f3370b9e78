//! Broadcasts in SQL (table `broadcasts`, migration 0017): one row per
//! broadcast id with its spec (JSON), state and fan-out progress.
//!
//! * **Created once per id**: an insert that conflicts reads the row back;
//!   the caller gets it when the spec is the same, a [`Conflict`] when not.
//! * **Progress moves only from where it was**: [`BroadcastTable::record_page`]
//!   updates a row only while it is open *and* its cursor is still the one
//!   the page started from, so a page planned twice (the timers' lease
//!   changing hands mid-page) is counted once, and a cancel wins over a
//!   page that was in flight.
//! * Due broadcasts are found through a partial index on the open rows.

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, with_pool};
use crate::broadcasts::{Broadcast, BroadcastSpec, BroadcastState, Conflict};

/// `SELECT <every column> FROM broadcasts <rest>`, as one literal.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT id, state, send_at_ms, body, cursor, scanned, recipients, notifications, \
             created_at_ms, started_at_ms, finished_at_ms FROM broadcasts ",
            $rest
        )
    };
}

type Row = (
    String,
    String,
    i64,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

/// What one page of a fan-out did, for [`BroadcastTable::record_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageDone {
    /// The cursor the page started after (`None`: the first page).
    pub from: Option<String>,
    /// The last user id the page looked at: the next page starts after it.
    pub to: Option<String>,
    pub scanned: u64,
    pub recipients: u64,
    pub notifications: u64,
    /// The audience has no users after `to`.
    pub last: bool,
}

/// What [`BroadcastTable::cancel`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// Cancelled now.
    Now(Broadcast),
    /// Cancelled before: unchanged.
    Closed(Broadcast),
    NotFound,
}

#[derive(Clone, Debug)]
pub struct BroadcastTable {
    database: Database,
}

impl BroadcastTable {
    pub(super) fn new(database: Database) -> Self {
        BroadcastTable { database }
    }

    /// Creates broadcast `id`, due at its `send_at` (or `now`); durable
    /// when it returns. `Ok((broadcast, true))` when created now,
    /// `Ok((broadcast, false))` when it existed with the same spec.
    pub async fn create(
        &self,
        id: &str,
        spec: &BroadcastSpec,
        now: Timestamp,
    ) -> Result<Result<(Broadcast, bool), Conflict>, StorageError> {
        let body = serde_json::to_string(spec)?;
        let due = spec.send_at.unwrap_or(now).as_millisecond();
        let inserted = with_pool!(write self.database, pool => {
            sqlx::query(
                "INSERT INTO broadcasts (id, state, send_at_ms, body, created_at_ms) \
                 VALUES ($1, 'scheduled', $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(due)
            .bind(&body)
            .bind(now.as_millisecond())
            .execute(pool)
            .await?
            .rows_affected()
        });
        let stored = self
            .get(id)
            .await?
            .ok_or_else(|| StorageError::Corrupt(format!("broadcast {id:?} vanished")))?;
        if inserted == 1 {
            return Ok(Ok((stored, true)));
        }
        if &stored.spec == spec {
            Ok(Ok((stored, false)))
        } else {
            Ok(Err(Conflict {
                id: id.to_owned(),
                existing: Box::new(stored),
            }))
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Broadcast>, StorageError> {
        let row: Option<Row> = with_pool!(self.database, pool => {
            sqlx::query_as(select!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(decode).transpose()
    }

    /// Up to `limit` broadcasts, newest first, created before the one with
    /// id `before` (a page's last).
    pub async fn list(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Broadcast>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Row> = with_pool!(self.database, pool => {
            match before {
                None => sqlx::query_as(select!(
                    "ORDER BY created_at_ms DESC, id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(pool)
                .await?,
                Some(before) => sqlx::query_as(select!(
                    "b WHERE EXISTS (\
                       SELECT 1 FROM broadcasts p WHERE p.id = $1 AND \
                       (b.created_at_ms < p.created_at_ms OR \
                        (b.created_at_ms = p.created_at_ms AND b.id < p.id))) \
                     ORDER BY created_at_ms DESC, id DESC LIMIT $2"
                ))
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await?,
            }
        });
        rows.into_iter().map(decode).collect()
    }

    /// Cancels broadcast `id` unless it is cancelled already: one still
    /// open stops fanning out, and one done (or open) recalls its
    /// deliveries still held (see [`crate::send_check`]).
    pub async fn cancel(&self, id: &str, now: Timestamp) -> Result<Cancelled, StorageError> {
        let changed = with_pool!(write self.database, pool => {
            sqlx::query(
                "UPDATE broadcasts SET state = 'cancelled', finished_at_ms = $2 \
                 WHERE id = $1 AND state IN ('scheduled', 'running', 'done')",
            )
            .bind(id)
            .bind(now.as_millisecond())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(match self.get(id).await? {
            None => Cancelled::NotFound,
            Some(broadcast) if changed == 1 => Cancelled::Now(broadcast),
            Some(broadcast) => Cancelled::Closed(broadcast),
        })
    }

    /// Up to `limit` open broadcasts due at `now`, due first first.
    pub async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Broadcast>, StorageError> {
        let rows: Vec<Row> = with_pool!(self.database, pool => {
            sqlx::query_as(select!(
                "WHERE state IN ('scheduled', 'running') AND send_at_ms <= $1 \
                 ORDER BY send_at_ms, id LIMIT $2"
            ))
            .bind(now.as_millisecond())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(decode).collect()
    }

    /// Records a page of `id`'s fan-out (see the module doc); `false` when
    /// the broadcast was cancelled, or another page was recorded from the
    /// same cursor, meanwhile.
    pub async fn record_page(
        &self,
        id: &str,
        page: &PageDone,
        now: Timestamp,
    ) -> Result<bool, StorageError> {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let (state, finished) = if page.last {
            ("done", Some(now.as_millisecond()))
        } else {
            ("running", None)
        };
        let changed = with_pool!(write self.database, pool => {
            sqlx::query(
                "UPDATE broadcasts SET cursor = $2, scanned = scanned + $3, \
                   recipients = recipients + $4, notifications = notifications + $5, \
                   state = $6, started_at_ms = COALESCE(started_at_ms, $7), finished_at_ms = $8 \
                 WHERE id = $1 AND state IN ('scheduled', 'running') \
                   AND COALESCE(cursor, '') = $9",
            )
            .bind(id)
            .bind(page.to.as_deref().or(page.from.as_deref()))
            .bind(count(page.scanned))
            .bind(count(page.recipients))
            .bind(count(page.notifications))
            .bind(state)
            .bind(now.as_millisecond())
            .bind(finished)
            .bind(page.from.as_deref().unwrap_or(""))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }
}

fn decode(row: Row) -> Result<Broadcast, StorageError> {
    let (
        id,
        state,
        due,
        body,
        cursor,
        scanned,
        recipients,
        notifications,
        created,
        started,
        finished,
    ) = row;
    let time = |millis: i64| {
        Timestamp::from_millisecond(millis)
            .map_err(|error| StorageError::Corrupt(format!("broadcast {id:?}'s time: {error}")))
    };
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Broadcast {
        spec: serde_json::from_str(&body)
            .map_err(|error| StorageError::Corrupt(format!("broadcast {id:?}'s spec: {error}")))?,
        state: BroadcastState::parse(&state)
            .ok_or_else(|| StorageError::Corrupt(format!("broadcast {id:?}'s state {state:?}")))?,
        due_at: time(due)?,
        scanned: count(scanned),
        recipients: count(recipients),
        notifications: count(notifications),
        cursor,
        created_at: time(created)?,
        started_at: started.map(time).transpose()?,
        finished_at: finished.map(time).transpose()?,
        id,
    })
}
