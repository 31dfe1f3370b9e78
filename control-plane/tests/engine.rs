//! The notification engine assembled from the library, on a real sled
//! store, with a controllable clock: quiet hours hold a message and release
//! it when the window opens, and a daily digest turns N notifications into
//! one message at its time, without sleeping through the night; and an
//! APNs token Apple reports `410 Unregistered` is deactivated and not used
//! again (Apple's hosts are hard-coded in a2, so Apple is played right in
//! front of a2's client, answering with a2's own types).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use nudge_control_plane::channels::apns::{ApnsChannel, ApnsSender};
use nudge_control_plane::channels::in_app::InAppChannel;
use nudge_control_plane::channels::{Channel, ChannelKind};
use nudge_control_plane::delivery::{
    Clock, Delivery, DeliveryMetrics, DeliveryQueue, Dispatcher, DispatcherConfig, ManualClock,
    Status,
};
use nudge_control_plane::devices::{DeviceStore, NewDevice, Platform, deactivation_hook};
use nudge_control_plane::engine::{
    DIGEST_SETTLE, Engine, EngineParts, EngineSettings, FeedSettings, SettingsHandle,
    delivery_id_for,
};
use nudge_control_plane::event::{Event, EventBody, NotifyRequest};
use nudge_control_plane::money::Money;
use nudge_control_plane::notifications::NotificationStore;
use nudge_control_plane::preferences::{
    Frequency, OperatorDefaults, QuietHours, TypeDefaults, Tz, UserPreferences,
};
use nudge_control_plane::send_check;
use nudge_control_plane::storage::{EventStore, Stores};
use nudge_control_plane::throttle::{Throttle, ThrottleOver, ThrottleScope, Throttles};
use nudge_control_plane::workflow::{self, Step};

mod support;
use nudge_control_plane::templates::{Template, TemplateSet};

const USER: &str = "night-owl";

fn notify_event(id: &str, at: Timestamp) -> Event {
    notify_event_with(id, at, "New comment", Map::new())
}

fn notify_event_with(id: &str, at: Timestamp, title: &str, data: Map<String, Value>) -> Event {
    Event {
        id: id.into(),
        user_id: Some(USER.into()),
        anonymous_id: None,
        timestamp: None,
        sent_at: None,
        received_at: Some(at),
        ingested_at: at,
        agent_id: "test".into(),
        write_key: None,
        context: Map::new(),
        integrations: Map::new(),
        body: EventBody::Notify(NotifyRequest {
            notification_type: "comment".into(),
            template: None,
            title: Some(title.into()),
            body: Some("Someone replied to you".into()),
            channels: vec![ChannelKind::InApp],
            data,
            priority: Default::default(),
            idempotency_key: None,
            cost: None,
        }),
    }
}

/// The engine and a dispatcher with the in-app channel over one sled store,
/// on a manual clock.
struct Harness {
    _dir: tempfile::TempDir,
    stores: Stores,
    store: EventStore,
    engine: Engine,
    queue: DeliveryQueue,
    notifications: NotificationStore,
    devices: DeviceStore,
    clock: Arc<ManualClock>,
    stop: CancellationToken,
    dispatching: tokio::task::JoinHandle<Result<(), nudge_control_plane::delivery::QueueError>>,
}

impl Harness {
    async fn start(
        start: Timestamp,
        preferences: &UserPreferences,
        settings: EngineSettings,
    ) -> Self {
        Self::with_channels(start, preferences, settings, Vec::new()).await
    }

    /// In-app plus `channels`, each enabled, with devices deactivated when
    /// a channel reports an invalid recipient (as the program wires it).
    async fn with_channels(
        start: Timestamp,
        preferences: &UserPreferences,
        settings: EngineSettings,
        channels: Vec<Arc<dyn Channel>>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(dir.path()).await.unwrap();
        let store: EventStore = stores.events.clone();
        let manual = Arc::new(ManualClock::new(start));
        let clock: Arc<dyn Clock> = manual.clone();
        let preference_store = stores.preferences.clone();
        preference_store.put(USER, preferences).await.unwrap();
        let queue = stores.deliveries.clone();
        let notifications = stores.notifications.clone();
        let devices = stores.devices.clone();
        let mut enabled: BTreeSet<ChannelKind> = channels.iter().map(|c| c.kind()).collect();
        enabled.insert(ChannelKind::InApp);
        let engine = Engine::new(
            EngineParts {
                store: store.clone(),
                notifications: notifications.clone(),
                preferences: preference_store,
                queue: queue.clone(),
                devices: devices.clone(),
                cursors: stores.cursors.clone(),
                leases: stores.leases.clone(),
                replica: FeedSettings::new("engine-test", Duration::from_secs(10)),
                digests: stores.digests.clone(),
                pending: stores.pending.clone(),
                topics: stores.topics.clone(),
                broadcasts: stores.broadcasts.clone(),
                clock: Arc::clone(&clock),
            },
            SettingsHandle::new(EngineSettings {
                enabled,
                ..settings
            }),
            &prometheus::Registry::new(),
        )
        .unwrap();
        let dispatcher = Dispatcher::new(
            queue.clone(),
            DispatcherConfig {
                poll_interval: Duration::from_millis(10),
                ..DispatcherConfig::default()
            },
            Arc::clone(&clock),
            DeliveryMetrics::new().unwrap(),
        )
        .with_channel(Arc::new(InAppChannel::new(stores.inbox.clone())))
        .on_invalid_recipient(deactivation_hook(devices.clone(), Arc::clone(&clock)))
        .with_send_check(send_check::checker(
            queue.clone(),
            stores.inbox.clone(),
            stores.broadcasts.clone(),
        ));
        let dispatcher = channels
            .into_iter()
            .fold(dispatcher, |dispatcher, channel| {
                dispatcher.with_channel(channel)
            });
        let stop = CancellationToken::new();
        let dispatching = tokio::spawn(dispatcher.run(stop.clone()));
        Harness {
            _dir: dir,
            stores,
            store,
            engine,
            queue,
            notifications,
            devices,
            clock: manual,
            stop,
            dispatching,
        }
    }

    /// Waits (real time) until the delivery is sent.
    async fn sent(&self, delivery_id: uuid::Uuid) -> Delivery {
        self.reaching(delivery_id, Status::Sent).await
    }

    /// Waits (real time) until the delivery has `status`.
    async fn reaching(&self, delivery_id: uuid::Uuid, status: Status) -> Delivery {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let delivery = self.queue.get(delivery_id).await.unwrap().unwrap();
            if delivery.status == status {
                return delivery;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not sent in time: {delivery:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.dispatching.await.unwrap().unwrap();
    }
}

/// A replica told to stop leaves its feed at a page boundary instead of
/// working through the whole backlog first (a drain after a burst of
/// millions of events overran its grace period), and what it left is
/// processed by the next run, once.
#[tokio::test]
async fn a_stopped_engine_leaves_the_rest_of_its_feed_for_later() {
    let now: Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
    let h = Harness::start(now, &UserPreferences::default(), EngineSettings::default()).await;
    h.store
        .ingest(
            (1..=3)
                .map(|i| notify_event(&format!("evt-{i}"), now))
                .collect(),
        )
        .await
        .unwrap();
    let stop = CancellationToken::new();
    stop.cancel();
    assert_eq!(h.engine.process_until(Some(&stop)).await.unwrap(), 0);
    assert!(
        h.notifications
            .list_for_user(USER, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.engine.process_available().await.unwrap(), 3);
    assert_eq!(h.engine.process_available().await.unwrap(), 0);
    assert_eq!(
        h.notifications.list_for_user(USER, 10).await.unwrap().len(),
        3
    );
}

#[tokio::test]
async fn quiet_hours_hold_a_notification_until_the_window_opens() {
    // 23:30 in Berlin (CEST, UTC+2) on a summer night; quiet 22:00-07:00.
    let night: Timestamp = "2026-07-01T21:30:00Z".parse().unwrap();
    let window_opens: Timestamp = "2026-07-02T05:00:00Z".parse().unwrap();
    let preferences = UserPreferences {
        quiet_hours: Some(QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap()),
        ..UserPreferences::default()
    };
    let h = Harness::start(night, &preferences, EngineSettings::default()).await;

    h.store
        .ingest(vec![notify_event("evt-1", night)])
        .await
        .unwrap();
    assert_eq!(h.engine.process_available().await.unwrap(), 1);
    let notification = h
        .notifications
        .list_for_user(USER, 10)
        .await
        .unwrap()
        .remove(0);
    let delivery_id = delivery_id_for(&notification.id, ChannelKind::InApp, None).unwrap();
    let held = h.queue.get(delivery_id).await.unwrap().unwrap();
    assert_eq!(held.not_before, window_opens, "held until 07:00 Berlin");

    // The dispatcher polls every 10 ms: give it many chances to send early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = h.queue.get(delivery_id).await.unwrap().unwrap();
    assert_eq!(still.status, Status::Queued, "sent inside quiet hours");
    assert_eq!(still.attempts, 0);

    h.clock.set(window_opens + SignedDuration::from_secs(1));
    assert_eq!(h.sent(delivery_id).await.attempts, 1);
    h.stop().await;
}

/// The engine at `start` for a user in Berlin whose `comment`
/// notifications (in-app) are collected into a daily digest at 09:00.
async fn daily_comment_digest(start: Timestamp) -> Harness {
    let preferences = UserPreferences {
        timezone: Some(Tz::new("Europe/Berlin").unwrap()),
        ..UserPreferences::default()
    };
    let defaults = OperatorDefaults {
        types: [(
            "comment".to_owned(),
            TypeDefaults {
                channels: [ChannelKind::InApp].into_iter().collect(),
                critical: false,
                frequency: Frequency::Daily,
                category: None,
            },
        )]
        .into_iter()
        .collect(),
    };
    Harness::start(
        start,
        &preferences,
        EngineSettings {
            defaults,
            ..EngineSettings::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_daily_digest_turns_n_notifications_into_one_message() {
    // 10:00 in Berlin: today's 09:00 digest has gone, the next is tomorrow.
    let morning: Timestamp = "2026-07-01T08:00:00Z".parse().unwrap();
    let digest_time: Timestamp = "2026-07-02T07:00:00Z".parse().unwrap();
    let h = daily_comment_digest(morning).await;

    let titles = ["Ana replied", "Ben replied", "Cy replied"];
    let mut at = morning;
    for (n, title) in titles.iter().enumerate() {
        at += SignedDuration::from_mins(90);
        h.clock.set(at);
        let data = json!({ "comment_id": n }).as_object().unwrap().clone();
        h.store
            .ingest(vec![notify_event_with(
                &format!("evt-{n}"),
                at,
                title,
                data,
            )])
            .await
            .unwrap();
        assert_eq!(h.engine.process_available().await.unwrap(), 1);
    }
    let created = h.notifications.list_for_user(USER, 10).await.unwrap();
    assert_eq!(created.len(), 3);
    for notification in &created {
        let own = delivery_id_for(&notification.id, ChannelKind::InApp, None).unwrap();
        assert_eq!(
            h.queue.get(own).await.unwrap(),
            None,
            "held for the digest, not queued"
        );
    }
    let depth: u64 = h
        .queue
        .depth_by_channel_and_status()
        .await
        .unwrap()
        .values()
        .sum();
    assert_eq!(depth, 0, "nothing queued before the digest time");

    // Just before 09:00 and its settle time nothing goes out; then one
    // digest does.
    let settled = |at: Timestamp| at + SignedDuration::try_from(DIGEST_SETTLE).unwrap();
    h.clock
        .set(settled(digest_time) - SignedDuration::from_secs(1));
    h.engine.process_available().await.unwrap();
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 0);
    h.clock.set(settled(digest_time));
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 1);
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 0, "sent once");

    let all = h.notifications.list_for_user(USER, 10).await.unwrap();
    assert_eq!(all.len(), 4, "three held notifications and their digest");
    let digest = all
        .iter()
        .find(|n| {
            n.source_event_id
                .as_deref()
                .is_some_and(|s| s.starts_with("digest:"))
        })
        .expect("a digest notification");
    let summary = &digest.request.data["digest"];
    assert_eq!(summary["count"], 3);
    let ids: Vec<&str> = summary["notification_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = created.iter().map(|n| n.id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "every held notification, in order");

    let delivery_id = delivery_id_for(&digest.id, ChannelKind::InApp, None).unwrap();
    let sent = h.sent(delivery_id).await;
    assert_eq!(sent.message.subject, "3 new comment notifications");
    // Analytics counts every digest of a type as one template.
    assert_eq!(sent.template.as_deref(), Some("comment:digest"));
    assert_eq!(sent.cost, None);
    for title in titles {
        assert!(
            sent.message.text_body.contains(&format!("- {title}")),
            "{title} missing from {:?}",
            sent.message.text_body
        );
    }
    h.stop().await;
}

/// Issue 16, item 6: a type's `digest_key` splits its digest: comments on
/// two projects held for one daily digest go out as one digest per
/// project, each listing its own items, with the group in its data and
/// its digest template.
#[tokio::test]
async fn a_digest_key_sends_one_digest_per_value() {
    let morning: Timestamp = "2026-07-01T08:00:00Z".parse().unwrap();
    let digest_time: Timestamp = "2026-07-02T07:00:00Z".parse().unwrap();
    let preferences = UserPreferences {
        timezone: Some(Tz::new("Europe/Berlin").unwrap()),
        ..UserPreferences::default()
    };
    let mut templates = TemplateSet::new();
    templates
        .set_type(
            "comment",
            nudge_control_plane::templates::TypeTemplates {
                digest_fallback: Some(Template {
                    title: "{{ count }} on {{ group }}".into(),
                    text: "{% for item in items %}{{ item.title }};{% endfor %}".into(),
                    ..Template::default()
                }),
                ..Default::default()
            },
        )
        .unwrap();
    let settings = EngineSettings {
        defaults: OperatorDefaults {
            types: [(
                "comment".to_owned(),
                TypeDefaults {
                    channels: [ChannelKind::InApp].into_iter().collect(),
                    critical: false,
                    frequency: Frequency::Daily,
                    category: None,
                },
            )]
            .into_iter()
            .collect(),
        },
        templates,
        digest_keys: [("comment".to_owned(), "project.name".to_owned())].into(),
        ..EngineSettings::default()
    };
    let h = Harness::start(morning, &preferences, settings).await;
    for (n, project) in ["apollo", "gemini", "apollo"].iter().enumerate() {
        let data = json!({ "project": { "name": project } })
            .as_object()
            .unwrap()
            .clone();
        let event = notify_event_with(&format!("evt-{n}"), morning, &format!("c{n}"), data);
        h.store.ingest(vec![event]).await.unwrap();
        assert_eq!(h.engine.process_available().await.unwrap(), 1);
    }
    h.clock
        .set(digest_time + SignedDuration::try_from(DIGEST_SETTLE).unwrap());
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 2);
    let mut sent = Vec::new();
    for digest in h.notifications.list_for_user(USER, 10).await.unwrap() {
        if !digest
            .source_event_id
            .as_deref()
            .is_some_and(|s| s.starts_with("digest:"))
        {
            continue;
        }
        let id = delivery_id_for(&digest.id, ChannelKind::InApp, None).unwrap();
        let delivery = h.sent(id).await;
        sent.push((
            digest.request.data["digest"]["group"]
                .as_str()
                .unwrap()
                .to_owned(),
            delivery.message.subject,
            delivery.message.text_body,
        ));
    }
    sent.sort();
    assert_eq!(
        sent,
        [
            (
                "apollo".to_owned(),
                "2 on apollo".to_owned(),
                "c0;c2;".to_owned()
            ),
            (
                "gemini".to_owned(),
                "1 on gemini".to_owned(),
                "c1;".to_owned()
            ),
        ]
    );
    h.stop().await;
}

/// An idempotent resend (same key, new event) of a notification whose
/// digest was already sent finds the first notification and plans it
/// again: that must not put it into the next digest as well.
#[tokio::test]
async fn a_resent_notification_already_in_a_sent_digest_is_not_in_the_next() {
    let morning: Timestamp = "2026-07-01T08:00:00Z".parse().unwrap();
    let first_digest: Timestamp = "2026-07-02T07:00:00Z".parse().unwrap();
    let second_digest: Timestamp = "2026-07-03T07:00:00Z".parse().unwrap();
    let h = daily_comment_digest(morning).await;
    let keyed = |id: &str, at: Timestamp, key: &str| {
        let mut event = notify_event(id, at);
        if let EventBody::Notify(request) = &mut event.body {
            request.idempotency_key = Some(key.to_owned());
        }
        event
    };
    let digest_ids = |digest: &nudge_control_plane::notifications::Notification| -> Vec<String> {
        digest.request.data["digest"]["notification_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect()
    };

    h.store
        .ingest(vec![keyed("evt-1", morning, "order-1")])
        .await
        .unwrap();
    assert_eq!(h.engine.process_available().await.unwrap(), 1);
    let first = h.notifications.list_for_user(USER, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    let settle = SignedDuration::try_from(DIGEST_SETTLE).unwrap();
    h.clock.set(first_digest + settle);
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 1);

    // After the digest went out: the app resends (same key, new event id),
    // and something new arrives for tomorrow's digest.
    let later = first_digest + SignedDuration::from_hours(1);
    h.clock.set(later);
    h.store
        .ingest(vec![
            keyed("evt-2", later, "order-1"),
            keyed("evt-3", later, "order-2"),
        ])
        .await
        .unwrap();
    assert_eq!(h.engine.process_available().await.unwrap(), 2);
    h.clock.set(second_digest + settle);
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 1);

    let all = h.notifications.list_for_user(USER, 10).await.unwrap();
    let mut digests: Vec<_> = all
        .iter()
        .filter(|n| {
            n.source_event_id
                .as_deref()
                .is_some_and(|s| s.starts_with("digest:"))
        })
        .collect();
    digests.sort_by_key(|n| n.created_at);
    assert_eq!(digests.len(), 2);
    assert_eq!(digest_ids(digests[0]), vec![first[0].id.clone()]);
    let fresh: Vec<String> = all
        .iter()
        .filter(|n| n.request.idempotency_key.as_deref() == Some("order-2"))
        .map(|n| n.id.clone())
        .collect();
    assert_eq!(
        digest_ids(digests[1]),
        fresh,
        "only the new notification; the resent one was in yesterday's digest"
    );
    h.stop().await;
}

/// Each delivery names the template that rendered it (the notify's, else
/// the type's own, none for a notify's raw title and body) and carries the
/// notify's per-send cost, so the delivery facts analytics counts have them.
/// Issue 16, item 2: a type throttled to 2 an hour per user lets the
/// first two of four notifications through, and folds the other two into
/// one digest that goes out when the first one leaves the window; a type
/// that drops instead sends nothing over its limit, and says why.
#[tokio::test]
async fn a_throttle_lets_its_limit_through_and_folds_or_drops_the_rest() {
    let start: Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
    let in_app = |category: &str| TypeDefaults {
        channels: [ChannelKind::InApp].into_iter().collect(),
        critical: false,
        frequency: Frequency::Instant,
        category: Some(category.into()),
    };
    let limit = |limit, over| Throttle {
        limit,
        window: "1h".into(),
        per: ThrottleScope::Type,
        over,
    };
    let (comments, likes) = (limit(2, ThrottleOver::Digest), limit(1, ThrottleOver::Drop));
    let settings = EngineSettings {
        defaults: OperatorDefaults {
            types: [
                ("comment".to_owned(), in_app("social")),
                ("like".to_owned(), in_app("social")),
            ]
            .into_iter()
            .collect(),
        },
        throttles: Throttles::new([
            ("comment", Some(&comments), Some("social")),
            ("like", Some(&likes), Some("social")),
        ]),
        ..EngineSettings::default()
    };
    let h = Harness::start(start, &UserPreferences::default(), settings).await;
    let notify = |n: i64, kind: &str| {
        let mut event = notify_event_with(
            &format!("{kind}-{n}"),
            start,
            &format!("{kind} {n}"),
            Map::new(),
        );
        let EventBody::Notify(request) = &mut event.body else {
            unreachable!()
        };
        request.notification_type = kind.into();
        event
    };
    for n in 0..4 {
        h.clock.set(start + SignedDuration::from_mins(n * 5));
        h.store.ingest(vec![notify(n, "comment")]).await.unwrap();
        assert_eq!(h.engine.process_available().await.unwrap(), 1);
    }
    for n in 0..2 {
        h.store.ingest(vec![notify(n, "like")]).await.unwrap();
        assert_eq!(h.engine.process_available().await.unwrap(), 1);
    }
    let created = h.notifications.list_for_user(USER, 20).await.unwrap();
    let mut queued = Vec::new();
    for notification in &created {
        let own = delivery_id_for(&notification.id, ChannelKind::InApp, None).unwrap();
        if h.queue.get(own).await.unwrap().is_some() {
            queued.push(notification.request.title.clone().unwrap());
        }
    }
    queued.sort();
    assert_eq!(queued, ["comment 0", "comment 1", "like 0"]);
    let dropped = created
        .iter()
        .find(|n| n.request.title.as_deref() == Some("like 1"))
        .unwrap();
    let recorded = h
        .notifications
        .throttle_decisions(&dropped.id)
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].outcome.as_str(), recorded[0].scope.as_str()),
        ("dropped", "type:like")
    );

    // The first comment (12:00) leaves the window at 13:00: the digest of
    // the two held ones is due then, not before.
    let frees = start + SignedDuration::from_hours(1);
    let settled = |at: Timestamp| at + SignedDuration::try_from(DIGEST_SETTLE).unwrap();
    h.clock.set(settled(frees) - SignedDuration::from_secs(1));
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 0);
    h.clock.set(settled(frees));
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 1);
    let all = h.notifications.list_for_user(USER, 20).await.unwrap();
    let digest = all
        .iter()
        .find(|n| {
            n.source_event_id
                .as_deref()
                .is_some_and(|s| s.starts_with("digest:"))
        })
        .expect("a digest of the held comments");
    assert_eq!(digest.request.data["digest"]["count"], 2);
    let delivery = delivery_id_for(&digest.id, ChannelKind::InApp, None).unwrap();
    let sent = h.sent(delivery).await;
    for title in ["comment 2", "comment 3"] {
        assert!(sent.message.text_body.contains(title), "{title}: {sent:?}");
    }
    h.stop().await;
}

#[tokio::test]
async fn deliveries_carry_their_template_and_the_notify_cost() {
    let now: Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
    let mut templates = TemplateSet::new();
    let template = |title: &str| Template {
        subject: title.into(),
        title: title.into(),
        text: "{{ data.amount }}".into(),
        html: String::new(),
    };
    templates
        .set("receipt-v2", None, template("Your receipt"))
        .unwrap();
    templates.set("welcome", None, template("Welcome")).unwrap();
    let h = Harness::start(
        now,
        &UserPreferences::default(),
        EngineSettings {
            templates,
            ..EngineSettings::default()
        },
    )
    .await;
    let notify = |id: &str, kind: &str, template: Option<&str>, cost: Option<&str>| {
        let mut event = notify_event_with(id, now, "Raw title", Map::new());
        let EventBody::Notify(request) = &mut event.body else {
            unreachable!()
        };
        request.notification_type = kind.into();
        request.template = template.map(Into::into);
        request.data.insert("amount".into(), json!("12.50"));
        request.cost = cost.map(|text| text.parse::<Money>().unwrap());
        event
    };
    h.store
        .ingest(vec![
            notify("by-name", "payment", Some("receipt-v2"), Some("0.05")),
            notify("by-type", "welcome", None, None),
            notify("raw", "comment", None, Some("0.000001")),
        ])
        .await
        .unwrap();
    assert_eq!(h.engine.process_available().await.unwrap(), 3);

    let mut planned = Vec::new();
    for notification in h.notifications.list_for_user(USER, 10).await.unwrap() {
        let id = delivery_id_for(&notification.id, ChannelKind::InApp, None).unwrap();
        let delivery = h.queue.get(id).await.unwrap().expect("an in-app delivery");
        planned.push((
            notification.request.notification_type,
            delivery.template,
            delivery.cost,
            delivery.message.subject,
        ));
    }
    planned.sort();
    assert_eq!(
        planned,
        [
            (
                "comment".to_owned(),
                None,
                Some(Money(1)),
                "Raw title".to_owned()
            ),
            (
                "payment".to_owned(),
                Some("receipt-v2".to_owned()),
                Some(Money(50_000)),
                "Your receipt".to_owned()
            ),
            (
                "welcome".to_owned(),
                Some("welcome".to_owned()),
                None,
                "Welcome".to_owned()
            ),
        ]
    );
    h.stop().await;
}

/// Apple, as a2's client would report it: `410 Unregistered` for
/// [`UNINSTALLED`], `200` for every other token. Records the tokens pushed to.
#[derive(Clone, Default)]
struct Apple(Arc<Mutex<Vec<String>>>);

const UNINSTALLED: &str = "aaaa0000aaaa0000aaaa0000aaaa0000aaaa0000aaaa0000aaaa0000aaaa0000";
const INSTALLED: &str = "bbbb1111bbbb1111bbbb1111bbbb1111bbbb1111bbbb1111bbbb1111bbbb1111";

impl Apple {
    fn pushes_to(&self, token: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|t| *t == token)
            .count()
    }
}

#[async_trait::async_trait]
impl ApnsSender for Apple {
    async fn send(
        &self,
        payload: a2::request::payload::Payload<'_>,
    ) -> Result<a2::Response, a2::Error> {
        let token = payload.device_token.to_owned();
        self.0.lock().unwrap().push(token.clone());
        let apns_id = payload.options.apns_id.map(str::to_owned);
        if token == UNINSTALLED {
            return Err(a2::Error::ResponseError(a2::Response {
                // Apple's body, as a2 parses it.
                error: serde_json::from_str(
                    r#"{"reason":"Unregistered","timestamp":1750000000000}"#,
                )
                .ok(),
                apns_id,
                code: 410,
            }));
        }
        Ok(a2::Response {
            error: None,
            apns_id,
            code: 200,
        })
    }
}

#[tokio::test]
async fn an_apns_token_apple_reports_unregistered_is_deactivated_and_not_used_again() {
    let now: Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
    let apple = Apple::default();
    let apns: Arc<dyn Channel> =
        Arc::new(ApnsChannel::with_sender("com.example.app", apple.clone()).unwrap());
    let h = Harness::with_channels(
        now,
        &UserPreferences::default(),
        EngineSettings::default(),
        vec![apns],
    )
    .await;
    let register = |token: &str| NewDevice {
        platform: Platform::Apns,
        token: Some(token.to_owned()),
        subscription: None,
        label: None,
    };
    let gone = h
        .devices
        .register(USER, &register(UNINSTALLED), now)
        .await
        .unwrap();
    let kept = h
        .devices
        .register(USER, &register(INSTALLED), now)
        .await
        .unwrap();

    let push = |id: &str| {
        let mut event = notify_event(id, now);
        if let EventBody::Notify(request) = &mut event.body {
            request.channels = vec![ChannelKind::Apns];
        }
        event
    };
    h.store.ingest(vec![push("evt-1")]).await.unwrap();
    assert_eq!(h.engine.process_available().await.unwrap(), 1);
    let first = h
        .notifications
        .list_for_user(USER, 10)
        .await
        .unwrap()
        .remove(0);
    let to_gone = delivery_id_for(&first.id, ChannelKind::Apns, Some(&gone.id)).unwrap();
    let to_kept = delivery_id_for(&first.id, ChannelKind::Apns, Some(&kept.id)).unwrap();
    let failed = h.reaching(to_gone, Status::Failed).await;
    assert_eq!(failed.attempts, 1, "an unregistered token is not retried");
    h.sent(to_kept).await;

    let device = h.devices.get(USER, &gone.id).await.unwrap().unwrap();
    assert!(!device.active, "{device:?}");
    assert!(
        device
            .deactivated_reason
            .as_deref()
            .is_some_and(|reason| reason.contains("Unregistered")),
        "{device:?}"
    );

    h.store.ingest(vec![push("evt-2")]).await.unwrap();
    assert_eq!(h.engine.process_available().await.unwrap(), 1);
    let second = h
        .notifications
        .list_for_user(USER, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.id != first.id)
        .unwrap();
    let again = delivery_id_for(&second.id, ChannelKind::Apns, Some(&kept.id)).unwrap();
    h.sent(again).await;
    let never = delivery_id_for(&second.id, ChannelKind::Apns, Some(&gone.id)).unwrap();
    assert_eq!(
        h.queue.get(never).await.unwrap(),
        None,
        "no delivery to the dead token"
    );
    assert_eq!(apple.pushes_to(UNINSTALLED), 1);
    assert_eq!(apple.pushes_to(INSTALLED), 2);
    h.stop().await;
}

/// A notify whose type holds a NUL (stored by an earlier build, before
/// names were checked at every entrance) makes the digest store refuse it:
/// a failure no retry can fix. It is parked with its reason and the feed
/// moves on: the good events around it, a later one of another user
/// included, are planned. Before, the engine retried that cursor forever
/// and nothing after it was planned for anyone.
#[tokio::test]
async fn a_poison_event_is_parked_and_the_rest_of_the_feed_is_planned() {
    let now: Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
    let poison_type = "comment\0digest";
    let defaults = OperatorDefaults {
        types: [(
            poison_type.to_owned(),
            TypeDefaults {
                channels: [ChannelKind::InApp].into_iter().collect(),
                critical: false,
                frequency: Frequency::Daily,
                category: None,
            },
        )]
        .into_iter()
        .collect(),
    };
    let h = Harness::start(
        now,
        &UserPreferences::default(),
        EngineSettings {
            defaults,
            ..EngineSettings::default()
        },
    )
    .await;
    let mut poison = notify_event("evt-poison", now);
    if let EventBody::Notify(request) = &mut poison.body {
        request.notification_type = poison_type.to_owned();
    }
    let mut other = notify_event("evt-other-user", now);
    other.user_id = Some("early-bird".to_owned());
    h.store
        .ingest(vec![
            notify_event("evt-before", now),
            poison,
            notify_event("evt-after", now),
            other,
        ])
        .await
        .unwrap();

    assert_eq!(h.engine.process_available().await.unwrap(), 4);
    assert_eq!(
        h.engine.process_available().await.unwrap(),
        0,
        "the cursor moved on"
    );
    assert_eq!(
        h.notifications.list_for_user(USER, 10).await.unwrap().len(),
        3
    );
    let planned = async |user: &str| {
        let mut planned = 0;
        for n in h.notifications.list_for_user(user, 10).await.unwrap() {
            if n.request.notification_type != "comment" {
                continue;
            }
            let id = delivery_id_for(&n.id, ChannelKind::InApp, None).unwrap();
            planned += usize::from(h.queue.get(id).await.unwrap().is_some());
        }
        planned
    };
    assert_eq!(
        planned(USER).await,
        2,
        "the events before and after were planned"
    );
    assert_eq!(
        planned("early-bird").await,
        1,
        "another user's later event was planned"
    );

    let page = h.store.parked(None, 10).await.unwrap();
    assert_eq!(page.parked.len(), 1, "{page:?}");
    let parked = &page.parked[0];
    assert_eq!(parked.event_id, "evt-poison");
    assert_eq!(parked.user_id.as_deref(), Some(USER));
    assert_eq!(parked.kind, "invalid");
    assert!(parked.reason.contains("NUL"), "{}", parked.reason);
    assert_eq!(page.next, None);

    // Operators list it over the admin API.
    let state = nudge_control_plane::http::HttpState {
        admin_token: Some("admin-secret".into()),
        ..nudge_control_plane::http::HttpState::standalone(&h.stores).unwrap()
    };
    let (base, serving) = support::serve(state).await;
    let listed: Value = reqwest::Client::new()
        .get(format!("{base}/v1/admin/parked-events?limit=10"))
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["parked"][0]["event_id"], "evt-poison", "{listed}");
    assert_eq!(listed["parked"][0]["kind"], "invalid");
    assert_eq!(listed["next"], Value::Null);
    serving.abort();
    h.stop().await;
}

/// A broadcast to a topic of 1,203 users (three pages) reaches each
/// subscriber once, through the notify path: an opted-out user gets no
/// delivery, a user in quiet hours gets one held, an erased user nothing;
/// running the fan-out again creates nothing; a cancelled broadcast stops
/// before its next page; and a subscription rule puts users on the topic
/// from their tracked events.
#[tokio::test]
async fn a_broadcast_reaches_each_subscriber_once_under_their_preferences() {
    use nudge_control_plane::broadcasts::rules::SubscriptionRule;
    use nudge_control_plane::broadcasts::{self, Audience, BroadcastSpec, BroadcastState};
    use nudge_control_plane::preferences::TypePreferences;

    // 23:30 in Berlin: USER (the harness's) is in quiet hours.
    let night: Timestamp = "2026-07-01T21:30:00Z".parse().unwrap();
    let preferences = UserPreferences {
        quiet_hours: Some(QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap()),
        ..UserPreferences::default()
    };
    let rule: SubscriptionRule = serde_json::from_value(json!({
        "on": "project_joined", "topic": "project:{project}",
    }))
    .unwrap();
    let h = Harness::start(
        night,
        &preferences,
        EngineSettings {
            subscriptions: vec![rule],
            ..EngineSettings::default()
        },
    )
    .await;
    let topics = &h.stores.topics;
    let users: Vec<String> = (0..1200).map(|n| format!("user-{n:04}")).collect();
    for user in users
        .iter()
        .map(String::as_str)
        .chain([USER, "opted-out", "erased"])
    {
        broadcasts::subscribe(topics, "news", user, night)
            .await
            .unwrap();
    }
    let opted_out = UserPreferences {
        types: [(
            "announcement".to_owned(),
            TypePreferences {
                channels: [(ChannelKind::InApp, false)].into_iter().collect(),
                frequency: None,
            },
        )]
        .into_iter()
        .collect(),
        ..UserPreferences::default()
    };
    h.stores
        .preferences
        .put("opted-out", &opted_out)
        .await
        .unwrap();
    h.store.erase_user("erased", night).await.unwrap();

    let spec = BroadcastSpec {
        request: NotifyRequest {
            notification_type: "announcement".into(),
            template: None,
            title: Some("We shipped".into()),
            body: Some("Version 2 is out".into()),
            channels: vec![ChannelKind::InApp],
            data: Map::new(),
            priority: Default::default(),
            idempotency_key: None,
            cost: None,
        },
        audience: Audience::Topic("news".into()),
        send_at: None,
    };
    broadcasts::create(&h.stores.broadcasts, "v2", &spec, night)
        .await
        .unwrap();
    assert_eq!(h.engine.fan_out_due().await.unwrap(), 3, "three pages");
    let done = h.stores.broadcasts.get("v2").await.unwrap().unwrap();
    assert_eq!(done.state, BroadcastState::Done);
    assert_eq!(done.scanned, 1203);
    assert_eq!(done.recipients, 1203);
    assert_eq!(done.notifications, 1202, "not the erased user's");

    let (count, deliveries) = in_app_of(&h, "user-0600").await;
    assert_eq!((count, deliveries.len()), (1, 1));
    assert_eq!(deliveries[0].not_before, night, "due now");
    let (count, deliveries) = in_app_of(&h, USER).await;
    assert_eq!((count, deliveries.len()), (1, 1));
    assert_eq!(
        deliveries[0].not_before,
        "2026-07-02T05:00:00Z".parse::<Timestamp>().unwrap(),
        "held until 07:00 Berlin"
    );
    assert_eq!(
        deliveries[0].broadcast.as_deref(),
        Some("v2"),
        "held: checked when due"
    );
    let (_, due_now) = in_app_of(&h, "user-0600").await;
    assert_eq!(due_now[0].broadcast, None, "goes out at once: unchecked");
    let (count, deliveries) = in_app_of(&h, "opted-out").await;
    assert_eq!(
        (count, deliveries.len()),
        (1, 0),
        "suppressed by preferences"
    );
    assert_eq!(in_app_of(&h, "erased").await.0, 0);

    // Nothing due any more; a rerun of the same broadcast creates nothing.
    assert_eq!(h.engine.fan_out_due().await.unwrap(), 0);
    let again = BroadcastSpec {
        audience: Audience::Topic("news".into()),
        ..spec.clone()
    };
    broadcasts::create(&h.stores.broadcasts, "v2-replay", &again, night)
        .await
        .unwrap();
    h.engine.fan_out_due().await.unwrap();
    assert_eq!(
        h.notifications
            .list_for_user("user-0600", 10)
            .await
            .unwrap()
            .len(),
        2,
        "a new id is a new broadcast"
    );
    assert_eq!(
        h.notifications.list_for_user(USER, 10).await.unwrap().len(),
        2
    );

    // A cancel before the first page: nobody is notified.
    broadcasts::create(&h.stores.broadcasts, "v3", &spec, night)
        .await
        .unwrap();
    h.stores.broadcasts.cancel("v3", night).await.unwrap();
    assert_eq!(h.engine.fan_out_due().await.unwrap(), 0);
    let cancelled = h.stores.broadcasts.get("v3").await.unwrap().unwrap();
    assert_eq!(
        (cancelled.state, cancelled.recipients),
        (BroadcastState::Cancelled, 0)
    );

    // Subscription rules follow tracked events in ingest order.
    let joined = |id: &str, project: &str, action: &str| Event {
        body: EventBody::Track {
            event: action.into(),
            properties: json!({ "project": project }).as_object().unwrap().clone(),
        },
        ..notify_event(id, night)
    };
    h.store
        .ingest(vec![
            joined("j1", "42", "project_joined"),
            joined("j2", "a b", "project_joined"),
        ])
        .await
        .unwrap();
    h.engine.process_available().await.unwrap();
    let mine = topics.of_user(USER).await.unwrap();
    let names: Vec<&str> = mine.iter().map(|s| s.topic.as_str()).collect();
    assert_eq!(
        names,
        ["news", "project:42"],
        "no topic from a value that makes no name"
    );

    // Cancelling the done broadcast recalls what it still holds: USER's
    // delivery of v2 (quiet hours) ends cancelled at 07:00; v2-replay's
    // goes out.
    use nudge_control_plane::delivery::AttemptOutcome;
    use nudge_control_plane::storage::Cancelled;
    let Cancelled::Now(recalled) = h.stores.broadcasts.cancel("v2", night).await.unwrap() else {
        panic!("a done broadcast can be cancelled")
    };
    assert_eq!(recalled.state, BroadcastState::Cancelled);
    assert!(matches!(
        h.stores.broadcasts.cancel("v2", night).await.unwrap(),
        Cancelled::Closed(_)
    ));
    let held = |source: &str| {
        let source = broadcasts::source_id(source, USER);
        let h = &h;
        async move {
            let notifications = h.notifications.list_for_user(USER, 10).await.unwrap();
            let notification = notifications
                .iter()
                .find(|n| n.source_event_id.as_deref() == Some(source.as_str()))
                .unwrap();
            delivery_id_for(&notification.id, ChannelKind::InApp, None).unwrap()
        }
    };
    let (v2, replay) = (held("v2").await, held("v2-replay").await);
    h.clock
        .set("2026-07-02T05:00:01Z".parse::<Timestamp>().unwrap());
    let cancelled = h.reaching(v2, Status::Cancelled).await;
    assert_eq!(cancelled.attempt_log.len(), 1);
    assert_eq!(cancelled.attempt_log[0].outcome, AttemptOutcome::Skipped);
    assert!(
        cancelled.attempt_log[0]
            .answer
            .contains("\"v2\" was cancelled"),
        "{:?}",
        cancelled.attempt_log
    );
    let sent = h.sent(replay).await;
    assert_eq!(sent.attempt_log.len(), 1, "no step note for a broadcast");
    assert_eq!(sent.attempt_log[0].outcome, AttemptOutcome::Sent);
    h.stop().await;
}

/// How many notifications `user` has, and their in-app deliveries.
async fn in_app_of(h: &Harness, user: &str) -> (usize, Vec<Delivery>) {
    let notifications = h.notifications.list_for_user(user, 10).await.unwrap();
    let mut deliveries = Vec::new();
    for notification in &notifications {
        let id = delivery_id_for(&notification.id, ChannelKind::InApp, None).unwrap();
        deliveries.extend(h.queue.get(id).await.unwrap());
    }
    (notifications.len(), deliveries)
}

/// Counts the webhook POSTs a workflow's last step makes, on a real HTTP
/// listener.
async fn webhook_receiver() -> (Arc<Mutex<Vec<String>>>, String) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(received): axum::extract::State<Arc<Mutex<Vec<String>>>>,
                 headers: axum::http::HeaderMap| async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    received.lock().unwrap().push(id);
                    "ok"
                },
            ),
        )
        .with_state(Arc::clone(&received));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, format!("http://{addr}/hook"))
}

/// A type with steps: in-app at once, then after an hour a webhook, which
/// a read of the in-app item cancels. Each step's decision is in its
/// delivery's attempt log, and a cancelled step never reaches the
/// receiver.
#[tokio::test]
async fn a_workflow_step_goes_out_after_its_wait_unless_the_user_read_the_first() {
    use nudge_control_plane::channels::webhook::{WebhookChannel, WebhookConfig};
    use nudge_control_plane::delivery::AttemptOutcome;
    use nudge_control_plane::inbox::Action;

    let now: Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
    let (received, url) = webhook_receiver().await;
    let webhook = WebhookChannel::new(WebhookConfig {
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        timeout: Duration::from_secs(5),
        allow_private_destinations: true,
    })
    .unwrap();
    let steps = vec![
        Step {
            channel: Some(ChannelKind::InApp),
            ..Step::default()
        },
        Step {
            wait: Some("1h".to_owned()),
            ..Step::default()
        },
        Step {
            channel: Some(ChannelKind::Webhook),
            ..Step::default()
        },
    ];
    let defaults = OperatorDefaults {
        types: [(
            "order_shipped".to_owned(),
            TypeDefaults {
                channels: workflow::channels(&steps),
                ..TypeDefaults::default()
            },
        )]
        .into_iter()
        .collect(),
    };
    let h = Harness::with_channels(
        now,
        &UserPreferences::default(),
        EngineSettings {
            defaults,
            webhook_urls: [("order_shipped".to_owned(), url)].into(),
            workflows: [("order_shipped".to_owned(), steps)].into(),
            ..EngineSettings::default()
        },
        vec![Arc::new(webhook)],
    )
    .await;
    let shipped = |id: &str| {
        let mut event = notify_event(id, now);
        let EventBody::Notify(request) = &mut event.body else {
            unreachable!()
        };
        request.notification_type = "order_shipped".into();
        // Wherever the type goes: its steps.
        request.channels.clear();
        event
    };
    h.store
        .ingest(vec![shipped("read-first"), shipped("left-unread")])
        .await
        .unwrap();
    assert_eq!(h.engine.process_available().await.unwrap(), 2);

    let mut notifications = h.notifications.list_for_user(USER, 10).await.unwrap();
    notifications.sort_by_key(|n| n.source_event_id.clone());
    let [left_unread, read_first] = [&notifications[0], &notifications[1]];
    let in_app = |n: &nudge_control_plane::notifications::Notification| {
        delivery_id_for(&n.id, ChannelKind::InApp, None).unwrap()
    };
    let hook = |n: &nudge_control_plane::notifications::Notification| {
        delivery_id_for(&n.id, ChannelKind::Webhook, None).unwrap()
    };
    // The first step goes out at once, unchecked; the second waits an hour.
    for notification in [read_first, left_unread] {
        let sent = h.sent(in_app(notification)).await;
        assert_eq!(sent.step, None);
        let waiting = h.queue.get(hook(notification)).await.unwrap().unwrap();
        assert_eq!(waiting.status, Status::Queued);
        assert_eq!(waiting.not_before, now + SignedDuration::from_hours(1));
        assert_eq!(waiting.step.as_ref().map(|gate| gate.step), Some(3));
    }

    // The user reads the first in the inbox, as the web inbox would.
    h.stores
        .inbox
        .apply(
            USER,
            &[in_app(read_first).to_string()],
            Action::Read,
            now + SignedDuration::from_mins(5),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(received.lock().unwrap().is_empty(), "a step went out early");

    h.clock
        .set(now + SignedDuration::from_hours(1) + SignedDuration::from_secs(1));
    let cancelled = h.reaching(hook(read_first), Status::Cancelled).await;
    let sent = h.sent(hook(left_unread)).await;

    let outcomes = |delivery: &Delivery| -> Vec<AttemptOutcome> {
        delivery.attempt_log.iter().map(|a| a.outcome).collect()
    };
    assert_eq!(outcomes(&cancelled), [AttemptOutcome::Skipped]);
    let reason = &cancelled.attempt_log[0].answer;
    assert!(
        reason.contains("step 3") && reason.contains("in_app") && reason.contains("read"),
        "{reason}"
    );
    assert_eq!(cancelled.attempts, 0, "no provider call");
    assert_eq!(
        outcomes(&sent),
        [AttemptOutcome::Proceeded, AttemptOutcome::Sent]
    );
    assert_eq!(sent.attempts, 1);
    // Only the unread one reached the receiver.
    assert_eq!(*received.lock().unwrap(), [hook(left_unread).to_string()]);
    h.stop().await;
}

/// Two broadcasts due together take turns page by page: a large one does
/// not hold back a small one for its whole fan-out.
#[tokio::test]
async fn due_broadcasts_take_turns_page_by_page() {
    use nudge_control_plane::broadcasts::{self, Audience, BroadcastSpec, BroadcastState};

    let now: Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
    let h = Harness::start(now, &UserPreferences::default(), EngineSettings::default()).await;
    for n in 0..1100 {
        broadcasts::subscribe(&h.stores.topics, "big", &format!("user-{n:04}"), now)
            .await
            .unwrap();
    }
    for user in ["ana", "ben"] {
        broadcasts::subscribe(&h.stores.topics, "small", user, now)
            .await
            .unwrap();
    }
    let spec = |topic: &str| BroadcastSpec {
        request: NotifyRequest {
            notification_type: "announcement".into(),
            template: None,
            title: Some("News".into()),
            body: None,
            channels: vec![ChannelKind::InApp],
            data: Map::new(),
            priority: Default::default(),
            idempotency_key: None,
            cost: None,
        },
        audience: Audience::Topic(topic.into()),
        send_at: None,
    };
    // The big one is due first (created first, same time: by id).
    broadcasts::create(&h.stores.broadcasts, "a-big", &spec("big"), now)
        .await
        .unwrap();
    broadcasts::create(&h.stores.broadcasts, "b-small", &spec("small"), now)
        .await
        .unwrap();
    let state = |id: &'static str| {
        let h = &h;
        async move { h.stores.broadcasts.get(id).await.unwrap().unwrap() }
    };
    assert_eq!(h.engine.fan_out_step().await.unwrap(), 500);
    assert_eq!(state("a-big").await.state, BroadcastState::Running);
    // Its second page waits: the small one's turn.
    assert_eq!(h.engine.fan_out_step().await.unwrap(), 2);
    let small = state("b-small").await;
    assert_eq!((small.state, small.recipients), (BroadcastState::Done, 2));
    assert_eq!(state("a-big").await.scanned, 500);
    // Alone again, the big one goes on to its end.
    assert_eq!(h.engine.fan_out_due().await.unwrap(), 2);
    let big = state("a-big").await;
    assert_eq!((big.state, big.recipients), (BroadcastState::Done, 1100));
    h.stop().await;
}
