//! The notification engine assembled from the library, on a real sled
//! store, with a controllable clock: quiet hours hold a message and release
//! it when the window opens, without sleeping through the night.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::Map;
use tokio_util::sync::CancellationToken;

use nudge_control_plane::channels::ChannelKind;
use nudge_control_plane::channels::in_app::InAppChannel;
use nudge_control_plane::delivery::{
    Clock, DeliveryMetrics, DeliveryQueue, Dispatcher, DispatcherConfig, ManualClock, Status,
};
use nudge_control_plane::devices::DeviceStore;
use nudge_control_plane::engine::{
    Engine, EngineParts, EngineSettings, SettingsHandle, delivery_id_for,
};
use nudge_control_plane::notifications::NotificationStore;
use nudge_control_plane::preferences::{PreferenceStore, QuietHours, UserPreferences};
use nudge_control_plane::store::{Event, EventBody, NotifyRequest, SledStore, Store};

const USER: &str = "night-owl";

fn notify_event(id: &str, at: Timestamp) -> Event {
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
            title: Some("New comment".into()),
            body: Some("Someone replied to you".into()),
            channels: vec!["in_app".into()],
            data: Map::new(),
            priority: Default::default(),
            idempotency_key: None,
        }),
    }
}

#[tokio::test]
async fn quiet_hours_hold_a_notification_until_the_window_opens() {
    let dir = tempfile::tempdir().unwrap();
    let sled_store = SledStore::open(dir.path(), 8 << 20).unwrap();
    let db = sled_store.db().clone();
    let store: Arc<dyn Store> = Arc::new(sled_store);

    // 23:30 in Berlin (winter, UTC+1): inside 22:00-07:00 quiet hours.
    let night: Timestamp = "2026-01-14T22:30:00Z".parse().unwrap();
    let window_opens: Timestamp = "2026-01-15T06:00:00Z".parse().unwrap();
    let manual = Arc::new(ManualClock::new(night));
    let clock: Arc<dyn Clock> = manual.clone();

    let preferences = PreferenceStore::new(db.open_tree("preferences").unwrap());
    preferences
        .put(
            USER,
            &UserPreferences {
                quiet_hours: Some(QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap()),
                ..UserPreferences::default()
            },
        )
        .unwrap();
    let queue = DeliveryQueue::open(&db).unwrap();
    let notifications = NotificationStore::open(&db).unwrap();
    let engine = Engine::new(
        &db,
        EngineParts {
            store: Arc::clone(&store),
            notifications: notifications.clone(),
            preferences,
            queue: queue.clone(),
            devices: DeviceStore::open(&db).unwrap(),
            clock: Arc::clone(&clock),
        },
        SettingsHandle::new(EngineSettings {
            enabled: [ChannelKind::InApp].into_iter().collect(),
            ..EngineSettings::default()
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

    store.ingest(vec![notify_event("evt-1", night)]).unwrap();
    assert_eq!(engine.process_available().await.unwrap(), 1);
    let notification = notifications.list_for_user(USER, 10).unwrap().remove(0);
    let delivery_id = delivery_id_for(&notification.id, ChannelKind::InApp, None).unwrap();
    let held = queue.get(delivery_id).unwrap().unwrap();
    assert_eq!(held.not_before, window_opens, "held until 07:00 Berlin");

    // The dispatcher polls every 10 ms: give it many chances to send early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = queue.get(delivery_id).unwrap().unwrap();
    assert_eq!(still.status, Status::Queued, "sent inside quiet hours");
    assert_eq!(still.attempts, 0);

    manual.set(window_opens + SignedDuration::from_secs(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivery = queue.get(delivery_id).unwrap().unwrap();
        if delivery.status == Status::Sent {
            assert_eq!(delivery.attempts, 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not sent after the window opened: {delivery:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    dispatching.await.unwrap().unwrap();
}
