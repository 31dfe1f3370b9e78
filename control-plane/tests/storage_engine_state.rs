//! The conformance suite of the engine's small stores: every case runs on
//! SQLite and on PostgreSQL (`support::Backend`) against the promises of
//! `control-plane/src/storage/{cursors,digests,pending,callbacks}.rs`: the feed
//! cursor survives a restart, due digests come back whole, in due order
//! and not again once fired, a pending trigger fires once at its time and
//! never once cancelled, and erasing a user removes that user's rows only.
//! A callback id is taken once.

#[macro_use]
mod support;

use jiff::Timestamp;
use nudge_control_plane::channels::ChannelKind;
use nudge_control_plane::digest::{DigestItem, DigestKey};
use nudge_control_plane::event::{Cursor, JsonObject};
use nudge_control_plane::rules::Rule;
use nudge_control_plane::storage::{StorageMetrics, Stores};
use support::Backend;

fn ts(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

async fn open(backend: Backend) -> (tempfile::TempDir, Stores) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    (dir, stores)
}

fn key(due: i64, user: &str, channel: ChannelKind) -> DigestKey {
    DigestKey {
        due_at: ts(due),
        user_id: user.to_owned(),
        notification_type: "comment".to_owned(),
        channel,
        group: String::new(),
    }
}

fn item(id: &str, created: i64) -> DigestItem {
    DigestItem {
        notification_id: id.to_owned(),
        created_at: ts(created),
        subject: format!("subject {id}"),
        title: String::new(),
        text: String::new(),
        data: serde_json::json!({ "id": id }),
    }
}

/// A delayed rule that `purchase` cancels.
fn reminder() -> Vec<Rule> {
    vec![
        serde_json::from_value(serde_json::json!({
            "name": "cart-reminder",
            "on": "cart_add",
            "notify": "cart_reminder",
            "delay": "1h",
            "unless": "purchase",
        }))
        .unwrap(),
    ]
}

async fn the_feed_cursor_survives_a_reopen(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let settings = support::fresh_settings(backend, dir.path()).await;
    let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
        .await
        .unwrap();
    assert_eq!(stores.cursors.load("events").await.unwrap(), None);
    stores.cursors.store("events", Cursor(41)).await.unwrap();
    stores.cursors.store("events", Cursor(42)).await.unwrap();
    // Another name (a feed partition, later) is a row of its own.
    stores.cursors.store("events/1", Cursor(7)).await.unwrap();
    stores.close().await.unwrap();
    drop(stores);

    let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
        .await
        .unwrap();
    assert_eq!(
        stores.cursors.load("events").await.unwrap(),
        Some(Cursor(42))
    );
    assert_eq!(
        stores.cursors.load("events/1").await.unwrap(),
        Some(Cursor(7))
    );
}

async fn due_digests_come_back_whole_in_due_order_and_once(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let digests = &stores.digests;
    let daily = key(100, "u1", ChannelKind::Email);
    let hourly = key(50, "u1", ChannelKind::InApp);
    let later = key(500, "u1", ChannelKind::Email);
    digests.add(&daily, &item("n2", 20)).await.unwrap();
    digests.add(&daily, &item("n1", 10)).await.unwrap();
    // Items arriving together (a replayed notification) are one item.
    digests.add(&daily, &item("n1", 10)).await.unwrap();
    digests.add(&hourly, &item("n3", 5)).await.unwrap();
    digests.add(&later, &item("n4", 30)).await.unwrap();
    assert_eq!(digests.count().await.unwrap(), 4);

    assert!(digests.due(ts(49), 10).await.unwrap().is_empty());
    let due = digests.due(ts(100), 10).await.unwrap();
    let keys: Vec<&DigestKey> = due.iter().map(|digest| &digest.key).collect();
    assert_eq!(keys, [&hourly, &daily], "due order, nothing not yet due");
    let items: Vec<&str> = due[1]
        .items
        .iter()
        .map(|item| item.notification_id.as_str())
        .collect();
    assert_eq!(items, ["n1", "n2"], "whole, in creation order");
    assert_eq!(due[1].items[0], item("n1", 10));
    // A limit never splits a digest.
    let first = digests.due(ts(100), 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].key, hourly);

    // Read again before firing (a crash in between): the same digests.
    assert_eq!(digests.due(ts(100), 10).await.unwrap(), due);
    // An item that arrives after the read stays for the next pass.
    digests.add(&daily, &item("n5", 40)).await.unwrap();
    for digest in &due {
        digests.remove(digest).await.unwrap();
    }
    let rest = digests.due(ts(100), 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].key, daily);
    assert_eq!(rest[0].items, [item("n5", 40)]);
    digests.remove(&rest[0]).await.unwrap();
    assert!(digests.due(ts(100), 10).await.unwrap().is_empty());
    let last = digests.due(ts(1_000), 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].key, later);
}

async fn a_pending_trigger_fires_once_at_its_time(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let pending = &stores.pending;
    let properties: JsonObject =
        serde_json::from_value(serde_json::json!({ "total": 30 })).unwrap();
    assert!(
        pending
            .schedule("cart-reminder", "u1", "e1", &properties, ts(0), ts(3600))
            .await
            .unwrap()
    );
    pending
        .schedule("cart-reminder", "u1", "e0", &properties, ts(0), ts(1800))
        .await
        .unwrap();
    assert!(pending.due(ts(1799), 10).await.unwrap().is_empty());
    let due = pending.due(ts(3600), 10).await.unwrap();
    let ids: Vec<String> = due.iter().map(|trigger| trigger.id()).collect();
    assert_eq!(ids, ["cart-reminder:e0", "cart-reminder:e1"], "due order");
    assert_eq!(due[1].properties, properties);

    // Two firers (replicas) complete it: exactly one does.
    let (a, b) = tokio::join!(
        pending.complete(&due[1], ts(3600)),
        pending.complete(&due[1], ts(3600))
    );
    assert!(a.unwrap() ^ b.unwrap());
    let ids: Vec<String> = pending
        .due(ts(3600), 10)
        .await
        .unwrap()
        .iter()
        .map(|trigger| trigger.id())
        .collect();
    assert_eq!(ids, ["cart-reminder:e0"]);
    // A replayed event does not schedule a fired trigger again…
    assert!(
        !pending
            .schedule("cart-reminder", "u1", "e1", &properties, ts(0), ts(3600))
            .await
            .unwrap()
    );
    assert_eq!(pending.count().await.unwrap(), 1);
    // …until its marker is pruned.
    assert_eq!(pending.prune_finished(ts(3601)).await.unwrap(), 1);
    assert!(
        pending
            .schedule("cart-reminder", "u1", "e1", &properties, ts(0), ts(3600))
            .await
            .unwrap()
    );
}

async fn a_cancelled_trigger_never_fires(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let pending = &stores.pending;
    let rules = reminder();
    let none = JsonObject::new();
    pending
        .schedule("cart-reminder", "u1", "e1", &none, ts(100), ts(3700))
        .await
        .unwrap();
    pending
        .schedule("cart-reminder", "u2", "e2", &none, ts(100), ts(3700))
        .await
        .unwrap();
    // Before the trigger's event: cancels nothing.
    assert!(
        pending
            .cancel_for("u1", "purchase", ts(50), &rules)
            .await
            .unwrap()
            .is_empty()
    );
    let cancelled = pending
        .cancel_for("u1", "purchase", ts(500), &rules)
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].id(), "cart-reminder:e1");
    assert!(
        pending
            .cancel_for("u1", "purchase", ts(600), &rules)
            .await
            .unwrap()
            .is_empty(),
        "cancelled once"
    );
    assert!(!pending.complete(&cancelled[0], ts(3700)).await.unwrap());
    let due = pending.due(ts(10_000), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].user_id, "u2");
    // Replaying the event does not bring it back.
    assert!(
        !pending
            .schedule("cart-reminder", "u1", "e1", &none, ts(100), ts(3700))
            .await
            .unwrap()
    );
    assert!(pending.get("cart-reminder:e1").await.unwrap().is_none());
}

async fn erase_removes_a_users_rows_only(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let none = JsonObject::new();
    for user in ["u1", "u2"] {
        for (n, channel) in [ChannelKind::Email, ChannelKind::InApp]
            .into_iter()
            .enumerate()
        {
            stores
                .digests
                .add(&key(100, user, channel), &item(&format!("{user}-{n}"), 1))
                .await
                .unwrap();
        }
        stores
            .pending
            .schedule("r", user, &format!("{user}-e"), &none, ts(0), ts(60))
            .await
            .unwrap();
    }
    assert_eq!(stores.digests.erase_user("u1").await.unwrap(), 2);
    assert_eq!(stores.pending.erase_user("u1").await.unwrap(), 1);
    assert_eq!(stores.digests.erase_user("u1").await.unwrap(), 0);
    assert_eq!(stores.pending.erase_user("u1").await.unwrap(), 0);
    assert!(stores.pending.for_user("u1").await.unwrap().is_empty());
    assert_eq!(stores.pending.for_user("u2").await.unwrap().len(), 1);
    let due = stores.digests.due(ts(1_000), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|digest| digest.key.user_id == "u2"));
    let fired = stores.pending.due(ts(1_000), 10).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].user_id, "u2");
}

/// A notification is folded into one digest per channel, ever: planned
/// again after its digest was sent, it is not held for the next one. The
/// record of folds goes with the notifications' retention and the user.
async fn a_notification_is_folded_into_one_digest_per_channel(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let digests = &stores.digests;
    let today = key(100, "u1", ChannelKind::Email);
    let tomorrow = key(200, "u1", ChannelKind::Email);
    assert!(digests.add(&today, &item("n1", 10)).await.unwrap());
    let due = digests.due(ts(100), 10).await.unwrap();
    digests.remove(&due[0]).await.unwrap();

    assert!(!digests.add(&tomorrow, &item("n1", 10)).await.unwrap());
    assert!(digests.due(ts(200), 10).await.unwrap().is_empty());
    // Another channel is another fold.
    let in_app = key(200, "u1", ChannelKind::InApp);
    assert!(digests.add(&in_app, &item("n1", 10)).await.unwrap());

    // Retention forgets folds of digests due before its cutoff.
    assert_eq!(digests.prune_folds(ts(150)).await.unwrap(), 1);
    assert!(digests.add(&tomorrow, &item("n1", 10)).await.unwrap());
    // Erasing the user forgets theirs.
    digests.erase_user("u1").await.unwrap();
    assert_eq!(digests.prune_folds(ts(10_000)).await.unwrap(), 0);
}

/// `storage/callbacks.rs`: one taker per id, also when claimed at once;
/// a released id can be taken again; pruning removes expired ids only.
/// Digest groups (a type's `digest_key`): items of one time, user, type
/// and channel in two groups are two digests, each whole; removing one
/// leaves the other.
async fn digest_groups_are_separate_digests(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let digests = &stores.digests;
    let in_group = |group: &str| DigestKey {
        group: group.to_owned(),
        ..key(100, "u1", ChannelKind::Email)
    };
    for (id, group) in [
        ("n1", "project-a"),
        ("n2", "project-b"),
        ("n3", "project-a"),
        ("n4", ""),
    ] {
        assert!(digests.add(&in_group(group), &item(id, 1)).await.unwrap());
    }
    let due = digests.due(ts(100), 10).await.unwrap();
    let groups: Vec<(&str, Vec<&str>)> = due
        .iter()
        .map(|digest| {
            let ids = digest
                .items
                .iter()
                .map(|i| i.notification_id.as_str())
                .collect();
            (digest.key.group.as_str(), ids)
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("", vec!["n4"]),
            ("project-a", vec!["n1", "n3"]),
            ("project-b", vec!["n2"])
        ]
    );
    let ids: std::collections::HashSet<String> = due.iter().map(|d| d.key.source_id()).collect();
    assert_eq!(ids.len(), 3, "each group's digest has its own id");
    digests.remove(&due[1]).await.unwrap();
    let left = digests.due(ts(100), 10).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|digest| digest.key.group != "project-a"));
}

async fn a_callback_id_is_taken_once(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let ids = stores.callback_ids.clone();
    let claims = (0..8).map(|_| {
        let ids = ids.clone();
        tokio::spawn(async move { ids.claim("email", "msg_1", ts(300)).await.unwrap() })
    });
    let mut taken = 0;
    for claim in claims {
        taken += usize::from(claim.await.unwrap());
    }
    assert_eq!(
        taken, 1,
        "exactly one of the concurrent claims takes the id"
    );
    assert!(!ids.claim("email", "msg_1", ts(300)).await.unwrap());
    assert!(
        ids.claim("sms", "msg_1", ts(300)).await.unwrap(),
        "ids are per source"
    );
    ids.release("email", "msg_1").await.unwrap();
    assert!(ids.claim("email", "msg_1", ts(300)).await.unwrap());
    assert!(ids.claim("email", "msg_2", ts(900)).await.unwrap());
    assert_eq!(
        ids.prune(ts(300)).await.unwrap(),
        0,
        "not expired before the cutoff"
    );
    assert_eq!(ids.prune(ts(301)).await.unwrap(), 2);
    assert!(
        ids.claim("email", "msg_1", ts(300)).await.unwrap(),
        "pruned"
    );
    assert!(!ids.claim("email", "msg_2", ts(900)).await.unwrap(), "kept");
}

on_both_engines!(
    digest_groups_are_separate_digests,
    a_callback_id_is_taken_once,
    a_notification_is_folded_into_one_digest_per_channel,
    the_feed_cursor_survives_a_reopen,
    due_digests_come_back_whole_in_due_order_and_once,
    a_pending_trigger_fires_once_at_its_time,
    a_cancelled_trigger_never_fires,
    erase_removes_a_users_rows_only,
);
