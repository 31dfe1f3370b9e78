//! The conformance suite of notifications and the delivery queue: every
//! case runs on SQLite and on PostgreSQL (`support::Backend`) against the
//! promises of `control-plane/src/storage/{notifications,deliveries}.rs`
//! and `control-plane/src/delivery/queue.rs`: idempotent creation under
//! concurrent callers, claims taken once by concurrent claimers in claim
//! order, facts committed with their change and only then, recovery after
//! a crash, and removal with the keys that name a notification.

#[macro_use]
mod support;

use std::collections::HashSet;

use jiff::{SignedDuration, Timestamp};
use nudge_control_plane::channels::{ChannelKind, OutboundMessage, Recipient, SendReceipt};
use nudge_control_plane::delivery::{
    CLAIM_LEASE, Completion, Delivery, DeliveryQueue, Engagement, FactKind, NewDelivery, Priority,
    QueueError, Status,
};
use nudge_control_plane::event::NotifyRequest;
use nudge_control_plane::notifications::{Created, NewNotification, NotificationStore};
use nudge_control_plane::storage::Stores;
use support::Backend;

fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

async fn open(backend: Backend) -> (tempfile::TempDir, Stores) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    (dir, stores)
}

fn draft(user: &str, key: Option<&str>, source: Option<&str>) -> NewNotification {
    NewNotification {
        user_id: user.to_owned(),
        request: NotifyRequest {
            notification_type: "invoice".to_owned(),
            template: None,
            title: Some("Your invoice".to_owned()),
            body: Some("is ready".to_owned()),
            data: Default::default(),
            priority: Priority::Normal,
            channels: vec![ChannelKind::Email],
            idempotency_key: key.map(str::to_owned),
            cost: None,
        },
        source_event_id: source.map(str::to_owned),
    }
}

fn id_of(created: &Created) -> String {
    match created {
        Created::New(notification) | Created::Existing(notification) => notification.id.clone(),
        Created::UserErased => panic!("no user of these tests is erased"),
    }
}

/// `count` concurrent creates of `draft`; the ids they answer and how many
/// said `New`.
async fn create_concurrently(
    store: &NotificationStore,
    count: usize,
    make: impl Fn() -> NewNotification,
) -> (HashSet<String>, usize) {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let store = store.clone();
            let draft = make();
            tokio::spawn(async move { store.create(draft, start()).await.unwrap() })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut new = 0;
    for task in tasks {
        let created = task.await.unwrap();
        new += usize::from(matches!(created, Created::New(_)));
        ids.insert(id_of(&created));
    }
    (ids, new)
}

async fn one_source_event_creates_one_notification_under_concurrency(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let (ids, new) = create_concurrently(&stores.notifications, 8, || {
        draft("u1", None, Some("evt-1"))
    })
    .await;
    assert_eq!((ids.len(), new), (1, 1), "one notification, created once");
    let listed = stores.notifications.list_for_user("u1", 10).await.unwrap();
    assert_eq!(listed.len(), 1);
}

async fn one_idempotency_key_creates_one_notification_per_window(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let store = &stores.notifications;
    let (ids, new) = create_concurrently(store, 8, || draft("u1", Some("inv-7"), None)).await;
    assert_eq!((ids.len(), new), (1, 1));
    let first = ids.into_iter().next().unwrap();
    // Another user's same key is theirs.
    let theirs = store
        .create(draft("u2", Some("inv-7"), None), start())
        .await
        .unwrap();
    assert!(matches!(theirs, Created::New(_)));
    // Within the window: the first; after it: a new one.
    let within = store
        .create(
            draft("u1", Some("inv-7"), None),
            start() + SignedDuration::from_hours(47),
        )
        .await
        .unwrap();
    assert_eq!(id_of(&within), first);
    let after = store
        .create(
            draft("u1", Some("inv-7"), None),
            start() + SignedDuration::from_hours(49),
        )
        .await
        .unwrap();
    assert!(matches!(after, Created::New(_)));
    assert_ne!(id_of(&after), first);
}

async fn erasing_frees_the_keys_and_sources_of_the_user_only(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let store = &stores.notifications;
    let mine = store
        .create(draft("u1", Some("k"), Some("e1")), start())
        .await
        .unwrap();
    store
        .create(draft("u2", Some("k"), Some("e2")), start())
        .await
        .unwrap();
    let removed = store.erase_user("u1").await.unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].id, id_of(&mine));
    assert!(store.get(&id_of(&mine)).await.unwrap().is_none());
    assert_eq!(store.list_for_user("u2", 10).await.unwrap().len(), 1);
    let again = store
        .create(draft("u1", Some("k"), Some("e1")), start())
        .await
        .unwrap();
    assert!(matches!(again, Created::New(_)));
    // Retention removes by age, with the key that names it.
    let old = store
        .created_before(start() + SignedDuration::from_secs(1), 100)
        .await
        .unwrap();
    assert_eq!(old.len(), 2);
    let ids: Vec<String> = old.into_iter().map(|n| n.id).collect();
    assert_eq!(store.remove(&ids).await.unwrap(), 2);
    let after = store
        .create(draft("u2", Some("k"), None), start())
        .await
        .unwrap();
    assert!(matches!(after, Created::New(_)), "the key went with it");
}

async fn a_page_created_together_keeps_each_promise(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let store = &stores.notifications;
    let replayed = store
        .create(draft("u1", None, Some("evt-0")), start())
        .await
        .unwrap();
    let page = vec![
        draft("u1", None, Some("evt-1")),
        draft("u1", Some("k"), Some("evt-2")),
        // The same key in the same page: the one before it.
        draft("u1", Some("k"), Some("evt-3")),
        // A replayed source event: the stored one.
        draft("u1", None, Some("evt-0")),
        // The same source twice in one page: one notification.
        draft("u2", None, Some("evt-4")),
        draft("u2", None, Some("evt-4")),
        // The same source twice, the first giving way to the key's
        // holder: both find that holder.
        draft("u1", Some("k"), Some("evt-5")),
        draft("u1", Some("k"), Some("evt-5")),
    ];
    let created = store.create_all(page, start()).await.unwrap();
    let ids: Vec<String> = created.iter().map(id_of).collect();
    let new: Vec<bool> = created
        .iter()
        .map(|created| matches!(created, Created::New(_)))
        .collect();
    assert_eq!(new, [true, true, false, false, true, false, false, false]);
    assert_eq!(ids[2], ids[1], "the key's holder");
    assert_eq!(ids[6], ids[1], "the key's holder");
    assert_eq!(ids[7], ids[1], "the holder its first draft gave way to");
    assert_eq!(ids[3], id_of(&replayed));
    assert_eq!(ids[5], ids[4]);
    assert_eq!(store.list_for_user("u1", 10).await.unwrap().len(), 3);
    assert_eq!(store.list_for_user("u2", 10).await.unwrap().len(), 1);
    // The key's loser left nothing behind: its source is free.
    let again = store
        .create(draft("u1", None, Some("evt-3")), start())
        .await
        .unwrap();
    assert!(matches!(again, Created::New(_)));
}

async fn outcomes_sent_together_are_each_recorded_once(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let queue = stores.deliveries.clone();
    let now = start();
    let items: Vec<Delivery> = (0..200)
        .map(|_| delivery(ChannelKind::Webhook, Priority::Normal, now))
        .collect();
    queue.enqueue_all(items.clone()).await.unwrap();
    let claimed = queue
        .claim_due(ChannelKind::Webhook, now, 200)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 200);
    // Every send finishes at once, and one outcome comes twice: the
    // writer's groups take them together.
    let mut tasks = Vec::new();
    for item in items.iter().chain(std::iter::once(&items[0])) {
        let queue = queue.clone();
        let id = item.id;
        tasks.push(tokio::spawn(async move {
            let receipt = SendReceipt {
                provider_message_id: None,
                answer: "200".to_owned(),
            };
            queue.complete(id, &Completion::Sent(receipt), now).await
        }));
    }
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(delivery) => assert_eq!(delivery.status, Status::Sent),
            Err(QueueError::InvalidTransition { from, .. }) => {
                assert_eq!(from, Status::Sent);
                refused += 1;
            }
            Err(error) => panic!("{error}"),
        }
    }
    assert_eq!(refused, 1, "the second outcome of one send is refused");
    for item in &items {
        let stored = queue.get(item.id).await.unwrap().unwrap();
        assert_eq!(stored.status, Status::Sent);
        assert_eq!(stored.attempt_log.len(), 1);
    }
    assert_eq!(queue.fact_count().await.unwrap(), 200, "one Sent each");
    let missing = uuid::Uuid::now_v7();
    let receipt = SendReceipt {
        provider_message_id: None,
        answer: "200".to_owned(),
    };
    assert!(matches!(
        queue
            .complete(missing, &Completion::Sent(receipt), now)
            .await,
        Err(QueueError::NotFound(id)) if id == missing
    ));
}

fn delivery(channel: ChannelKind, priority: Priority, not_before: Timestamp) -> Delivery {
    Delivery::new(
        NewDelivery {
            notification_id: "n-1".to_owned(),
            user_id: "u1".to_owned(),
            channel,
            priority,
            message: OutboundMessage::default(),
            recipient: Recipient::User {
                user_id: "u1".to_owned(),
            },
            not_before: Some(not_before),
        },
        start(),
    )
}

async fn claims_go_high_priority_first_then_oldest_and_wait_for_their_time(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let queue = &stores.deliveries;
    let now = start();
    let later = now + SignedDuration::from_secs(60);
    let low = delivery(ChannelKind::Email, Priority::Low, now);
    let high_late = delivery(
        ChannelKind::Email,
        Priority::High,
        now + SignedDuration::from_secs(1),
    );
    let high = delivery(ChannelKind::Email, Priority::High, now);
    let future = delivery(ChannelKind::Email, Priority::High, later);
    let other_channel = delivery(ChannelKind::Sms, Priority::High, now);
    let all = vec![
        low.clone(),
        high_late.clone(),
        high.clone(),
        future.clone(),
        other_channel.clone(),
    ];
    assert_eq!(queue.enqueue_all(all.clone()).await.unwrap().len(), 5);
    assert!(
        queue.enqueue_all(all).await.unwrap().is_empty(),
        "a replayed plan enqueues nothing"
    );
    let at = now + SignedDuration::from_secs(2);
    let claimed: Vec<_> = queue
        .claim_due(ChannelKind::Email, at, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(claimed, vec![high.id, high_late.id, low.id]);
    assert!(
        queue
            .claim_due(ChannelKind::Email, at, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due_later = queue
        .claim_due(ChannelKind::Email, later, 10)
        .await
        .unwrap();
    assert_eq!(due_later.len(), 1);
    assert_eq!(due_later[0].id, future.id);
    assert_eq!(due_later[0].status, Status::Sending);
    let depth = queue.depth_by_channel_and_status().await.unwrap();
    assert_eq!(depth[&(ChannelKind::Email, Status::Sending)], 4);
    assert_eq!(depth[&(ChannelKind::Sms, Status::Queued)], 1);
    assert_eq!(depth[&(ChannelKind::Webhook, Status::Queued)], 0);
}

async fn concurrent_claimers_take_each_delivery_once(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let queue = stores.deliveries.clone();
    let now = start();
    let items: Vec<Delivery> = (0..300)
        .map(|i| delivery(ChannelKind::Webhook, Priority::ALL[i % 3], now))
        .collect();
    let ids: HashSet<_> = items.iter().map(|d| d.id).collect();
    queue.enqueue_all(items).await.unwrap();
    let claimers: Vec<_> = (0..6)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = queue.claim_due(ChannelKind::Webhook, now, 9).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            total += 1;
            seen.insert(id);
        }
    }
    assert_eq!(total, 300, "no delivery claimed twice");
    assert_eq!(seen, ids, "every delivery claimed");
}

async fn facts_commit_with_their_change_and_only_then(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let queue = &stores.deliveries;
    let now = start();
    let item = delivery(ChannelKind::Email, Priority::Normal, now);
    queue.enqueue(item.clone()).await.unwrap();
    // Engagement before sending is refused: nothing changes, no fact.
    let refused = queue
        .record_engagement(item.id, Engagement::Clicked, now)
        .await;
    assert!(matches!(refused, Err(QueueError::InvalidTransition { .. })));
    assert_eq!(queue.fact_count().await.unwrap(), 0);
    assert_eq!(
        queue
            .claim_due(ChannelKind::Email, now, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    let receipt = SendReceipt {
        provider_message_id: Some("<m-1@example.com>".to_owned()),
        answer: "250 ok".to_owned(),
    };
    queue
        .complete(item.id, &Completion::Sent(receipt), now)
        .await
        .unwrap();
    queue
        .record_engagement(item.id, Engagement::Clicked, now)
        .await
        .unwrap();
    queue
        .record_engagement(item.id, Engagement::Clicked, now)
        .await
        .unwrap();
    let facts = queue.table().facts(100).await.unwrap();
    let kinds: Vec<FactKind> = facts
        .iter()
        .map(|(_, fact)| fact.as_ref().unwrap().kind)
        .collect();
    assert_eq!(
        kinds,
        [FactKind::Sent, FactKind::Delivered, FactKind::Clicked],
        "the repeated click writes nothing"
    );
    // Found by the provider's id; counted facts go and stay gone.
    assert_eq!(
        queue
            .find_by_provider_id(ChannelKind::Email, "<m-1@example.com>")
            .await
            .unwrap(),
        Some(item.id)
    );
    let seqs: Vec<i64> = facts.iter().map(|(seq, _)| *seq).collect();
    queue.table().delete_facts(&seqs).await.unwrap();
    queue.table().delete_facts(&seqs).await.unwrap();
    assert_eq!(queue.fact_count().await.unwrap(), 0);
    let stored = queue.get(item.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Clicked);
    assert_eq!(stored.attempt_log.len(), 1);
}

async fn a_crash_mid_send_is_recovered_and_sent_again(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let settings = support::fresh_settings(backend, dir.path()).await;
    let now = start();
    let item = delivery(ChannelKind::Sms, Priority::Normal, now);
    {
        let stores = Stores::open(
            &settings,
            dir.path(),
            nudge_control_plane::storage::StorageMetrics::new(),
        )
        .await
        .unwrap();
        stores.deliveries.enqueue(item.clone()).await.unwrap();
        let claimed = stores
            .deliveries
            .claim_due(ChannelKind::Sms, now, 1)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        stores.close().await.unwrap();
    }
    let stores = Stores::open(
        &settings,
        dir.path(),
        nudge_control_plane::storage::StorageMetrics::new(),
    )
    .await
    .unwrap();
    let queue: &DeliveryQueue = &stores.deliveries;
    assert_eq!(
        queue.get(item.id).await.unwrap().unwrap().status,
        Status::Sending
    );
    let expired = now + SignedDuration::try_from(CLAIM_LEASE).unwrap();
    match backend {
        // One process per file: a claim found at start-up is a dead one's.
        Backend::Sqlite => assert_eq!(queue.recover(now).await.unwrap(), 1),
        // Another replica's claim may be live: it waits for its expiry.
        Backend::Postgres => {
            assert_eq!(queue.recover(now).await.unwrap(), 0, "not expired yet");
            let almost = expired - SignedDuration::from_secs(1);
            assert_eq!(queue.requeue_expired(almost).await.unwrap(), 0);
            assert_eq!(queue.requeue_expired(expired).await.unwrap(), 1);
        }
    }
    assert_eq!(queue.recover(expired).await.unwrap(), 0, "once");
    assert_eq!(queue.requeue_expired(expired).await.unwrap(), 0, "once");
    let again = queue.claim_due(ChannelKind::Sms, now, 5).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, item.id);
}

/// Replicas share the queue: a claim holds until it expires, whoever
/// sweeps; an expired one is requeued once, however many replicas sweep;
/// and the expired claim's late outcome cannot end the next claim.
async fn an_expired_claim_is_requeued_once_by_any_replica(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let queue = &stores.deliveries;
    let now = start();
    let item = delivery(ChannelKind::Webhook, Priority::Normal, now);
    queue.enqueue(item.clone()).await.unwrap();
    let first = queue.claim_due(ChannelKind::Webhook, now, 5).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        queue.requeue_expired(now).await.unwrap(),
        0,
        "a live claim stays"
    );
    let expired = now + SignedDuration::try_from(CLAIM_LEASE).unwrap();
    let sweeps = futures::future::join_all((0..4).map(|_| queue.requeue_expired(expired))).await;
    let requeued: usize = sweeps.into_iter().map(Result::unwrap).sum();
    assert_eq!(requeued, 1, "four concurrent sweeps requeue it once");
    let delivery = queue.get(item.id).await.unwrap().unwrap();
    assert_eq!(delivery.status, Status::Queued);
    assert_eq!(delivery.attempt_log.len(), 0, "no attempt counted");

    // Another replica claims it again; the first claimer's late outcome
    // is refused, so it cannot end the new claim.
    let reclaimed = queue
        .claim_due(ChannelKind::Webhook, expired, 5)
        .await
        .unwrap();
    assert_eq!(reclaimed.len(), 1);
    let sent = Completion::Sent(SendReceipt {
        provider_message_id: None,
        answer: "200".to_owned(),
    });
    assert!(matches!(
        queue.complete_claimed(&first[0], &sent, None, expired).await,
        Err(QueueError::ClaimLost(id)) if id == item.id
    ));
    let recorded = queue
        .complete_claimed(&reclaimed[0], &sent, None, expired)
        .await
        .unwrap();
    assert_eq!(recorded.status, Status::Sent);
    assert_eq!(
        recorded.attempt_log.len(),
        1,
        "one attempt, the live claim's"
    );
}

on_both_engines!(
    one_source_event_creates_one_notification_under_concurrency,
    one_idempotency_key_creates_one_notification_per_window,
    erasing_frees_the_keys_and_sources_of_the_user_only,
    a_page_created_together_keeps_each_promise,
    outcomes_sent_together_are_each_recorded_once,
    claims_go_high_priority_first_then_oldest_and_wait_for_their_time,
    concurrent_claimers_take_each_delivery_once,
    facts_commit_with_their_change_and_only_then,
    a_crash_mid_send_is_recovered_and_sent_again,
    an_expired_claim_is_requeued_once_by_any_replica,
);
