//! Several control planes on one database (issue 13), below the process
//! level: leases have one holder at a time and expire; a periodic job is
//! taken once per period; a feed cursor moves only under its lease; and
//! two engines over one PostgreSQL database split the event feed, plan
//! each event once between them, and take a silent replica's partitions
//! over after its leases expire. Two `Stores` on one database stand in
//! for two processes (the black-box tests in `tests/` run real ones).

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Map;

use nudge_control_plane::channels::ChannelKind;
use nudge_control_plane::delivery::{Clock, SystemClock};
use nudge_control_plane::engine::{
    Engine, EngineParts, EngineSettings, FeedSettings, SettingsHandle,
};
use nudge_control_plane::event::{Cursor, Event, EventBody, NotifyRequest};
use nudge_control_plane::rules::Rule;
use nudge_control_plane::storage::{DatabaseLocation, StorageMetrics, Stores};
use support::Backend;

async fn open(backend: Backend) -> (tempfile::TempDir, Stores) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    (dir, stores)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

async fn a_lease_has_one_holder_until_it_expires_or_is_released(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let leases = &stores.leases;
    let long = Duration::from_secs(60);
    let name = names(&["feed/00"]);
    assert_eq!(leases.hold(&name, "a", long).await.unwrap(), name);
    assert!(
        leases.hold(&name, "b", long).await.unwrap().is_empty(),
        "a holds it"
    );
    assert_eq!(
        leases.hold(&name, "a", long).await.unwrap(),
        name,
        "a renews it"
    );
    assert_eq!(
        leases.live("feed/").await.unwrap(),
        vec![("feed/00".to_owned(), "a".to_owned())]
    );
    // b releasing what it does not hold changes nothing.
    leases.release(&name, "b").await.unwrap();
    assert!(leases.hold(&name, "b", long).await.unwrap().is_empty());
    leases.release(&name, "a").await.unwrap();
    assert_eq!(
        leases.hold(&name, "b", long).await.unwrap(),
        name,
        "released"
    );

    // A lease nobody renews expires, by the database's clock.
    let short = Duration::from_millis(300);
    let other = names(&["job/x"]);
    assert_eq!(leases.hold(&other, "a", short).await.unwrap(), other);
    assert!(leases.hold(&other, "b", long).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(leases.live("job/").await.unwrap().is_empty(), "expired");
    assert_eq!(leases.hold(&other, "b", long).await.unwrap(), other);

    // Housekeeping forgets leases long expired (dead replicas' heartbeats).
    let gone = names(&["replica/gone"]);
    leases.hold(&gone, "gone", short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        leases
            .prune_expired(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(leases.prune_expired(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(
        leases.live("").await.unwrap().len(),
        2,
        "the live ones stay"
    );
}

async fn racing_replicas_never_both_hold_a_lease(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    for round in 0..20 {
        let name = vec![format!("job/race-{round}")];
        let racers = (0..8).map(|racer| {
            let (leases, name) = (stores.leases.clone(), name.clone());
            async move {
                let holder = format!("replica-{racer}");
                leases
                    .hold(&name, &holder, Duration::from_secs(60))
                    .await
                    .unwrap()
                    .len()
            }
        });
        let won: usize = futures::future::join_all(racers).await.into_iter().sum();
        assert_eq!(won, 1, "round {round}: one of eight racers holds it");
    }
}

async fn a_due_job_is_taken_once_per_period(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let leases = &stores.leases;
    let period = Duration::from_millis(400);
    assert!(leases.take_due("job/h/dedupe", "a", period).await.unwrap());
    assert!(!leases.take_due("job/h/dedupe", "b", period).await.unwrap());
    assert!(
        !leases.take_due("job/h/dedupe", "a", period).await.unwrap(),
        "not due again within the period, even for the last runner"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        leases.take_due("job/h/dedupe", "b", period).await.unwrap(),
        "due again: whoever asks first"
    );
    assert!(!leases.take_due("job/h/dedupe", "a", period).await.unwrap());
}

async fn a_feed_cursor_moves_only_forward_and_only_under_its_lease(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let (leases, cursors) = (&stores.leases, &stores.cursors);
    let long = Duration::from_secs(60);
    leases.hold(&names(&["feed/00"]), "a", long).await.unwrap();
    leases.hold(&names(&["feed/01"]), "b", long).await.unwrap();
    let both = names(&["feed/00", "feed/01", "feed/02"]);

    let held = cursors.advance_held(&both, Cursor(10), "a").await.unwrap();
    assert_eq!(held, names(&["feed/00"]), "only what a holds");
    let stored = cursors.load_many(&both).await.unwrap();
    assert_eq!(stored.get("feed/00"), Some(&Cursor(10)));
    assert_eq!(stored.get("feed/01"), None, "b's partition is b's to move");
    assert_eq!(stored.get("feed/02"), None, "nobody holds it");

    cursors.advance_held(&both, Cursor(5), "a").await.unwrap();
    assert_eq!(
        cursors.load("feed/00").await.unwrap(),
        Some(Cursor(10)),
        "never backwards (a stale holder cannot undo progress)"
    );
    // After a's lease is gone, a moves nothing.
    leases.release(&names(&["feed/00"]), "a").await.unwrap();
    assert!(
        cursors
            .advance_held(&both, Cursor(20), "a")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(cursors.load("feed/00").await.unwrap(), Some(Cursor(10)));
}

on_both_engines!(
    a_lease_has_one_holder_until_it_expires_or_is_released,
    racing_replicas_never_both_hold_a_lease,
    a_due_job_is_taken_once_per_period,
    a_feed_cursor_moves_only_forward_and_only_under_its_lease,
);

/// Two engines on one PostgreSQL database, as two replicas would run them.
mod postgres_replicas {
    use super::*;

    const TTL: Duration = Duration::from_secs(2);

    struct Replica {
        _dir: tempfile::TempDir,
        stores: Stores,
        engine: Engine,
        registry: prometheus::Registry,
    }

    async fn replica(
        settings: &nudge_control_plane::storage::DatabaseSettings,
        name: &str,
    ) -> Replica {
        replica_with_rules(settings, name, Vec::new()).await
    }

    async fn replica_with_rules(
        settings: &nudge_control_plane::storage::DatabaseSettings,
        name: &str,
        rules: Vec<Rule>,
    ) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(settings, dir.path(), StorageMetrics::new())
            .await
            .unwrap();
        let registry = prometheus::Registry::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let engine = Engine::new(
            EngineParts {
                store: stores.events.clone(),
                notifications: stores.notifications.clone(),
                preferences: stores.preferences.clone(),
                queue: stores.deliveries.clone(),
                devices: stores.devices.clone(),
                cursors: stores.cursors.clone(),
                leases: stores.leases.clone(),
                replica: FeedSettings {
                    replica: name.to_owned(),
                    lease_ttl: TTL,
                },
                digests: stores.digests.clone(),
                pending: stores.pending.clone(),
                topics: stores.topics.clone(),
                broadcasts: stores.broadcasts.clone(),
                clock,
            },
            SettingsHandle::new(EngineSettings {
                enabled: BTreeSet::from([ChannelKind::InApp]),
                rules,
                ..EngineSettings::default()
            }),
            &registry,
        )
        .unwrap();
        Replica {
            _dir: dir,
            stores,
            engine,
            registry,
        }
    }

    /// A value of this replica's metrics (0 when absent).
    fn metric(replica: &Replica, name: &str, label: Option<(&str, &str)>) -> f64 {
        replica
            .registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().iter())
            .filter(|metric| {
                label.is_none_or(|(key, value)| {
                    metric
                        .get_label()
                        .iter()
                        .any(|pair| pair.name() == key && pair.value() == value)
                })
            })
            // One of the two is set; the other reads 0.
            .map(|metric| metric.get_counter().get_value() + metric.get_gauge().get_value())
            .sum()
    }

    fn partitions_held(replica: &Replica) -> f64 {
        metric(
            replica,
            "nudge_cp_leases_held",
            Some(("kind", "feed_partition")),
        )
    }

    fn created(replica: &Replica) -> f64 {
        metric(replica, "nudge_cp_notifications_created_total", None)
    }

    fn notify(id: &str, user: &str) -> Event {
        event(
            id,
            user,
            EventBody::Notify(NotifyRequest {
                notification_type: "comment".into(),
                template: None,
                title: Some("New comment".into()),
                body: Some("Someone replied".into()),
                channels: vec![ChannelKind::InApp],
                data: Map::new(),
                priority: Default::default(),
                idempotency_key: None,
                cost: None,
            }),
        )
    }

    fn event(id: &str, user: &str, body: EventBody) -> Event {
        let now = Timestamp::now();
        Event {
            id: id.into(),
            user_id: Some(user.into()),
            anonymous_id: None,
            timestamp: None,
            sent_at: None,
            received_at: Some(now),
            ingested_at: now,
            agent_id: "test".into(),
            write_key: None,
            context: Map::new(),
            integrations: Map::new(),
            body,
        }
    }

    async fn notifications_in_database(
        settings: &nudge_control_plane::storage::DatabaseSettings,
    ) -> i64 {
        let DatabaseLocation::Postgres(url) = &settings.location else {
            unreachable!("a PostgreSQL location")
        };
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    /// Runs passes of `replicas` until `done` holds (or fails after 30 s);
    /// answers how many events each one processed.
    async fn pass_until(replicas: &[&Replica], what: &str, done: impl Fn() -> bool) -> Vec<usize> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut processed = vec![0; replicas.len()];
        loop {
            for (replica, count) in replicas.iter().zip(&mut processed) {
                *count += replica.engine.process_available().await.unwrap();
            }
            if done() {
                return processed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_engines_split_the_feed_plan_each_event_once_and_take_over_a_silent_one() {
        let dir = tempfile::tempdir().unwrap();
        let settings = support::fresh_settings(Backend::Postgres, dir.path()).await;
        let a = replica(&settings, "replica-a").await;
        let b = replica(&settings, "replica-b").await;

        // The first to look takes every partition; the second's heartbeat
        // makes the first hand half over.
        pass_until(&[&a, &b], "an even split", || {
            partitions_held(&a) == 16.0 && partitions_held(&b) == 16.0
        })
        .await;
        let timers = |r: &Replica| metric(r, "nudge_cp_leases_held", Some(("kind", "job")));
        assert_eq!(timers(&a) + timers(&b), 1.0, "one replica fires the timers");

        // 64 users' notifies, planned by whichever replica holds each.
        let events: Vec<Event> = (0..64)
            .map(|i| notify(&format!("evt-{i}"), &format!("user-{i}")))
            .collect();
        a.stores.events.ingest(events).await.unwrap();
        let mut processed = pass_until(&[&a, &b], "64 notifications", || {
            created(&a) + created(&b) >= 64.0
        })
        .await;
        // Passes more change nothing: each event was planned once.
        for _ in 0..3 {
            processed[0] += a.engine.process_available().await.unwrap();
            processed[1] += b.engine.process_available().await.unwrap();
        }
        assert_eq!(
            processed[0] + processed[1],
            64,
            "each event read and planned by one replica only ({processed:?})"
        );
        assert!(processed[0] > 0 && processed[1] > 0, "both did a share");
        // Every partition's cursor is at the head, also where a replica's
        // own partitions got nothing lately: its next pass reads only new
        // events, not the others' again.
        let head = a.stores.events.last_cursor().await.unwrap().unwrap();
        let names: Vec<String> = (0..32).map(|n| format!("feed/{n:02}")).collect();
        let cursors = a.stores.cursors.load_many(&names).await.unwrap();
        assert_eq!(cursors.len(), 32, "every partition has a cursor");
        assert!(
            cursors.values().all(|cursor| *cursor == head),
            "every cursor at the head {head:?}: {cursors:?}"
        );
        assert_eq!(created(&a) + created(&b), 64.0);
        assert_eq!(notifications_in_database(&settings).await, 64);

        // a goes silent (a SIGKILL: no release). Once its leases expire, b
        // takes every partition and plans what a would have.
        let before_b = created(&b);
        let more: Vec<Event> = (64..128)
            .map(|i| notify(&format!("evt-{i}"), &format!("user-{i}")))
            .collect();
        b.stores.events.ingest(more).await.unwrap();
        pass_until(&[&b], "b planning everything", || {
            created(&b) - before_b >= 64.0
        })
        .await;
        assert_eq!(partitions_held(&b), 32.0);
        assert_eq!(notifications_in_database(&settings).await, 128);
        assert_eq!(
            metric(&b, "nudge_cp_feed_partitions_unowned", None),
            0.0,
            "nothing left unowned"
        );
    }

    /// Both replicas run their engines as the program does; a delayed rule
    /// trigger falls due once, and exactly one of them fires it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delayed_rule_fires_once_with_two_engines_running() {
        let dir = tempfile::tempdir().unwrap();
        let settings = support::fresh_settings(Backend::Postgres, dir.path()).await;
        let rules: Vec<Rule> = vec![
            serde_json::from_value(serde_json::json!({
                "name": "cart-reminder",
                "on": "cart_add",
                "notify": "cart_reminder",
                "delay": "1s",
            }))
            .unwrap(),
        ];
        let a = replica_with_rules(&settings, "replica-a", rules.clone()).await;
        let b = replica_with_rules(&settings, "replica-b", rules).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let running = [
            tokio::spawn(a.engine.clone().run(stop.clone())),
            tokio::spawn(b.engine.clone().run(stop.clone())),
        ];
        let carts: Vec<Event> = (0..8)
            .map(|i| {
                event(
                    &format!("cart-{i}"),
                    &format!("shopper-{i}"),
                    EventBody::Track {
                        event: "cart_add".into(),
                        properties: Map::new(),
                    },
                )
            })
            .collect();
        a.stores.events.ingest(carts).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while created(&a) + created(&b) < 8.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reminders fired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Time for a second firing, had both replicas fired the timers.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
        for task in running {
            task.await.unwrap();
        }
        assert_eq!(created(&a) + created(&b), 8.0, "each reminder fired once");
        assert_eq!(notifications_in_database(&settings).await, 8);
        let fired_by = [created(&a), created(&b)];
        assert!(
            fired_by.contains(&0.0),
            "one replica (the timers' lease holder) fired them all: {fired_by:?}"
        );
        // Both gave their leases up on stop.
        assert!(a.stores.leases.live("").await.unwrap().is_empty());
    }

    /// Digests due (and settled) while two replicas run their engines go
    /// out once each: one replica holds the timers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn due_digests_go_out_once_with_two_engines_running() {
        use nudge_control_plane::digest::{DigestItem, DigestKey};

        let dir = tempfile::tempdir().unwrap();
        let settings = support::fresh_settings(Backend::Postgres, dir.path()).await;
        let a = replica(&settings, "replica-a").await;
        let b = replica(&settings, "replica-b").await;
        // Past their time and its settle: due at the first pass.
        let due_at = Timestamp::now() - jiff::SignedDuration::from_secs(60);
        for user in 0..6 {
            let key = DigestKey {
                due_at,
                user_id: format!("reader-{user}"),
                notification_type: "comment".into(),
                channel: ChannelKind::InApp,
                group: String::new(),
            };
            for n in 0..3 {
                let item = DigestItem {
                    notification_id: format!("n-{user}-{n}"),
                    created_at: due_at,
                    subject: format!("comment {n}"),
                    title: format!("comment {n}"),
                    text: String::new(),
                    data: serde_json::json!({}),
                };
                assert!(a.stores.digests.add(&key, &item).await.unwrap());
            }
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let running = [
            tokio::spawn(a.engine.clone().run(stop.clone())),
            tokio::spawn(b.engine.clone().run(stop.clone())),
        ];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while created(&a) + created(&b) < 6.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the digests went out"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Time for a second sending, had both replicas fired the timers.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
        for task in running {
            task.await.unwrap();
        }
        assert_eq!(created(&a) + created(&b), 6.0, "one digest per user");
        assert_eq!(notifications_in_database(&settings).await, 6);
        let fired_by = [created(&a), created(&b)];
        assert!(
            fired_by.contains(&0.0),
            "one replica fired them all: {fired_by:?}"
        );
    }
}
