//! The notification engine assembled from the library, on a real sled
//! store, with a controllable clock: quiet hours hold a message and release
//! it when the window opens, and a daily digest turns N notifications into
//! one message at its time, without sleeping through the night.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use nudge_control_plane::channels::ChannelKind;
use nudge_control_plane::channels::in_app::InAppChannel;
use nudge_control_plane::delivery::{
    Clock, Delivery, DeliveryMetrics, DeliveryQueue, Dispatcher, DispatcherConfig, ManualClock,
    Status,
};
use nudge_control_plane::devices::DeviceStore;
use nudge_control_plane::engine::{
    Engine, EngineParts, EngineSettings, SettingsHandle, delivery_id_for,
};
use nudge_control_plane::notifications::NotificationStore;
use nudge_control_plane::preferences::{
    Frequency, OperatorDefaults, PreferenceStore, QuietHours, TypeDefaults, Tz, UserPreferences,
};
use nudge_control_plane::store::{Event, EventBody, NotifyRequest, SledStore, Store};

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
            channels: vec!["in_app".into()],
            data,
            priority: Default::default(),
            idempotency_key: None,
        }),
    }
}

/// The engine and a dispatcher with the in-app channel over one sled store,
/// on a manual clock.
struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    engine: Engine,
    queue: DeliveryQueue,
    notifications: NotificationStore,
    clock: Arc<ManualClock>,
    stop: CancellationToken,
    dispatching: tokio::task::JoinHandle<Result<(), nudge_control_plane::delivery::QueueError>>,
}

impl Harness {
    fn start(start: Timestamp, preferences: &UserPreferences, settings: EngineSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sled_store = SledStore::open(dir.path(), 8 << 20).unwrap();
        let db = sled_store.db().clone();
        let store: Arc<dyn Store> = Arc::new(sled_store);
        let manual = Arc::new(ManualClock::new(start));
        let clock: Arc<dyn Clock> = manual.clone();
        let preference_store = PreferenceStore::new(db.open_tree("preferences").unwrap());
        preference_store.put(USER, preferences).unwrap();
        let queue = DeliveryQueue::open(&db).unwrap();
        let notifications = NotificationStore::open(&db).unwrap();
        let engine = Engine::new(
            &db,
            EngineParts {
                store: Arc::clone(&store),
                notifications: notifications.clone(),
                preferences: preference_store,
                queue: queue.clone(),
                devices: DeviceStore::open(&db).unwrap(),
                clock: Arc::clone(&clock),
            },
            SettingsHandle::new(EngineSettings {
                enabled: [ChannelKind::InApp].into_iter().collect(),
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
        .with_channel(Arc::new(InAppChannel::new(db.open_tree("inbox").unwrap())));
        let stop = CancellationToken::new();
        let dispatching = tokio::spawn(dispatcher.run(stop.clone()));
        Harness {
            _dir: dir,
            store,
            engine,
            queue,
            notifications,
            clock: manual,
            stop,
            dispatching,
        }
    }

    /// Waits (real time) until the delivery is sent.
    async fn sent(&self, delivery_id: uuid::Uuid) -> Delivery {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let delivery = self.queue.get(delivery_id).unwrap().unwrap();
            if delivery.status == Status::Sent {
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

#[tokio::test]
async fn quiet_hours_hold_a_notification_until_the_window_opens() {
    // 23:30 in Berlin (CEST, UTC+2) on a summer night; quiet 22:00-07:00.
    let night: Timestamp = "2026-07-01T21:30:00Z".parse().unwrap();
    let window_opens: Timestamp = "2026-07-02T05:00:00Z".parse().unwrap();
    let preferences = UserPreferences {
        quiet_hours: Some(QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap()),
        ..UserPreferences::default()
    };
    let h = Harness::start(night, &preferences, EngineSettings::default());

    h.store.ingest(vec![notify_event("evt-1", night)]).unwrap();
    assert_eq!(h.engine.process_available().await.unwrap(), 1);
    let notification = h.notifications.list_for_user(USER, 10).unwrap().remove(0);
    let delivery_id = delivery_id_for(&notification.id, ChannelKind::InApp, None).unwrap();
    let held = h.queue.get(delivery_id).unwrap().unwrap();
    assert_eq!(held.not_before, window_opens, "held until 07:00 Berlin");

    // The dispatcher polls every 10 ms: give it many chances to send early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = h.queue.get(delivery_id).unwrap().unwrap();
    assert_eq!(still.status, Status::Queued, "sent inside quiet hours");
    assert_eq!(still.attempts, 0);

    h.clock.set(window_opens + SignedDuration::from_secs(1));
    assert_eq!(h.sent(delivery_id).await.attempts, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_daily_digest_turns_n_notifications_into_one_message() {
    // 10:00 in Berlin: today's 09:00 digest has gone, the next is tomorrow.
    let morning: Timestamp = "2026-07-01T08:00:00Z".parse().unwrap();
    let digest_time: Timestamp = "2026-07-02T07:00:00Z".parse().unwrap();
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
    let h = Harness::start(
        morning,
        &preferences,
        EngineSettings {
            defaults,
            ..EngineSettings::default()
        },
    );

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
            .unwrap();
        assert_eq!(h.engine.process_available().await.unwrap(), 1);
    }
    let created = h.notifications.list_for_user(USER, 10).unwrap();
    assert_eq!(created.len(), 3);
    for notification in &created {
        let own = delivery_id_for(&notification.id, ChannelKind::InApp, None).unwrap();
        assert_eq!(
            h.queue.get(own).unwrap(),
            None,
            "held for the digest, not queued"
        );
    }
    let depth: u64 = h
        .queue
        .depth_by_channel_and_status()
        .unwrap()
        .values()
        .sum();
    assert_eq!(depth, 0, "nothing queued before the digest time");

    // Just before 09:00 nothing goes out; at 09:00 one digest does.
    h.clock.set(digest_time - SignedDuration::from_secs(1));
    h.engine.process_available().await.unwrap();
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 0);
    h.clock.set(digest_time);
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 1);
    assert_eq!(h.engine.fire_due_digests().await.unwrap(), 0, "sent once");

    let all = h.notifications.list_for_user(USER, 10).unwrap();
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
    for title in titles {
        assert!(
            sent.message.text_body.contains(&format!("- {title}")),
            "{title} missing from {:?}",
            sent.message.text_body
        );
    }
    h.stop().await;
}
