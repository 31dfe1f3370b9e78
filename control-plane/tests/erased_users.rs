//! Nothing new outlives an erasure (`control-plane/src/storage/tombstones.rs`):
//! once a user's tombstone is committed, no notification, delivery, inbox
//! item, digest item or pending trigger is created for them, even by a
//! writer that decided to before (the engine holding a page of their
//! events, a dispatcher holding a claimed in-app delivery). Every case
//! runs on SQLite and on PostgreSQL; other users are untouched.

#[macro_use]
mod support;

use jiff::Timestamp;
use nudge_control_plane::channels::{ChannelKind, OutboundMessage, Recipient};
use nudge_control_plane::delivery::{Delivery, NewDelivery};
use nudge_control_plane::digest::{DigestItem, DigestKey};
use nudge_control_plane::event::{JsonObject, NotifyRequest, Priority};
use nudge_control_plane::inbox::InboxItem;
use nudge_control_plane::notifications::{Created, NewNotification};
use nudge_control_plane::storage::Stores;
use support::Backend;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

async fn open(backend: Backend) -> (tempfile::TempDir, Stores) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    (dir, stores)
}

/// The erasure's first step: the tombstone (its deletes follow it).
async fn tombstone(stores: &Stores, user: &str) {
    stores.events.erase_user(user, at(0)).await.unwrap();
}

fn draft(user: &str, source: &str) -> NewNotification {
    NewNotification {
        user_id: user.to_owned(),
        request: NotifyRequest {
            notification_type: "comment".to_owned(),
            template: None,
            title: Some("New comment".to_owned()),
            body: Some("on your post".to_owned()),
            data: Default::default(),
            priority: Priority::Normal,
            channels: vec![ChannelKind::InApp],
            idempotency_key: None,
            cost: None,
        },
        source_event_id: Some(source.to_owned()),
    }
}

fn delivery(user: &str) -> Delivery {
    Delivery::new(
        NewDelivery {
            notification_id: format!("n-{user}"),
            user_id: user.to_owned(),
            channel: ChannelKind::InApp,
            priority: Priority::Normal,
            message: OutboundMessage::default(),
            recipient: Recipient::User {
                user_id: user.to_owned(),
            },
            not_before: None,
        },
        at(1),
    )
}

fn inbox_item(id: &str) -> InboxItem {
    InboxItem {
        id: id.to_owned(),
        notification_id: format!("n-{id}"),
        notification_type: "comment".into(),
        category: None,
        title: "New comment".into(),
        body: "on your post".into(),
        data: serde_json::json!({}),
        created_at: at(1),
        seen_at: None,
        read_at: None,
        archived_at: None,
        snoozed_until: None,
    }
}

fn digest_key(user: &str) -> DigestKey {
    DigestKey {
        due_at: at(3600),
        user_id: user.to_owned(),
        notification_type: "comment".to_owned(),
        channel: ChannelKind::Email,
        group: String::new(),
    }
}

fn digest_item(id: &str) -> DigestItem {
    DigestItem {
        notification_id: id.to_owned(),
        created_at: at(1),
        subject: "New comment".to_owned(),
        title: String::new(),
        text: String::new(),
        data: serde_json::json!({}),
    }
}

async fn an_erased_users_notifications_are_not_created(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    tombstone(&stores, "gone").await;

    let created = stores
        .notifications
        .create_all(vec![draft("gone", "e1"), draft("kept", "e2")], at(1))
        .await
        .unwrap();
    assert!(
        matches!(created[0], Created::UserErased),
        "{:?}",
        created[0]
    );
    assert!(matches!(created[1], Created::New(_)), "{:?}", created[1]);
    let single = stores
        .notifications
        .create(draft("gone", "e3"), at(1))
        .await
        .unwrap();
    assert!(matches!(single, Created::UserErased));
    assert!(
        stores
            .notifications
            .list_for_user("gone", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        stores
            .notifications
            .list_for_user("kept", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn an_erased_users_deliveries_are_not_enqueued(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    tombstone(&stores, "gone").await;
    let (gone, kept) = (delivery("gone"), delivery("kept"));
    let (gone_id, kept_id) = (gone.id, kept.id);

    let new = stores
        .deliveries
        .enqueue_all(vec![gone, kept])
        .await
        .unwrap();
    assert_eq!(new, vec![kept_id]);
    assert!(stores.deliveries.get(gone_id).await.unwrap().is_none());
    assert!(stores.deliveries.get(kept_id).await.unwrap().is_some());
}

async fn an_erased_users_inbox_gets_nothing(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    tombstone(&stores, "gone").await;

    assert!(!stores.inbox.add("gone", &inbox_item("i1")).await.unwrap());
    assert_eq!(
        stores
            .inbox
            .add_many("gone", &[inbox_item("i2"), inbox_item("i3")])
            .await
            .unwrap(),
        0
    );
    assert!(stores.inbox.items_of("gone").await.unwrap().is_empty());
    assert_eq!(stores.inbox.counts("gone").await.unwrap().total, 0);
    assert_eq!(stores.inbox.last_seq("gone").await.unwrap(), 0);
    assert!(stores.inbox.add("kept", &inbox_item("i1")).await.unwrap());
}

async fn nothing_is_held_or_scheduled_for_an_erased_user(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    tombstone(&stores, "gone").await;

    stores
        .digests
        .add(&digest_key("gone"), &digest_item("n1"))
        .await
        .unwrap();
    stores
        .digests
        .add(&digest_key("kept"), &digest_item("n2"))
        .await
        .unwrap();
    let due = stores.digests.due(at(7200), 10).await.unwrap();
    let users: Vec<&str> = due
        .iter()
        .map(|digest| digest.key.user_id.as_str())
        .collect();
    assert_eq!(users, ["kept"]);

    let properties = JsonObject::new();
    let scheduled = stores
        .pending
        .schedule("reminder", "gone", "e1", &properties, at(1), at(60))
        .await
        .unwrap();
    assert!(!scheduled, "nothing is scheduled for an erased user");
    assert!(
        stores
            .pending
            .schedule("reminder", "kept", "e2", &properties, at(1), at(60))
            .await
            .unwrap()
    );
    assert_eq!(stores.pending.count().await.unwrap(), 1);
}

/// Creators racing an erasure (tombstone, then the deletes, as privacy
/// erases): whatever committed before the tombstone is deleted, whatever
/// came after it was refused, so nothing of the user is left.
async fn creates_racing_an_erasure_leave_nothing_behind(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let creators: Vec<_> = (0..4)
        .map(|writer| {
            let notifications = stores.notifications.clone();
            let inbox = stores.inbox.clone();
            tokio::spawn(async move {
                for n in 0..40 {
                    notifications
                        .create(draft("racer", &format!("e{writer}-{n}")), at(1))
                        .await
                        .unwrap();
                    inbox
                        .add("racer", &inbox_item(&format!("{writer:02}{n:04}")))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    tombstone(&stores, "racer").await;
    stores.notifications.erase_user("racer").await.unwrap();
    stores.inbox.erase_user("racer").await.unwrap();
    for creator in creators {
        creator.await.unwrap();
    }

    assert!(
        stores
            .notifications
            .list_for_user("racer", 1000)
            .await
            .unwrap()
            .is_empty(),
        "a notification outlived the erasure"
    );
    assert!(
        stores.inbox.items_of("racer").await.unwrap().is_empty(),
        "an inbox item outlived the erasure"
    );
    assert_eq!(stores.inbox.counts("racer").await.unwrap().total, 0);
}

on_both_engines!(
    an_erased_users_notifications_are_not_created,
    an_erased_users_deliveries_are_not_enqueued,
    an_erased_users_inbox_gets_nothing,
    nothing_is_held_or_scheduled_for_an_erased_user,
    creates_racing_an_erasure_leave_nothing_behind,
);
