//! The event store's conformance suite: every case runs on SQLite and on
//! PostgreSQL (`support::Backend`), against the same promises
//! (`control-plane/src/storage/events.rs`): idempotent ingest by id,
//! feed and per-user order, profiles, the dedupe window, erasure with
//! tombstones, retention, counters, and data that outlives a reopen.

#[macro_use]
mod support;

use jiff::Timestamp;
use nudge_control_plane::event::{ErasedEvents, Event, EventBody, IngestOutcome, JsonObject};
use nudge_control_plane::storage::{EventStore, StorageMetrics, Stores};
use serde_json::json;
use support::{Backend, fresh_settings};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn track(id: &str, user: &str, ingested_at: Timestamp) -> Event {
    Event {
        id: id.to_owned(),
        user_id: Some(user.to_owned()),
        anonymous_id: None,
        timestamp: None,
        sent_at: None,
        received_at: None,
        ingested_at,
        agent_id: "agent".to_owned(),
        write_key: None,
        context: JsonObject::new(),
        integrations: JsonObject::new(),
        body: EventBody::Track {
            event: "Clicked".to_owned(),
            properties: JsonObject::new(),
        },
    }
}

fn identify(id: &str, user: &str, traits: serde_json::Value, ingested_at: Timestamp) -> Event {
    let serde_json::Value::Object(traits) = traits else {
        panic!("traits must be an object")
    };
    Event {
        body: EventBody::Identify { traits },
        ..track(id, user, ingested_at)
    }
}

/// A store on a fresh database, and the dir that must outlive it.
async fn open(backend: Backend) -> (tempfile::TempDir, EventStore) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    (dir, stores.events)
}

async fn ids_for(store: &EventStore, user: &str) -> Vec<String> {
    store
        .events_for_user(user, 1000, None)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|event| event.id)
        .collect()
}

async fn resending_a_batch_stores_it_once(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let batch = vec![track("a", "u", at(1)), track("b", "u", at(1))];
    let first = store.ingest(batch.clone()).await.unwrap();
    assert_eq!((first.stored, first.duplicates), (2, 0));
    let second = store.ingest(batch).await.unwrap();
    assert_eq!((second.stored, second.duplicates), (0, 2));
    assert_eq!(store.event_count().await.unwrap(), 2);
    assert_eq!(store.dedupe_count().await.unwrap(), 2);
}

async fn an_id_repeated_inside_one_batch_counts_once(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let outcome = store
        .ingest(vec![
            track("a", "u", at(1)),
            track("a", "u", at(1)),
            track("b", "u", at(1)),
        ])
        .await
        .unwrap();
    assert_eq!((outcome.stored, outcome.duplicates), (2, 1));
    assert_eq!(ids_for(&store, "u").await, ["a", "b"]);
}

async fn concurrent_overlapping_batches_store_each_id_once(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                // Every task sends ids 0..50 plus its own 10.
                let mut batch: Vec<Event> = (0..50)
                    .map(|i| track(&format!("shared-{i}"), "u", at(1)))
                    .collect();
                batch.extend((0..10).map(|i| track(&format!("own-{task}-{i}"), "u", at(1))));
                store.ingest(batch).await.unwrap()
            })
        })
        .collect();
    let mut outcomes: Vec<IngestOutcome> = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let stored: u32 = outcomes.iter().map(|outcome| outcome.stored).sum();
    let duplicates: u32 = outcomes.iter().map(|outcome| outcome.duplicates).sum();
    assert_eq!(stored, 50 + 8 * 10);
    assert_eq!(duplicates, 7 * 50);
    assert_eq!(store.event_count().await.unwrap(), 130);
    let mut ids = ids_for(&store, "u").await;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 130);
}

async fn pages_a_users_events_in_ingest_order(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let batch: Vec<Event> = (0..5)
        .map(|i| track(&format!("e{i}"), "u", at(1)))
        .collect();
    store.ingest(batch).await.unwrap();
    store
        .ingest(vec![
            track("other", "u2", at(1)),
            track("u-prefix", "u\u{1}", at(1)),
        ])
        .await
        .unwrap();
    let page_ids = |page: &nudge_control_plane::event::EventPage| -> Vec<String> {
        page.events.iter().map(|e| e.id.clone()).collect()
    };
    let first = store.events_for_user("u", 2, None).await.unwrap();
    assert_eq!(page_ids(&first), ["e0", "e1"]);
    let second = store.events_for_user("u", 2, first.next).await.unwrap();
    assert_eq!(page_ids(&second), ["e2", "e3"]);
    let last = store.events_for_user("u", 2, second.next).await.unwrap();
    assert_eq!(page_ids(&last), ["e4"]);
    assert_eq!(last.next, None);
    let exact = store.events_for_user("u", 5, None).await.unwrap();
    assert_eq!((exact.events.len(), exact.next), (5, None));
    assert!(
        store
            .events_for_user("nobody", 10, None)
            .await
            .unwrap()
            .events
            .is_empty()
    );
}

async fn the_feed_returns_every_event_once_in_ingest_order(backend: Backend) {
    let (_dir, store) = open(backend).await;
    assert_eq!(store.last_cursor().await.unwrap(), None);
    for batch in 0..4 {
        let events = (0..25)
            .map(|i| track(&format!("b{batch}-{i}"), &format!("u{}", i % 3), at(1)))
            .collect();
        store.ingest(events).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.events_after(after, 30).await.unwrap();
        if page.events.is_empty() {
            assert_eq!(page.next, None, "an empty page has no cursor");
            break;
        }
        assert_eq!(page.cursors.len(), page.events.len());
        assert!(page.cursors.windows(2).all(|pair| pair[0] < pair[1]));
        seen.extend(page.events.into_iter().map(|event| event.id));
        after = page.next;
    }
    let expected: Vec<String> = (0..4)
        .flat_map(|batch| (0..25).map(move |i| format!("b{batch}-{i}")))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(store.last_cursor().await.unwrap(), after);
}

async fn identify_traits_merge_last_write_wins(backend: Backend) {
    let (_dir, store) = open(backend).await;
    store
        .ingest(vec![identify(
            "i1",
            "u",
            json!({"name": "Ada", "plan": "free"}),
            at(10),
        )])
        .await
        .unwrap();
    // Two identifies in one batch apply in order.
    store
        .ingest(vec![
            identify("i2", "u", json!({"plan": "team"}), at(20)),
            identify("i3", "u", json!({"plan": "pro", "seats": 3}), at(21)),
        ])
        .await
        .unwrap();
    let profile = store.profile("u").await.unwrap().unwrap();
    assert_eq!(
        serde_json::Value::Object(profile.traits),
        json!({"name": "Ada", "plan": "pro", "seats": 3})
    );
    assert_eq!(profile.updated_at, at(21));
    assert_eq!(store.profile("nobody").await.unwrap(), None);
    // A resent identify changes nothing.
    store
        .ingest(vec![identify("i1", "u", json!({"plan": "free"}), at(30))])
        .await
        .unwrap();
    let again = store.profile("u").await.unwrap().unwrap();
    assert_eq!(again.traits["plan"], json!("pro"));
}

async fn pruning_forgets_only_old_ids(backend: Backend) {
    let (_dir, store) = open(backend).await;
    store
        .ingest(vec![track("old", "u", at(100)), track("new", "u", at(200))])
        .await
        .unwrap();
    assert_eq!(store.prune_dedupe(at(150)).await.unwrap(), 1);
    assert_eq!(store.dedupe_count().await.unwrap(), 1);
    assert_eq!(store.event_count().await.unwrap(), 2, "events stay");
    // The documented limitation: an id resent after its window is new.
    let outcome = store
        .ingest(vec![track("old", "u", at(300)), track("new", "u", at(300))])
        .await
        .unwrap();
    assert_eq!((outcome.stored, outcome.duplicates), (1, 1));
    assert_eq!(store.prune_dedupe(at(150)).await.unwrap(), 0);
}

async fn reopening_keeps_events_and_dedupe_state(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let settings = fresh_settings(backend, dir.path()).await;
    {
        let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
            .await
            .unwrap();
        stores
            .events
            .ingest(vec![
                track("a", "u", at(1)),
                identify("b", "u", json!({"k": 1}), at(1)),
            ])
            .await
            .unwrap();
        stores.close().await.unwrap();
    }
    let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
        .await
        .unwrap();
    let store = &stores.events;
    assert_eq!(store.event_count().await.unwrap(), 2);
    let outcome = store
        .ingest(vec![track("a", "u", at(2)), track("c", "u", at(2))])
        .await
        .unwrap();
    assert_eq!((outcome.stored, outcome.duplicates), (1, 1));
    assert_eq!(
        ids_for(store, "u").await,
        ["a", "b", "c"],
        "the sequence continues after a reopen"
    );
    assert!(store.profile("u").await.unwrap().is_some());
}

async fn erasing_a_user_removes_their_events_and_profile_and_drops_later_ones(backend: Backend) {
    let (_dir, store) = open(backend).await;
    store
        .ingest(vec![
            track("a", "u", at(1)),
            identify("b", "u", json!({"email": "u@example.com"}), at(1)),
            track("c", "other", at(1)),
        ])
        .await
        .unwrap();
    let erased = store.erase_user("u", at(5)).await.unwrap();
    assert_eq!(
        erased,
        ErasedEvents {
            events: 2,
            profile: true
        }
    );
    assert!(ids_for(&store, "u").await.is_empty());
    assert_eq!(store.profile("u").await.unwrap(), None);
    assert_eq!(store.event_count().await.unwrap(), 1);
    assert_eq!(store.erased_at("u").await.unwrap(), Some(at(5)));
    assert_eq!(ids_for(&store, "other").await, ["c"]);

    let late = store
        .ingest(vec![track("d", "u", at(6)), track("e", "other", at(6))])
        .await
        .unwrap();
    assert_eq!((late.stored, late.duplicates, late.erased), (1, 0, 1));
    assert!(ids_for(&store, "u").await.is_empty());
    // Erasing again is harmless and keeps the first erase time.
    assert_eq!(
        store.erase_user("u", at(9)).await.unwrap(),
        ErasedEvents::default()
    );
    assert_eq!(store.erased_at("u").await.unwrap(), Some(at(5)));

    assert!(store.lift_erasure("u").await.unwrap());
    assert!(!store.lift_erasure("u").await.unwrap());
    assert_eq!(
        store
            .ingest(vec![track("f", "u", at(10))])
            .await
            .unwrap()
            .stored,
        1
    );
}

async fn erasing_the_newest_event_never_reuses_its_position(backend: Backend) {
    let (_dir, store) = open(backend).await;
    store
        .ingest(vec![track("a", "keep", at(1)), track("b", "gone", at(1))])
        .await
        .unwrap();
    let read = store.events_after(None, 10).await.unwrap();
    let cursor = read.next;
    store.erase_user("gone", at(2)).await.unwrap();
    store.ingest(vec![track("c", "keep", at(3))]).await.unwrap();
    // A reader that had seen "b" still finds "c" after its cursor.
    let after: Vec<String> = store
        .events_after(cursor, 10)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(after, ["c"]);
}

async fn pruning_events_removes_only_older_ones(backend: Backend) {
    let (_dir, store) = open(backend).await;
    store
        .ingest(vec![
            track("old1", "u", at(100)),
            track("old2", "v", at(149)),
            track("edge", "u", at(150)),
            track("new", "u", at(200)),
        ])
        .await
        .unwrap();
    assert_eq!(store.prune_events(at(150)).await.unwrap(), 2);
    let ids: Vec<String> = store
        .events_after(None, 10)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["edge", "new"]);
    assert_eq!(ids_for(&store, "u").await.len(), 2);
    assert!(ids_for(&store, "v").await.is_empty());
    assert_eq!(store.event_count().await.unwrap(), 2);
    assert_eq!(store.prune_events(at(150)).await.unwrap(), 0);
    assert_eq!(store.prune_events(at(1000)).await.unwrap(), 2);
    assert_eq!(store.event_count().await.unwrap(), 0);
}

async fn large_batches_cross_statement_chunks(backend: Backend) {
    let (_dir, store) = open(backend).await;
    // More rows than one multi-row statement carries.
    let batch: Vec<Event> = (0..2500)
        .map(|i| {
            identify(
                &format!("e{i}"),
                &format!("u{}", i % 1200),
                json!({"n": i}),
                at(1),
            )
        })
        .collect();
    let outcome = store.ingest(batch.clone()).await.unwrap();
    assert_eq!((outcome.stored, outcome.duplicates), (2500, 0));
    let again = store.ingest(batch).await.unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 2500));
    assert_eq!(store.event_count().await.unwrap(), 2500);
    let profile = store.profile("u7").await.unwrap().unwrap();
    // u7 got n = 7, 1207 and 2407: the last one wins.
    assert_eq!(profile.traits["n"], json!(2407));
}

/// Parked events (the engine's dead letters): once per feed position,
/// any text (a NUL among it) stored, paged oldest first.
async fn parked_events_are_kept_once_and_paged(backend: Backend) {
    use nudge_control_plane::event::Cursor;
    use nudge_control_plane::storage::ParkedEvent;
    let (_dir, store) = open(backend).await;
    let parked = |seq: u64, reason: &str| ParkedEvent {
        seq,
        event_id: format!("e{seq}"),
        user_id: Some("u\0v".to_owned()),
        kind: "invalid".to_owned(),
        reason: reason.to_owned(),
        parked_at: at(7),
    };
    assert!(
        store
            .park(Cursor(3), &parked(3, "type \"a\0b\" has a NUL"))
            .await
            .unwrap()
    );
    assert!(
        !store.park(Cursor(3), &parked(3, "again")).await.unwrap(),
        "once"
    );
    for seq in [9, 5] {
        assert!(store.park(Cursor(seq), &parked(seq, "bad")).await.unwrap());
    }
    let first = store.parked(None, 2).await.unwrap();
    let seqs: Vec<u64> = first.parked.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [3, 5]);
    assert_eq!(first.next, Some(5));
    assert_eq!(first.parked[0].reason, "type \"a\u{FFFD}b\" has a NUL");
    assert_eq!(first.parked[0].user_id.as_deref(), Some("u\u{FFFD}v"));
    assert_eq!(first.parked[0].parked_at, at(7));
    let rest = store.parked(first.next, 2).await.unwrap();
    assert_eq!(rest.parked.len(), 1);
    assert_eq!((rest.parked[0].seq, rest.next), (9, None));
}

on_both_engines!(
    resending_a_batch_stores_it_once,
    an_id_repeated_inside_one_batch_counts_once,
    concurrent_overlapping_batches_store_each_id_once,
    pages_a_users_events_in_ingest_order,
    the_feed_returns_every_event_once_in_ingest_order,
    identify_traits_merge_last_write_wins,
    pruning_forgets_only_old_ids,
    reopening_keeps_events_and_dedupe_state,
    erasing_a_user_removes_their_events_and_profile_and_drops_later_ones,
    erasing_the_newest_event_never_reuses_its_position,
    pruning_events_removes_only_older_ones,
    large_batches_cross_statement_chunks,
    parked_events_are_kept_once_and_paged,
);

#[test]
fn events_round_trip_through_json() {
    let event = identify("i", "u", json!({"a": [1, 2]}), at(5));
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], "identify");
    assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
}

/// Cross-process wakeups (`storage/wakeups.rs`): PostgreSQL only, where
/// several control planes share one database. Two `Stores` on one database
/// stand for two processes: each has its own pool and its own listener.
mod across_processes {
    use std::time::Duration;

    use nudge_control_plane::storage::{
        DatabaseLocation, DatabaseSettings, StorageMetrics, Stores,
    };
    use tokio::sync::watch;

    use super::support::{Backend, fresh_settings};
    use super::{at, track};

    /// Long enough for a loaded machine; only reached when a wakeup is
    /// missing, which is what these tests catch.
    const DEADLINE: Duration = Duration::from_secs(20);

    async fn open(settings: &DatabaseSettings, dir: &tempfile::TempDir) -> Stores {
        Stores::open(settings, dir.path(), StorageMetrics::new())
            .await
            .unwrap()
    }

    async fn woken(feed: &mut watch::Receiver<u64>, what: &str) {
        tokio::time::timeout(DEADLINE, feed.changed())
            .await
            .unwrap_or_else(|_| panic!("no wakeup: {what}"))
            .unwrap();
        feed.borrow_and_update();
    }

    /// A reader in process B and its feed signal, once B's listener is
    /// listening (it wakes once when it has connected).
    async fn listening_reader(
        settings: &DatabaseSettings,
        dir: &tempfile::TempDir,
    ) -> (Stores, watch::Receiver<u64>) {
        let reader = open(settings, dir).await;
        let mut feed = reader.events.appended();
        // It may have connected (and woken once) before `open` returned.
        if *feed.borrow_and_update() == 0 {
            woken(&mut feed, "the listener's first connect").await;
        }
        (reader, feed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_in_one_process_wakes_the_feed_readers_of_another() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let settings = fresh_settings(Backend::Postgres, dir_a.path()).await;
        let writer = open(&settings, &dir_a).await;
        let (reader, mut feed) = listening_reader(&settings, &dir_b).await;

        let outcome = writer
            .events
            .ingest(vec![track("e1", "u1", at(100))])
            .await
            .unwrap();
        assert_eq!(outcome.stored, 1);
        woken(&mut feed, "an ingest committed by another process").await;
        let page = reader.events.events_after(None, 10).await.unwrap();
        assert_eq!(page.events.len(), 1, "the woken reader finds the event");

        // A duplicate stores nothing and sends nothing: the next wakeup
        // is the next stored event's.
        writer
            .events
            .ingest(vec![track("e1", "u1", at(100))])
            .await
            .unwrap();
        writer
            .events
            .ingest(vec![track("e2", "u1", at(101))])
            .await
            .unwrap();
        woken(&mut feed, "the second stored event").await;
        let page = reader.events.events_after(None, 10).await.unwrap();
        assert_eq!(page.events.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listener_whose_connection_was_killed_wakes_and_listens_again() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let settings = fresh_settings(Backend::Postgres, dir_a.path()).await;
        let writer = open(&settings, &dir_a).await;
        let (_reader, mut feed) = listening_reader(&settings, &dir_b).await;

        // What a failover or an idle-connection reaper does to it.
        let DatabaseLocation::Postgres(url) = &settings.location else {
            unreachable!("a PostgreSQL location")
        };
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'nudge-control-plane listener' AND datname = current_database()",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(!killed.is_empty(), "the listeners have connections to kill");
        // Whatever was sent while it was gone is unheard: it wakes anyway.
        woken(&mut feed, "the listener's reconnect").await;

        writer
            .events
            .ingest(vec![track("e1", "u1", at(100))])
            .await
            .unwrap();
        woken(&mut feed, "an ingest after the reconnect").await;
    }
}

/// Weekly partitions of `events` and `event_ids` on PostgreSQL
/// (`storage/partitions.rs`): rows of a week live in its partition, and
/// retention and the dedupe window drop whole weeks.
mod postgres_partitions {
    use jiff::Timestamp;
    use nudge_control_plane::storage::{StorageMetrics, Stores};
    use sqlx::Connection;

    use super::track;

    /// Monday 7 December 2026, 00:00 UTC, and days from it.
    fn day(days: i64) -> Timestamp {
        let monday: Timestamp = "2026-12-07T00:00:00Z".parse().unwrap();
        monday
            .checked_add(jiff::SignedDuration::from_hours(24 * days))
            .unwrap()
    }

    async fn open() -> (tempfile::TempDir, Stores, sqlx::PgConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = nudge_e2e::postgres::fresh_database().await;
        let settings = nudge_control_plane::storage::DatabaseSettings {
            location: url.parse().unwrap(),
            pool_size: 4,
            connect_timeout: std::time::Duration::from_secs(10),
        };
        let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
            .await
            .unwrap();
        let sql = sqlx::PgConnection::connect(&url).await.unwrap();
        (dir, stores, sql)
    }

    /// The partition each stored row sits in, by its user (events; each
    /// test event has a user of its own) or id (event ids).
    async fn homes(sql: &mut sqlx::PgConnection, table: &str) -> Vec<(String, String)> {
        let key = if table == "events" { "user_id" } else { "id" };
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {key}, tableoid::regclass::text FROM {table} ORDER BY 1"
        )))
        .fetch_all(sql)
        .await
        .unwrap()
    }

    async fn exists(sql: &mut sqlx::PgConnection, name: &str) -> bool {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(sql)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_and_the_dedupe_window_drop_whole_weeks() {
        let (_dir, stores, mut sql) = open().await;
        let events = &stores.events;
        // The weeks of 7 and 14 December made ahead of time (as on 7 December).
        events.ensure_partitions(day(0)).await.unwrap();
        assert!(exists(&mut sql, "events_p20261207").await);
        assert!(exists(&mut sql, "event_ids_p20261214").await);
        assert!(
            exists(&mut sql, "events_p20261221").await,
            "two weeks ahead"
        );
        assert_eq!(
            events.ensure_partitions(day(0)).await.unwrap(),
            0,
            "idempotent"
        );

        events
            .ingest(vec![
                track("mon", "mon", day(0)),
                track("sun", "sun", day(6)),
                track("next", "next", day(7)),
            ])
            .await
            .unwrap();
        assert_eq!(
            homes(&mut sql, "events").await,
            [
                ("mon".to_owned(), "events_p20261207".to_owned()),
                ("next".to_owned(), "events_p20261214".to_owned()),
                ("sun".to_owned(), "events_p20261207".to_owned()),
            ]
        );
        assert_eq!(
            homes(&mut sql, "event_ids").await[0].1,
            "event_ids_p20261207"
        );

        // A cutoff inside a week keeps that week whole.
        assert_eq!(events.prune_events(day(6)).await.unwrap(), 0);
        assert_eq!(events.event_count().await.unwrap(), 3);
        // At its end, the week goes, as a table: its rows and the count.
        assert_eq!(events.prune_events(day(7)).await.unwrap(), 2);
        assert!(!exists(&mut sql, "events_p20261207").await);
        assert_eq!(events.event_count().await.unwrap(), 1);
        let left: Vec<String> = events
            .events_after(None, 10)
            .await
            .unwrap()
            .events
            .into_iter()
            .map(|event| event.id)
            .collect();
        assert_eq!(left, ["next"]);

        // Dedupe entries alike: while the week is kept, a resend is a
        // duplicate; once it is dropped, the id is new again.
        assert_eq!(events.prune_dedupe(day(6)).await.unwrap(), 0);
        let resent = events
            .ingest(vec![track("mon", "mon", day(8))])
            .await
            .unwrap();
        assert_eq!((resent.stored, resent.duplicates), (0, 1));
        assert_eq!(events.prune_dedupe(day(7)).await.unwrap(), 2);
        assert!(!exists(&mut sql, "event_ids_p20261207").await);
        assert_eq!(events.dedupe_count().await.unwrap(), 1);
        let after_window = events
            .ingest(vec![track("mon", "mon", day(8))])
            .await
            .unwrap();
        assert_eq!((after_window.stored, after_window.duplicates), (1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_no_week_covers_wait_in_the_default_partition() {
        let (_dir, stores, mut sql) = open().await;
        let events = &stores.events;
        events.ensure_partitions(day(0)).await.unwrap();
        // Five weeks ahead: no partition yet (a clock far off, or
        // housekeeping stopped for weeks).
        events
            .ingest(vec![
                track("far", "far", day(35)),
                track("near", "near", day(1)),
            ])
            .await
            .unwrap();
        let homes = homes(&mut sql, "events").await;
        assert_eq!(homes[0], ("far".to_owned(), "events_default".to_owned()));
        assert_eq!(homes[1], ("near".to_owned(), "events_p20261207".to_owned()));
        // That week is not made later: its row would be stranded.
        events.ensure_partitions(day(35)).await.unwrap();
        assert!(!exists(&mut sql, "events_p20270111").await);
        assert!(
            exists(&mut sql, "events_p20270118").await,
            "the week after is"
        );
        // The default partition's old rows go by row, by exact time.
        assert_eq!(
            events.prune_events(day(35)).await.unwrap(),
            1,
            "only `near`'s week"
        );
        assert_eq!(
            events
                .prune_events(
                    day(35)
                        .checked_add(jiff::SignedDuration::from_secs(1))
                        .unwrap()
                )
                .await
                .unwrap(),
            1
        );
        assert_eq!(events.event_count().await.unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_week_detached_by_a_stopped_pass_is_dropped_by_the_next() {
        let (_dir, stores, mut sql) = open().await;
        let events = &stores.events;
        events.ensure_partitions(day(0)).await.unwrap();
        events
            .ingest(vec![track("a", "a", day(1)), track("b", "b", day(2))])
            .await
            .unwrap();
        // What a pass that stopped between its two transactions leaves.
        sqlx::raw_sql("ALTER TABLE events DETACH PARTITION events_p20261207")
            .execute(&mut sql)
            .await
            .unwrap();
        assert_eq!(events.prune_events(day(0)).await.unwrap(), 2);
        assert!(!exists(&mut sql, "events_p20261207").await);
        assert_eq!(events.event_count().await.unwrap(), 0);
        // A table that only looks like a week of ours is left alone.
        sqlx::raw_sql("CREATE TABLE events_p20261207_copy (id int)")
            .execute(&mut sql)
            .await
            .unwrap();
        events.prune_events(day(30)).await.unwrap();
        assert!(exists(&mut sql, "events_p20261207_copy").await);
    }
}
