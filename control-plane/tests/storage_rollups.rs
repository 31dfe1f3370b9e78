//! The analytics rollups in SQL (`control-plane/src/storage/rollups.rs`,
//! `control-plane/src/analytics/`), every case on SQLite and on
//! PostgreSQL (`support::Backend`): a pass's counters and its cursor
//! commit together and survive a reopen; range scans come back in
//! bytewise key order, bytes of 0x80 and above included; a pass cut short
//! by a crash, before its commit or between its commit and the removal of
//! the delivery facts it counted, counts everything once when repeated;
//! a commit computed from a state another writer changed is refused.

#[macro_use]
mod support;

use std::sync::Arc;

use jiff::Timestamp;
use nudge_control_plane::analytics::{
    Analytics, AnalyticsConfig, AnalyticsError, Granularity, Interrupt, Report, ReportName,
    ReportQuery,
};
use nudge_control_plane::channels::{ChannelKind, OutboundMessage, Recipient, SendReceipt};
use nudge_control_plane::delivery::{Completion, Delivery, ManualClock, NewDelivery, Priority};
use nudge_control_plane::event::{Event, EventBody, JsonObject};
use nudge_control_plane::storage::{StorageMetrics, Stores};
use support::Backend;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn view(id: usize, user: &str, time: &str) -> Event {
    let mut properties = JsonObject::new();
    properties.insert("product_id".to_owned(), "p1".into());
    Event {
        id: format!("ev-{id}"),
        user_id: Some(user.to_owned()),
        anonymous_id: None,
        timestamp: Some(at(time)),
        sent_at: None,
        received_at: None,
        ingested_at: at(time),
        agent_id: "agent".to_owned(),
        write_key: None,
        context: JsonObject::new(),
        integrations: JsonObject::new(),
        body: EventBody::Track {
            event: "view".to_owned(),
            properties,
        },
    }
}

fn analytics(stores: &Stores) -> Analytics {
    let clock = Arc::new(ManualClock::new(at("2026-11-10T12:00:00Z")));
    Analytics::open(
        stores,
        AnalyticsConfig::default(),
        clock,
        &prometheus::Registry::new(),
    )
    .unwrap()
}

fn report(analytics: &Analytics, name: ReportName) -> Report {
    analytics
        .report(&ReportQuery {
            report: Some(name),
            from: Some("2026-11-01".parse().unwrap()),
            to: Some("2026-11-10".parse().unwrap()),
            granularity: Some(match name {
                ReportName::Summary => Granularity::Month,
                _ => Granularity::Total,
            }),
            ..ReportQuery::default()
        })
        .unwrap()
}

/// (events, unique users) of November 2026.
fn november(analytics: &Analytics) -> (String, String) {
    let summary = report(analytics, ReportName::Summary);
    let cell = |column| summary.cell(0, column).unwrap().to_text();
    (cell("events"), cell("unique_users"))
}

/// Messages sent, over every delivery row.
fn sent(analytics: &Analytics) -> i64 {
    let delivery = report(analytics, ReportName::Delivery);
    (0..delivery.rows.len())
        .map(|row| {
            delivery
                .cell(row, "sent")
                .unwrap()
                .to_text()
                .parse::<i64>()
                .unwrap()
        })
        .sum()
}

/// The analytics cursor as the pass stored it (layout key `cursor`).
async fn stored_cursor(stores: &Stores) -> Option<u64> {
    let rows = stores.rollups.get(&[b"cursor".to_vec()]).await.unwrap();
    rows.first()
        .map(|(_, value)| u64::from_be_bytes(value.as_slice().try_into().unwrap()))
}

/// A delivery to `user` by SMS, created, claimed and sent: one `sent`
/// delivery fact (and the facts of its other changes).
async fn send_one(stores: &Stores, user: &str) {
    let delivery = Delivery::new(
        NewDelivery {
            notification_id: format!("n-{user}"),
            user_id: user.to_owned(),
            channel: ChannelKind::Sms,
            priority: Priority::Normal,
            message: OutboundMessage {
                notification_type: "bill_due".to_owned(),
                ..OutboundMessage::default()
            },
            recipient: Recipient::User {
                user_id: user.to_owned(),
            },
            not_before: None,
        },
        at("2026-11-02T08:00:00Z"),
    );
    let queue = &stores.deliveries;
    queue.enqueue(delivery.clone()).await.unwrap();
    let claimed = queue
        .claim_due(ChannelKind::Sms, at("2026-11-02T08:00:00Z"), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let receipt = SendReceipt {
        provider_message_id: None,
        answer: "ok".to_owned(),
    };
    queue
        .complete(
            delivery.id,
            &Completion::Sent(receipt),
            at("2026-11-02T08:00:05Z"),
        )
        .await
        .unwrap();
}

/// Steps until caught up, on a blocking thread as `Analytics::run` does.
async fn catch_up(analytics: &Analytics) {
    let analytics = analytics.clone();
    tokio::task::spawn_blocking(move || while analytics.step().unwrap() > 0 {})
        .await
        .unwrap();
}

async fn a_pass_commits_its_counters_and_cursor_together(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let settings = support::fresh_settings(backend, dir.path()).await;
    let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
        .await
        .unwrap();
    stores
        .events
        .ingest(vec![
            view(1, "ann", "2026-11-02T10:00:00Z"),
            view(2, "ann", "2026-11-02T10:01:00Z"),
            view(3, "bob", "2026-11-03T10:00:00Z"),
        ])
        .await
        .unwrap();
    let newest = stores.events.last_cursor().await.unwrap().unwrap().0;
    assert_eq!(stored_cursor(&stores).await, None, "nothing folded yet");
    let worker = analytics(&stores);
    catch_up(&worker).await;
    assert_eq!(november(&worker), ("3".to_owned(), "2".to_owned()));
    stores.close().await.unwrap();
    drop((worker, stores));

    // Reopened: the counters are there, the cursor is past the last
    // event, and a new worker finds nothing left to fold.
    let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
        .await
        .unwrap();
    assert_eq!(stored_cursor(&stores).await, Some(newest));
    let worker = analytics(&stores);
    assert_eq!(november(&worker), ("3".to_owned(), "2".to_owned()));
    let again = worker.clone();
    let folded = tokio::task::spawn_blocking(move || again.step().unwrap())
        .await
        .unwrap();
    assert_eq!(folded, 0);
    assert_eq!(november(&worker), ("3".to_owned(), "2".to_owned()));
}

async fn range_scans_come_back_in_bytewise_order(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    let table = &stores.rollups;
    // Keys under the prefix "zz\0", in an order that is not theirs, with
    // bytes a signed comparison or a text collation would misplace.
    let keys: Vec<Vec<u8>> = vec![
        b"zz\0\xff\x01".to_vec(),
        b"zz\0\x80".to_vec(),
        b"zz\0a".to_vec(),
        b"zz\0\x7f\xff".to_vec(),
        b"zz\0A".to_vec(),
        b"zz\0\x00".to_vec(),
        b"zz\0\xc3\xa9".to_vec(), // "é" in UTF-8
        b"zz\0\x80\x00".to_vec(),
    ];
    // Neighbours just outside the prefix on both sides.
    let outside = [b"zy\xff".to_vec(), b"zz\x01".to_vec()];
    let generation = table.generation().await.unwrap();
    let writes = keys
        .iter()
        .chain(&outside)
        .enumerate()
        .map(|(index, key)| (key.clone(), Some(vec![index as u8, 0x80, 0xff])))
        .collect();
    assert!(table.commit(generation, writes, &[]).await.unwrap());

    let mut expected = keys.clone();
    expected.sort();
    let scanned = table.scan_prefix(b"zz\0").await.unwrap();
    let scanned_keys: Vec<Vec<u8>> = scanned.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(scanned_keys, expected);
    // Values come back as written, high bytes included.
    let first = keys.iter().position(|key| *key == expected[0]).unwrap();
    assert_eq!(scanned[0].1, vec![first as u8, 0x80, 0xff]);

    // A bounded range: from 0x7f (inclusive) to 0xc3 (exclusive).
    let ranged = table
        .range(b"zz\0\x7f", Some(b"zz\0\xc3"))
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect::<Vec<_>>();
    assert_eq!(
        ranged,
        vec![
            b"zz\0\x7f\xff".to_vec(),
            b"zz\0\x80".to_vec(),
            b"zz\0\x80\x00".to_vec(),
        ]
    );

    // Removals commit too; a stale generation commits nothing.
    let generation = table.generation().await.unwrap();
    assert!(
        table
            .commit(generation, vec![(b"zz\0\x80".to_vec(), None)], &[])
            .await
            .unwrap()
    );
    assert!(
        !table
            .commit(generation, vec![(b"zz\0new".to_vec(), Some(vec![1]))], &[])
            .await
            .unwrap(),
        "a commit over a generation another commit moved on is refused"
    );
    let left: Vec<Vec<u8>> = table
        .scan_prefix(b"zz\0")
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(left.len(), keys.len() - 1);
    assert!(!left.contains(&b"zz\0\x80".to_vec()));
    assert!(!left.contains(&b"zz\0new".to_vec()));
}

async fn a_pass_repeated_after_a_crash_counts_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    stores
        .events
        .ingest(vec![
            view(1, "ann", "2026-11-02T10:00:00Z"),
            view(2, "bob", "2026-11-02T11:00:00Z"),
        ])
        .await
        .unwrap();
    send_one(&stores, "ann").await;
    let facts = stores.deliveries.table().fact_count().await.unwrap();
    assert!(facts > 0, "the delivery wrote facts");

    // A crash before the commit: nothing counted, nothing removed.
    let crashed = analytics(&stores);
    let worker = crashed.clone();
    tokio::task::spawn_blocking(move || worker.step_interrupted(Interrupt::BeforeCommit).unwrap())
        .await
        .unwrap();
    drop(crashed);
    let restarted = analytics(&stores);
    assert_eq!(november(&restarted), ("0".to_owned(), "0".to_owned()));
    assert_eq!(sent(&restarted), 0);
    assert_eq!(stores.deliveries.table().fact_count().await.unwrap(), facts);
    assert_eq!(stored_cursor(&stores).await, None);

    // The restarted worker repeats the pass: everything once.
    catch_up(&restarted).await;
    assert_eq!(november(&restarted), ("2".to_owned(), "2".to_owned()));
    assert_eq!(sent(&restarted), 1);
    assert_eq!(stores.deliveries.table().fact_count().await.unwrap(), 0);

    // A pass that commits has removed the facts it counted in that same
    // commit: there is no moment after it at which a crash could leave
    // them to be counted again.
    send_one(&stores, "bob").await;
    stores
        .events
        .ingest(vec![view(3, "cy", "2026-11-03T10:00:00Z")])
        .await
        .unwrap();
    assert!(stores.deliveries.table().fact_count().await.unwrap() > 0);
    let worker = restarted.clone();
    tokio::task::spawn_blocking(move || worker.step().unwrap())
        .await
        .unwrap();
    assert_eq!(stores.deliveries.table().fact_count().await.unwrap(), 0);
    drop(restarted);
    let restarted = analytics(&stores);
    assert_eq!(november(&restarted), ("3".to_owned(), "3".to_owned()));
    assert_eq!(sent(&restarted), 2);
    catch_up(&restarted).await;
    assert_eq!(november(&restarted), ("3".to_owned(), "3".to_owned()));
    assert_eq!(sent(&restarted), 2, "counted once, not again");
}

/// Two workers (as on two replicas) over one database, racing round
/// after round: whichever commits second finds the rollups changed and
/// writes nothing, so nothing is counted twice. (Whether a round races is
/// up to the scheduler; the refusal itself is checked deterministically
/// in `range_scans_come_back_in_bytewise_order`.)
async fn two_workers_never_count_a_pass_twice(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    let (first, second) = (analytics(&stores), analytics(&stores));
    let run = |worker: Analytics| {
        tokio::task::spawn_blocking(move || {
            loop {
                match worker.step() {
                    Ok(0) => return,
                    Ok(_) | Err(AnalyticsError::Conflict) => {}
                    Err(error) => panic!("{error}"),
                }
            }
        })
    };
    let rounds = 10;
    for round in 0..rounds {
        let events: Vec<Event> = (0..40)
            .map(|index| {
                view(
                    round * 100 + index,
                    &format!("user-{}", index % 7),
                    "2026-11-04T10:00:00Z",
                )
            })
            .collect();
        stores.events.ingest(events).await.unwrap();
        send_one(&stores, &format!("to-{round}")).await;
        let (a, b) = tokio::join!(run(first.clone()), run(second.clone()));
        a.unwrap();
        b.unwrap();
    }
    assert_eq!(
        november(&first),
        ((rounds * 40).to_string(), "7".to_owned())
    );
    assert_eq!(sent(&second), rounds as i64);
}

on_both_engines!(
    a_pass_commits_its_counters_and_cursor_together,
    range_scans_come_back_in_bytewise_order,
    a_pass_repeated_after_a_crash_counts_once,
    two_workers_never_count_a_pass_twice,
);
