//! Events, the dedupe window, profiles and erasure tombstones in SQL.
//!
//! # Tables (migration 0001; on PostgreSQL `events` and `event_ids` are
//! partitioned by week since migration 0012, see `partitions`)
//!
//! | table | key | what |
//! |---|---|---|
//! | `events` | `seq` (ingest order) | `user_id`, `ingested_at`, the [`Event`] as deflated JSON (`payload`) |
//! | `event_ids` | event id | `ingested_at`: the dedupe window |
//! | `profiles` | user id | merged identify traits (JSON), `updated_at` |
//! | `erased_users` | user id | `erased_at`: the tombstone |
//! | `counters` | name | `events`, `event_ids`: sizes for the metrics |
//!
//! # Promises
//!
//! * **All of an ingest call commits together, or none of it.** Events,
//!   their dedupe entries, profile merges and counters are one
//!   transaction; a crash leaves no event without its dedupe entry and no
//!   entry without its event. Calls that arrive while a transaction runs
//!   share the next one (group commit by one writer task: one commit and
//!   one fsync for many agents' batches), each answered with its own
//!   outcome; when that transaction fails, every call in it fails.
//! * **Idempotent by id** while the id is in the dedupe window: an id
//!   already in `event_ids` is a duplicate (checked under the writer lock,
//!   which is what keeps an id once: on PostgreSQL the table's primary key
//!   is (id, ingested_at), unique within a week's partition only), so a
//!   resend, or the same id twice in one call, is stored once and reported
//!   as a duplicate.
//! * **Durable before it returns**: `ingest` returns after the commit
//!   (SQLite: WAL with `synchronous = FULL`; PostgreSQL: the commit), so a
//!   caller may ack. A duplicate points at an event that committed earlier.
//! * **Feed order is commit order.** Writers are serialized (a mutex in the
//!   process, and on PostgreSQL a transaction-scoped advisory lock across
//!   processes), so an event with a higher `seq` never commits before one
//!   with a lower `seq`, and a reader tailing `seq > cursor` misses
//!   nothing. `seq` is never reused.
//! * **Erasure**: [`EventStore::erase_user`] commits the tombstone under the
//!   same writer lock before it deletes anything, so an ingest either ran
//!   before (its events are deleted with the rest) or sees the tombstone
//!   and drops the user's events, reporting them as
//!   [`IngestOutcome::erased`]. Only `user_id` is checked.
//! * Retention and the dedupe window delete in chunks, so ingest waits at
//!   most one chunk; on PostgreSQL they drop whole weekly partitions
//!   instead (see `partitions`), deleting rows only from the default one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use sqlx::{QueryBuilder, Row};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::StorageError;
use super::database::{Database, Engine, Pool, begin_write, with_pool};
use super::partitions::{PartitionedTable, Partitions};
use super::payload;
use super::tombstones::{distinct, lock_user_for_erasure};
use super::wakeups::{EVENTS_CHANNEL, Listening, listen};
use crate::event::{
    Cursor, ErasedEvents, Event, EventBody, EventPage, FeedPartition, IngestOutcome, JsonObject,
    Profile,
};

/// The key of the advisory lock PostgreSQL writers hold ("nudge-ev").
const WRITE_LOCK: i64 = 0x6e75_6467_652d_6576;
/// Rows one retention, dedupe or erase statement deletes.
const DELETE_CHUNK: i64 = 5000;
/// Rows per multi-row statement: far below both engines' bind limits
/// (SQLite 32,766 variables, PostgreSQL 65,535) at 4 columns a row.
const INSERT_CHUNK: usize = 1000;

/// The events half of the storage. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    shared: Shared,
    /// On PostgreSQL, wakes this process's feed readers when another
    /// process stored events (see `wakeups`); `None` on SQLite.
    _listening: Option<Arc<Listening>>,
    /// Ingest calls queue here for the group-commit writer (see
    /// [`EventStore::ingest`]).
    submit: mpsc::Sender<Submission>,
}

/// What the store and its writer task both hold. The writer holds no
/// `submit` sender, so it ends once every [`EventStore`] is gone.
#[derive(Clone)]
struct Shared {
    database: Database,
    /// Serializes this process's writers (see the module doc).
    write: Arc<Mutex<()>>,
    /// Bumped after every commit that stored events, so feed readers
    /// ([`EventStore::appended`]) wake at once instead of polling.
    appended: Arc<watch::Sender<u64>>,
}

/// One page of the partitioned feed, oldest first.
#[derive(Debug, Default)]
pub struct FeedPage {
    pub events: Vec<Event>,
    /// For each event, its feed position.
    pub cursors: Vec<Cursor>,
    /// For each event, the partition it was stored in.
    pub partitions: Vec<FeedPartition>,
    /// The last event's position; `None` for an empty page.
    pub next: Option<Cursor>,
}

/// One ingest call waiting for the writer.
struct Submission {
    events: Vec<Event>,
    /// The events' JSON, encoded by the caller (in parallel with others).
    encoded: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<IngestOutcome, StorageError>>,
}

/// One event ready to insert, and the call it came with.
struct Pending<'a> {
    call: usize,
    event: &'a Event,
    json: &'a [u8],
}

/// Events one group commit takes at most: calls keep joining a group
/// until it holds this many (a call is never split).
const GROUP_MAX_EVENTS: usize = 10_000;

impl EventStore {
    /// The store over `database`, and its writer task (spawned here: call
    /// inside a tokio runtime).
    pub(super) fn new(database: Database) -> Self {
        let shared = Shared {
            database,
            write: Arc::new(Mutex::new(())),
            appended: Arc::new(watch::channel(0).0),
        };
        let (submit, queue) = mpsc::channel(1024);
        tokio::spawn(write_groups(shared.clone(), queue));
        let appended = Arc::clone(&shared.appended);
        let listening = listen(&shared.database, EVENTS_CHANNEL, move || {
            appended.send_modify(|count| *count = count.wrapping_add(1));
        });
        EventStore {
            shared,
            submit,
            _listening: listening.map(Arc::new),
        }
    }

    /// The database this store is over (for the other event tables, e.g.
    /// `parked`).
    pub(super) fn database(&self) -> &Database {
        &self.shared.database
    }

    /// A receiver that changes whenever this process stored new events:
    /// feed readers wait on it between passes.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.shared.appended.subscribe()
    }

    /// Stores the `events` not stored before (by id), durably, and says
    /// what happened to each. Ids repeated inside `events` count once.
    ///
    /// Group commit: calls that arrive while a transaction runs wait for
    /// the next one and share it (one commit, one fsync), each getting its
    /// own outcome. A call whose caller goes away is still committed, so a
    /// resend finds it as a duplicate.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, StorageError> {
        if events.is_empty() {
            return Ok(IngestOutcome::default());
        }
        // Encoded here, not in the writer: callers run in parallel, the
        // writer is one task.
        let encoded = events
            .iter()
            .map(payload::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        let closed = || StorageError::Unavailable("the event store is closed".to_owned());
        self.submit
            .send(Submission {
                events,
                encoded,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Every user's events in ingest order, at most `limit`, starting after
    /// `after`: the feed the engine and the analytics tail. `next` is set
    /// even after a short page (more events arrive later).
    pub async fn events_after(
        &self,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<EventPage, StorageError> {
        let _timer = self.shared.database.metrics().time("events_after");
        let start = cursor_value(after);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Vec<u8>)> = with_pool!(self.shared.database, pool => {
            sqlx::query_as("SELECT seq, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(start)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        let (events, cursors) = decode_rows(rows)?;
        Ok(EventPage {
            next: cursors.last().copied(),
            events,
            cursors,
        })
    }

    /// The events of `partitions` after `after`, in ingest order, at most
    /// `limit`: the page a replica that leases those partitions plans.
    /// `None` means every partition (one replica holds them all: no
    /// filter).
    pub async fn partition_events_after(
        &self,
        partitions: Option<&[FeedPartition]>,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<FeedPage, StorageError> {
        let _timer = self.shared.database.metrics().time("events_after");
        if partitions.is_some_and(<[FeedPartition]>::is_empty) {
            return Ok(FeedPage::default());
        }
        let start = cursor_value(after);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Vec<u8>, i16)> = with_pool!(self.shared.database, pool => {
            let mut query =
                QueryBuilder::new("SELECT seq, payload, feed_partition FROM events WHERE seq > ");
            query.push_bind(start);
            if let Some(partitions) = partitions {
                query.push(" AND feed_partition IN (");
                let mut list = query.separated(", ");
                for partition in partitions {
                    list.push_bind(i16::try_from(partition.0).unwrap_or(0));
                }
                query.push(")");
            }
            query.push(" ORDER BY seq LIMIT ");
            query.push_bind(limit);
            query.build_query_as().fetch_all(pool).await?
        });
        let partitions = rows
            .iter()
            .map(|(_, _, partition)| FeedPartition(u16::try_from(*partition).unwrap_or(0)))
            .collect();
        let (events, cursors) = decode_rows(
            rows.into_iter()
                .map(|(seq, payload, _)| (seq, payload))
                .collect(),
        )?;
        Ok(FeedPage {
            next: cursors.last().copied(),
            events,
            cursors,
            partitions,
        })
    }

    /// The position of the newest stored event (`None` when there is none):
    /// how far behind a feed reader is.
    pub async fn last_cursor(&self) -> Result<Option<Cursor>, StorageError> {
        let newest: Option<i64> = with_pool!(self.shared.database, pool => {
            sqlx::query_scalar("SELECT max(seq) FROM events")
                .fetch_one(pool)
                .await?
        });
        Ok(newest.and_then(|seq| u64::try_from(seq).ok()).map(Cursor))
    }

    /// A user's events in ingest order, at most `limit`, starting after
    /// `after`; `next` is set only when more follow.
    pub async fn events_for_user(
        &self,
        user_id: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<EventPage, StorageError> {
        let _timer = self.shared.database.metrics().time("events_for_user");
        let start = cursor_value(after);
        // One more than asked: whether another page follows.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let rows: Vec<(i64, Vec<u8>)> = with_pool!(self.shared.database, pool => {
            sqlx::query_as(
                "SELECT seq, payload FROM events WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(user_id)
            .bind(start)
            .bind(fetch)
            .fetch_all(pool)
            .await?
        });
        let more = rows.len() > limit;
        let (events, cursors) = decode_rows(rows.into_iter().take(limit).collect())?;
        Ok(EventPage {
            next: if more { cursors.last().copied() } else { None },
            events,
            cursors,
        })
    }

    /// The merged identify traits of a user, if any identify was stored.
    pub async fn profile(&self, user_id: &str) -> Result<Option<Profile>, StorageError> {
        let row: Option<(String, String, i64)> = with_pool!(self.shared.database, pool => {
            sqlx::query_as("SELECT user_id, traits, updated_at FROM profiles WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(user, traits, at)| profile_from(user, &traits, at))
            .transpose()
    }

    /// Forgets dedupe entries of events ingested before `older_than` and
    /// returns how many it removed. The events themselves stay. On
    /// PostgreSQL whole 7-day partitions go (see `partitions`): an entry
    /// is kept until its week is older than `older_than`.
    pub async fn prune_dedupe(&self, older_than: Timestamp) -> Result<u64, StorageError> {
        if let Pool::Postgres(pool) = self.shared.database.pool() {
            let _timer = self.shared.database.metrics().time("prune_dedupe");
            return Partitions::new(pool)
                .drop_before(PartitionedTable::EventIds, older_than)
                .await;
        }
        let cutoff = older_than.as_millisecond();
        self.delete_in_chunks(
            "prune_dedupe",
            "DELETE FROM event_ids WHERE id IN \
                 (SELECT id FROM event_ids WHERE ingested_at < $1 LIMIT $2)",
            Bound::Before(cutoff),
            "event_ids",
        )
        .await
    }

    /// Retention: removes events ingested before `older_than`, oldest
    /// first, and returns how many. Profiles stay; dedupe entries follow
    /// their own window. On PostgreSQL whole 7-day partitions go (see
    /// `partitions`): an event is kept until its week is older than
    /// `older_than`.
    pub async fn prune_events(&self, older_than: Timestamp) -> Result<u64, StorageError> {
        if let Pool::Postgres(pool) = self.shared.database.pool() {
            let _timer = self.shared.database.metrics().time("prune_events");
            return Partitions::new(pool)
                .drop_before(PartitionedTable::Events, older_than)
                .await;
        }
        // `ingested_at` is our own clock and grows with `seq`, so the events
        // to remove are those before the first one inside the limit (a
        // clock step back only delays a removal). With none inside it, the
        // boundary is just past the newest event now: events stored while
        // this runs get higher positions and stay.
        let boundary: i64 = with_pool!(self.shared.database, pool => {
            sqlx::query_scalar(
                "SELECT COALESCE(\
                   (SELECT seq FROM events WHERE ingested_at >= $1 ORDER BY seq LIMIT 1), \
                   (SELECT max(seq) + 1 FROM events), \
                   0)",
            )
            .bind(older_than.as_millisecond())
            .fetch_one(pool)
            .await?
        });
        self.delete_in_chunks(
            "prune_events",
            "DELETE FROM events WHERE seq IN \
                 (SELECT seq FROM events WHERE seq < $1 ORDER BY seq LIMIT $2)",
            Bound::Before(boundary),
            "events",
        )
        .await
    }

    /// Makes the time partitions of the coming weeks (PostgreSQL; see
    /// `partitions`); how many it made. Nothing to do on SQLite.
    pub async fn ensure_partitions(&self, now: Timestamp) -> Result<u64, StorageError> {
        let Pool::Postgres(pool) = self.shared.database.pool() else {
            return Ok(0);
        };
        let _timer = self.shared.database.metrics().time("partitions_ensure");
        Partitions::new(pool).ensure(now).await
    }

    /// How many events are stored.
    pub async fn event_count(&self) -> Result<u64, StorageError> {
        self.counter("events").await
    }

    /// How many event ids the dedupe window remembers.
    pub async fn dedupe_count(&self) -> Result<u64, StorageError> {
        self.counter("event_ids").await
    }

    /// Erases a user (privacy): removes their events (by `user_id`) and
    /// profile, and leaves a tombstone (`erased_at` = `at`) so that their
    /// events ingested later are dropped. Dedupe entries stay: an id
    /// carries nothing about the user and ages out with the window.
    /// Idempotent; durable when it returns.
    pub async fn erase_user(
        &self,
        user_id: &str,
        at: Timestamp,
    ) -> Result<ErasedEvents, StorageError> {
        {
            let _guard = self.shared.write.lock().await;
            with_pool!(write self.shared.database, pool, engine => {
                let mut tx = begin_write(self.shared.database.metrics(), pool, engine).await?;
                if engine == Engine::Postgres {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(WRITE_LOCK)
                        .execute(&mut *tx)
                        .await?;
                }
                // Waits for the user's creating transactions in flight;
                // later ones see the tombstone (see `tombstones`).
                lock_user_for_erasure!(tx, engine, user_id);
                sqlx::query(
                    "INSERT INTO erased_users (user_id, erased_at) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user_id)
                .bind(at.as_millisecond())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            });
        }
        // No new event of the user can arrive (tombstone), so chunks may
        // let ingest run between them.
        let mut erased = ErasedEvents {
            events: self
                .delete_in_chunks(
                    "erase_user",
                    "DELETE FROM events WHERE seq IN \
                     (SELECT seq FROM events WHERE user_id = $1 ORDER BY seq LIMIT $2)",
                    Bound::User(user_id),
                    "events",
                )
                .await?,
            profile: false,
        };
        erased.profile = with_pool!(write self.shared.database, pool => {
            sqlx::query("DELETE FROM profiles WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
                > 0
        });
        Ok(erased)
    }

    /// When the user was erased, if a tombstone blocks their events.
    pub async fn erased_at(&self, user_id: &str) -> Result<Option<Timestamp>, StorageError> {
        let at: Option<i64> = with_pool!(self.shared.database, pool => {
            sqlx::query_scalar("SELECT erased_at FROM erased_users WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(at.map(|millis| Timestamp::from_millisecond(millis).unwrap_or(Timestamp::MAX)))
    }

    /// Removes the user's tombstone, so their events are stored again;
    /// `false` when there was none.
    pub async fn lift_erasure(&self, user_id: &str) -> Result<bool, StorageError> {
        let _guard = self.shared.write.lock().await;
        let lifted = with_pool!(write self.shared.database, pool => {
            sqlx::query("DELETE FROM erased_users WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(lifted > 0)
    }

    async fn counter(&self, name: &str) -> Result<u64, StorageError> {
        let value: Option<i64> = with_pool!(self.shared.database, pool => {
            sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(value.map_or(0, |value| u64::try_from(value).unwrap_or(0)))
    }

    /// Runs [`Self::delete_chunk`] until a chunk removes nothing; the total
    /// removed. Chunks, so ingest waits at most one of them.
    async fn delete_in_chunks(
        &self,
        operation: &'static str,
        sql: &'static str,
        bound: Bound<'_>,
        counter: &'static str,
    ) -> Result<u64, StorageError> {
        let mut removed = 0;
        loop {
            let count = self.delete_chunk(operation, sql, bound, counter).await?;
            removed += count;
            if count == 0 {
                return Ok(removed);
            }
        }
    }

    /// Runs one chunked `DELETE` (`$1` = `bound`, `$2` = the chunk size)
    /// and takes what it removed off `counter`, in one transaction under
    /// the writer lock.
    async fn delete_chunk(
        &self,
        operation: &'static str,
        sql: &'static str,
        bound: Bound<'_>,
        counter: &'static str,
    ) -> Result<u64, StorageError> {
        let _guard = self.shared.write.lock().await;
        let _timer = self.shared.database.metrics().time(operation);
        with_pool!(write self.shared.database, pool, engine => {
            let mut tx = begin_write(self.shared.database.metrics(), pool, engine).await?;
            let query = match bound {
                Bound::Before(value) => sqlx::query(sql).bind(value),
                Bound::User(user_id) => sqlx::query(sql).bind(user_id),
            };
            let removed = query
                .bind(DELETE_CHUNK)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if removed > 0 {
                sqlx::query("UPDATE counters SET value = value - $1 WHERE name = $2")
                    .bind(i64::try_from(removed).unwrap_or(i64::MAX))
                    .bind(counter)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(removed)
        })
    }
}

/// What a chunked delete's `$1` is: a time or position limit, or a user.
#[derive(Clone, Copy)]
enum Bound<'a> {
    Before(i64),
    User(&'a str),
}

/// The writer task: takes the calls queued so far (up to
/// [`GROUP_MAX_EVENTS`] events), commits them in one transaction, answers
/// each, and repeats until every [`EventStore`] is gone.
async fn write_groups(shared: Shared, mut queue: mpsc::Receiver<Submission>) {
    while let Some(first) = queue.recv().await {
        let mut count = first.events.len();
        let mut group = vec![first];
        while count < GROUP_MAX_EVENTS {
            match queue.try_recv() {
                Ok(next) => {
                    count += next.events.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        match write_group(&shared, &group).await {
            Ok(outcomes) => {
                for (submission, outcome) in group.into_iter().zip(outcomes) {
                    // A caller that went away needs no answer.
                    let _ = submission.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let message = error.to_string();
                for submission in group {
                    let _ = submission
                        .reply
                        .send(Err(StorageError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// One transaction for a group of calls; an outcome per call, in order.
async fn write_group(
    shared: &Shared,
    group: &[Submission],
) -> Result<Vec<IngestOutcome>, StorageError> {
    let rows: Vec<Pending<'_>> = group
        .iter()
        .enumerate()
        .flat_map(|(call, submission)| {
            submission
                .events
                .iter()
                .zip(&submission.encoded)
                .map(move |(event, json)| Pending {
                    call,
                    event,
                    json: json.as_slice(),
                })
        })
        .collect();
    let metrics = shared.database.metrics();
    let _guard = shared.write.lock().await;
    let _timer = metrics.time("ingest");
    with_pool!(write shared.database, pool, engine => {
        let mut tx = begin_write(metrics, pool, engine).await?;
        if engine == Engine::Postgres {
            // Every read of this transaction is by key, and an index
            // serves each; but the dedupe lookup below asks a partition
            // of `event_ids`, unique by (id, ingested_at), for hundreds
            // of ids, and until autovacuum has analyzed a partition
            // (a minute or more after it starts filling) PostgreSQL
            // cannot tell that an id is rare: it scanned the whole
            // partition per batch (36 ms at 358k events, growing with
            // it; `EXPLAIN ANALYZE` during `nudge-bench --only storage`).
            // So sequential scans are off for this transaction
            // (`set_config(…, true)` is `SET LOCAL`), in the same round
            // trip as the writer lock.
            sqlx::query("SELECT set_config('enable_seqscan', 'off', true), pg_advisory_xact_lock($1)")
                .bind(WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let mut outcomes = vec![IngestOutcome::default(); group.len()];

        // Tombstones first: an erased user's events are acknowledged
        // and dropped.
        let users: Vec<&str> = distinct(rows.iter().filter_map(|row| row.event.user_id.as_deref()));
        let mut erased_users = HashSet::new();
        for chunk in users.chunks(INSERT_CHUNK) {
            let mut query = QueryBuilder::new("SELECT user_id FROM erased_users WHERE user_id IN (");
            let mut list = query.separated(", ");
            for user in chunk {
                list.push_bind(*user);
            }
            query.push(")");
            let found: Vec<String> = query.build_query_scalar().fetch_all(&mut *tx).await?;
            erased_users.extend(found);
        }
        let mut seen = HashSet::new();
        let mut candidates = Vec::with_capacity(rows.len());
        for row in &rows {
            // An id seen earlier in this call or in an earlier call of
            // the group is a duplicate: that one commits with this one.
            if row.event.user_id.as_ref().is_some_and(|user| erased_users.contains(user)) {
                outcomes[row.call].erased += 1;
            } else if !seen.insert(row.event.id.as_str()) {
                outcomes[row.call].duplicates += 1;
            } else {
                candidates.push(row);
            }
        }

        // The dedupe entries decide which events are new. Asking for the
        // ids already stored returns only duplicates (usually none), and
        // nobody else inserts under the writer lock, so the inserts below
        // cannot conflict; if one ever did, the unique key fails the
        // whole transaction rather than storing an event twice.
        let mut stored_ids = HashSet::new();
        for chunk in candidates.chunks(INSERT_CHUNK) {
            let mut query = QueryBuilder::new("SELECT id FROM event_ids WHERE id IN (");
            let mut list = query.separated(", ");
            for row in chunk {
                list.push_bind(row.event.id.as_str());
            }
            query.push(")");
            let found: Vec<String> = query.build_query_scalar().fetch_all(&mut *tx).await?;
            stored_ids.extend(found);
        }
        let mut fresh: Vec<&Pending<'_>> = Vec::with_capacity(candidates.len());
        for row in candidates {
            if stored_ids.contains(&row.event.id) {
                outcomes[row.call].duplicates += 1;
            } else {
                outcomes[row.call].stored += 1;
                fresh.push(row);
            }
        }
        for chunk in fresh.chunks(INSERT_CHUNK) {
            let mut query = QueryBuilder::new("INSERT INTO event_ids (id, ingested_at) ");
            query.push_values(chunk, |mut values, row| {
                values
                    .push_bind(row.event.id.as_str())
                    .push_bind(row.event.ingested_at.as_millisecond());
            });
            query.build().execute(&mut *tx).await?;
        }

        for chunk in fresh.chunks(INSERT_CHUNK) {
            let mut query = QueryBuilder::new(
                "INSERT INTO events (user_id, ingested_at, payload, feed_partition) ",
            );
            query.push_values(chunk, |mut values, row| {
                values
                    .push_bind(row.event.user_id.as_deref())
                    .push_bind(row.event.ingested_at.as_millisecond())
                    .push_bind(row.json)
                    .push_bind(i16::try_from(FeedPartition::of(row.event).0).unwrap_or(0));
            });
            query.build().execute(&mut *tx).await?;
        }

        // Profiles: identify traits merged in ingest order.
        let identifies: Vec<(&str, &JsonObject, Timestamp)> = fresh
            .iter()
            .filter_map(|row| match (&row.event.user_id, &row.event.body) {
                (Some(user), EventBody::Identify { traits }) => {
                    Some((user.as_str(), traits, row.event.ingested_at))
                }
                _ => None,
            })
            .collect();
        if !identifies.is_empty() {
            let users = distinct(identifies.iter().map(|(user, _, _)| *user));
            let mut profiles: HashMap<String, Profile> = HashMap::new();
            for chunk in users.chunks(INSERT_CHUNK) {
                let mut query = QueryBuilder::new(
                    "SELECT user_id, traits, updated_at FROM profiles WHERE user_id IN (",
                );
                let mut list = query.separated(", ");
                for user in chunk {
                    list.push_bind(*user);
                }
                query.push(")");
                for row in query.build().fetch_all(&mut *tx).await? {
                    let profile = profile_from(
                        row.try_get("user_id")?,
                        &row.try_get::<String, _>("traits")?,
                        row.try_get("updated_at")?,
                    )?;
                    profiles.insert(profile.user_id.clone(), profile);
                }
            }
            for (user, traits, at) in identifies {
                let profile = profiles.entry(user.to_owned()).or_insert_with(|| Profile {
                    user_id: user.to_owned(),
                    traits: JsonObject::new(),
                    updated_at: at,
                });
                for (key, value) in traits {
                    profile.traits.insert(key.clone(), value.clone());
                }
                profile.updated_at = at;
            }
            let encoded: Vec<(String, String, i64)> = profiles
                .into_values()
                .map(|profile| {
                    Ok((
                        profile.user_id,
                        serde_json::to_string(&profile.traits)?,
                        profile.updated_at.as_millisecond(),
                    ))
                })
                .collect::<Result<_, StorageError>>()?;
            for chunk in encoded.chunks(INSERT_CHUNK) {
                let mut query = QueryBuilder::new("INSERT INTO profiles (user_id, traits, updated_at) ");
                query.push_values(chunk, |mut values, (user, traits, at)| {
                    values.push_bind(user.as_str()).push_bind(traits.as_str()).push_bind(*at);
                });
                query.push(
                    " ON CONFLICT (user_id) DO UPDATE SET traits = excluded.traits, updated_at = excluded.updated_at",
                );
                query.build().execute(&mut *tx).await?;
            }
        }

        let stored = i64::try_from(fresh.len()).unwrap_or(i64::MAX);
        if stored > 0 {
            sqlx::query("UPDATE counters SET value = value + $1 WHERE name IN ('events', 'event_ids')")
                .bind(stored)
                .execute(&mut *tx)
                .await?;
            if engine == Engine::Postgres {
                // Delivered at commit, to every process's listener: their
                // feed readers wake as this process's do below.
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(EVENTS_CHANNEL)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        if stored > 0 {
            shared.appended.send_modify(|count| *count = count.wrapping_add(1));
        }
        Ok(outcomes)
    })
}

fn cursor_value(after: Option<Cursor>) -> i64 {
    after.map_or(0, |cursor| i64::try_from(cursor.0).unwrap_or(i64::MAX))
}

fn decode_rows(rows: Vec<(i64, Vec<u8>)>) -> Result<(Vec<Event>, Vec<Cursor>), StorageError> {
    let mut events = Vec::with_capacity(rows.len());
    let mut cursors = Vec::with_capacity(rows.len());
    for (seq, stored) in rows {
        let seq = u64::try_from(seq)
            .map_err(|_| StorageError::Corrupt(format!("negative event sequence {seq}")))?;
        events.push(payload::decode(&stored)?);
        cursors.push(Cursor(seq));
    }
    Ok((events, cursors))
}

fn profile_from(user_id: String, traits: &str, updated_at: i64) -> Result<Profile, StorageError> {
    Ok(Profile {
        user_id,
        traits: serde_json::from_str(traits)?,
        updated_at: Timestamp::from_millisecond(updated_at).map_err(|error| {
            StorageError::Corrupt(format!("profile time {updated_at}: {error}"))
        })?,
    })
}
