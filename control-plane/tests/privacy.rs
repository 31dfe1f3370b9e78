//! Privacy over the real stores (SQLite) and the real HTTP router: export shows
//! everything held about a user; "Erase removes a user everywhere, and a
//! late event of that user is not stored"; "Retention removes only what is
//! past its age".

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use nudge_control_plane::channels::{ChannelKind, OutboundMessage, Recipient};
use nudge_control_plane::delivery::{Delivery, NewDelivery, Priority as DeliveryPriority};
use nudge_control_plane::devices::{NewDevice, Platform};
use nudge_control_plane::event::{Event, EventBody, JsonObject, NotifyRequest};
use nudge_control_plane::http::HttpState;
use nudge_control_plane::inbox::InboxItem;
use nudge_control_plane::notifications::{Created, NewNotification};
use nudge_control_plane::privacy::RetentionConfig;
use nudge_control_plane::storage::{EventStore, SQLITE_FILE, Stores};

mod support;

const ADMIN: &str = "privacy-test-admin-token-0123456789";

struct Server {
    _dir: tempfile::TempDir,
    base: String,
    state: HttpState,
    store: EventStore,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(dir.path()).await.unwrap();
        let store: EventStore = stores.events.clone();
        let state = HttpState {
            admin_token: Some(ADMIN.parse().unwrap()),
            ..HttpState::standalone(&stores).unwrap()
        };
        let (base, _) = support::serve(state.clone()).await;
        Server {
            _dir: dir,
            base,
            state,
            store,
        }
    }

    async fn call(&self, method: Method, path: &str) -> (StatusCode, Value) {
        let reply = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = reply.status();
        let text = reply.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An event, a profile, a notification with an in-app delivery and its
    /// inbox item, a device and preferences for `user`, at `at`.
    async fn seed(&self, user: &str, at: Timestamp) -> Delivery {
        let mut traits = JsonObject::new();
        traits.insert("email".into(), json!(format!("{user}@example.com")));
        let outcome = self
            .store
            .ingest(vec![
                event(&format!("{user}-track-{}", at.as_second()), user, at, None),
                event(
                    &format!("{user}-identify-{}", at.as_second()),
                    user,
                    at,
                    Some(traits),
                ),
            ])
            .await
            .unwrap();
        assert_eq!(outcome.stored, 2);
        let created = self
            .state
            .notifications
            .create(
                NewNotification {
                    user_id: user.into(),
                    request: NotifyRequest {
                        notification_type: "welcome".into(),
                        template: None,
                        title: Some("Hi".into()),
                        body: Some("Welcome".into()),
                        channels: vec![ChannelKind::InApp],
                        data: JsonObject::new(),
                        priority: Default::default(),
                        idempotency_key: Some(format!("k-{}", at.as_second())),
                        cost: None,
                    },
                    source_event_id: None,
                },
                at,
            )
            .await
            .unwrap();
        let Created::New(notification) = created else {
            panic!("a new notification")
        };
        let mut delivery = Delivery::new(
            NewDelivery {
                notification_id: notification.id.clone(),
                user_id: user.into(),
                channel: ChannelKind::InApp,
                priority: DeliveryPriority::Normal,
                message: OutboundMessage {
                    subject: "Hi".into(),
                    ..OutboundMessage::default()
                },
                recipient: Recipient::User {
                    user_id: user.into(),
                },
                not_before: Some(at),
            },
            at,
        );
        delivery.id = nudge_control_plane::engine::delivery_id_for(
            &notification.id,
            ChannelKind::InApp,
            None,
        )
        .unwrap();
        self.state.queue.enqueue(delivery.clone()).await.unwrap();
        let item = InboxItem {
            id: delivery.id.to_string(),
            notification_id: notification.id.clone(),
            notification_type: "welcome".into(),
            category: None,
            title: "Hi".into(),
            body: "Welcome".into(),
            data: json!({}),
            created_at: at,
            seen_at: None,
            read_at: None,
            archived_at: None,
            snoozed_until: None,
        };
        assert!(self.state.inbox.add(user, &item).await.unwrap());
        self.state
            .devices
            .register(
                user,
                &NewDevice {
                    platform: Platform::Fcm,
                    token: Some(format!("token-of-{user}-{}", at.as_second())),
                    subscription: None,
                    label: None,
                },
                at,
            )
            .await
            .unwrap();
        self.state
            .preferences
            .update(user, |prefs| {
                prefs.channels.insert(ChannelKind::Email, false);
                Ok(())
            })
            .await
            .unwrap();
        delivery
    }
}

fn event(id: &str, user: &str, at: Timestamp, traits: Option<JsonObject>) -> Event {
    Event {
        id: id.into(),
        user_id: Some(user.into()),
        anonymous_id: None,
        timestamp: None,
        sent_at: None,
        received_at: None,
        ingested_at: at,
        agent_id: "agent".into(),
        write_key: None,
        context: JsonObject::new(),
        integrations: JsonObject::new(),
        body: match traits {
            Some(traits) => EventBody::Identify { traits },
            None => EventBody::Track {
                event: "Signed Up".into(),
                properties: JsonObject::new(),
            },
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_removes_a_user_everywhere_and_a_late_event_of_that_user_is_not_stored() {
    let server = Server::start().await;
    let now = Timestamp::now();
    let mine = server.seed("u1", now).await;
    let theirs = server.seed("u2", now).await;
    // The analytics fold the seeded events (the worker's pass, run here).
    while server.state.analytics.step().unwrap() > 0 {}

    // Export shows it all.
    let (status, export) = server.call(Method::GET, "/v1/admin/users/u1/export").await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["user_id"], "u1");
    assert_eq!(export["profile"]["traits"]["email"], "u1@example.com");
    assert_eq!(export["events"].as_array().unwrap().len(), 2);
    let notifications = export["notifications"].as_array().unwrap();
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0]["deliveries"][0]["id"], mine.id.to_string());
    assert_eq!(export["inbox"].as_array().unwrap().len(), 1);
    assert_eq!(export["devices"].as_array().unwrap().len(), 1);
    assert_eq!(export["preferences"]["channels"]["email"], false);
    assert!(export["erased_at"].is_null());
    assert_eq!(export["analytics"]["users"][0]["user"], "u1");
    assert_eq!(export["analytics"]["users"][0]["events"], 1);

    // Erase.
    let (status, erased) = server.call(Method::DELETE, "/v1/admin/users/u1").await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(erased["events"], 2);
    assert_eq!(erased["profile"], true);
    assert_eq!(erased["notifications"], 1);
    assert_eq!(erased["deliveries"], 1);
    assert_eq!(erased["inbox_items"], 1);
    assert_eq!(erased["devices"], 1);
    assert_eq!(erased["preferences"], true);
    assert!(
        erased["analytics_records"].as_u64().unwrap() > 0,
        "{erased}"
    );

    // Gone from every store...
    let state = &server.state;
    assert!(
        server
            .store
            .events_for_user("u1", 10, None)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    assert!(server.store.profile("u1").await.unwrap().is_none());
    assert!(
        state
            .notifications
            .list_for_user("u1", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(state.queue.get(mine.id).await.unwrap().is_none());
    assert!(state.inbox.items_of("u1").await.unwrap().is_empty());
    assert_eq!(state.inbox.counts("u1").await.unwrap().total, 0);
    assert!(state.devices.list("u1").await.unwrap().is_empty());
    assert!(state.preferences.stored("u1").await.unwrap().is_none());
    let analytics_of = |user: &str| {
        let query = nudge_control_plane::analytics::ReportQuery {
            report: Some(nudge_control_plane::analytics::ReportName::Users),
            user: Some(user.to_owned()),
            ..Default::default()
        };
        state.analytics.report(&query).unwrap().rows.len()
    };
    assert_eq!(analytics_of("u1"), 0);
    // ...while the other user's data stays.
    assert_eq!(
        server
            .store
            .events_for_user("u2", 10, None)
            .await
            .unwrap()
            .events
            .len(),
        2
    );
    assert!(server.store.profile("u2").await.unwrap().is_some());
    assert_eq!(
        state
            .notifications
            .list_for_user("u2", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(state.queue.get(theirs.id).await.unwrap().is_some());
    assert_eq!(state.inbox.items_of("u2").await.unwrap().len(), 1);
    assert_eq!(state.devices.list("u2").await.unwrap().len(), 1);
    assert!(state.preferences.stored("u2").await.unwrap().is_some());
    assert_eq!(analytics_of("u2"), 1);

    // A late event (an agent's outbox that was offline) is accepted and
    // not stored; the other user's event in the same batch is.
    let late = server
        .store
        .ingest(vec![
            event("late-u1", "u1", Timestamp::now(), None),
            event("late-u2", "u2", Timestamp::now(), None),
        ])
        .await
        .unwrap();
    assert_eq!((late.stored, late.erased, late.rejected.len()), (1, 1, 0));
    assert!(
        server
            .store
            .events_for_user("u1", 10, None)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    let (_, export) = server.call(Method::GET, "/v1/admin/users/u1/export").await;
    assert!(export["erased_at"].is_string());
    assert!(export["events"].as_array().unwrap().is_empty());

    // Idempotent.
    let (status, again) = server.call(Method::DELETE, "/v1/admin/users/u1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (again["events"].clone(), again["notifications"].clone()),
        (json!(0), json!(0))
    );

    // Lifting the tombstone lets the id's events in again.
    let (status, _) = server
        .call(Method::DELETE, "/v1/admin/users/u1/erasure")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call(Method::DELETE, "/v1/admin/users/u1/erasure")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let back = server
        .store
        .ingest(vec![event("back-u1", "u1", Timestamp::now(), None)])
        .await
        .unwrap();
    assert_eq!(back.stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_what_is_past_its_age() {
    let server = Server::start().await;
    let now = Timestamp::now();
    let days = |n: i64| SignedDuration::from_hours(24 * n);
    let old = server.seed("u1", now - days(40)).await;
    let fresh = server.seed("u1", now - days(5)).await;
    // Two attempts on the old delivery, long ago.
    let queue = &server.state.queue;
    for outcome in ["451 busy", "250 OK"] {
        let claimed = queue
            .claim_due(ChannelKind::InApp, now, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.id == old.id);
        let Some(_) = claimed else { continue };
        let completion = if outcome == "250 OK" {
            nudge_control_plane::delivery::Completion::Sent(
                nudge_control_plane::channels::SendReceipt {
                    provider_message_id: None,
                    answer: outcome.into(),
                },
            )
        } else {
            nudge_control_plane::delivery::Completion::Failed {
                error: nudge_control_plane::channels::SendError::Retriable {
                    answer: outcome.into(),
                    retry_after: None,
                },
                decision: nudge_control_plane::delivery::Decision::RetryAt(now - days(40)),
            }
        };
        queue
            .complete(old.id, &completion, now - days(40))
            .await
            .unwrap();
    }
    let config = RetentionConfig {
        events: Some(Duration::from_secs(30 * 86_400)),
        notifications: None,
        attempt_logs: Some(Duration::from_secs(10 * 86_400)),
    };
    let report = server.state.privacy.apply_retention(&config, now).unwrap();
    assert_eq!(report.events, 2, "the two old events, not the fresh ones");
    assert_eq!(report.attempt_logs_trimmed, 1);
    let trimmed = queue.get(old.id).await.unwrap().unwrap();
    assert_eq!(trimmed.attempt_log.len(), 1);
    assert_eq!(trimmed.attempt_log[0].answer, "250 OK");
    assert_eq!(report.notifications, 0, "notifications are off");
    let ids: Vec<String> = server
        .store
        .events_for_user("u1", 10, None)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(
        ids.iter()
            .all(|id| id.ends_with(&(now - days(5)).as_second().to_string()))
    );
    assert!(
        server.store.profile("u1").await.unwrap().is_some(),
        "profiles stay"
    );

    let config = RetentionConfig {
        notifications: Some(Duration::from_secs(30 * 86_400)),
        ..config
    };
    let report = server.state.privacy.apply_retention(&config, now).unwrap();
    assert_eq!(
        (
            report.events,
            report.notifications,
            report.deliveries,
            report.inbox_items
        ),
        (0, 1, 1, 1)
    );
    assert!(queue.get(old.id).await.unwrap().is_none());
    assert!(queue.get(fresh.id).await.unwrap().is_some());
    let notifications = server
        .state
        .notifications
        .list_for_user("u1", 10)
        .await
        .unwrap();
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].id, fresh.notification_id);
    let inbox = server.state.inbox.items_of("u1").await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].id, fresh.id.to_string());
    // Nothing more is past its age.
    let report = server.state.privacy.apply_retention(&config, now).unwrap();
    assert_eq!(report, Default::default());
}

/// A retention pass that fails midway (here: deleting a delivery, made to
/// fail by a trigger in the real database file) leaves the notification
/// in place, so the next pass finds it and removes its delivery and inbox
/// item too; nothing is left behind that no pass would find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_pass_cut_short_is_finished_by_the_next() {
    let server = Server::start().await;
    let now = Timestamp::now();
    let old = server
        .seed("u1", now - SignedDuration::from_hours(24 * 40))
        .await;
    let database = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        server._dir.path().join(SQLITE_FILE).display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_delivery_delete BEFORE DELETE ON deliveries \
         BEGIN SELECT RAISE(ABORT, 'deliveries unavailable (test)'); END",
    )
    .execute(&database)
    .await
    .unwrap();
    let config = RetentionConfig {
        events: None,
        notifications: Some(Duration::from_secs(30 * 86_400)),
        attempt_logs: None,
    };
    assert!(server.state.privacy.apply_retention(&config, now).is_err());

    sqlx::query("DROP TRIGGER refuse_delivery_delete")
        .execute(&database)
        .await
        .unwrap();
    let report = server.state.privacy.apply_retention(&config, now).unwrap();
    assert_eq!(
        (report.notifications, report.deliveries, report.inbox_items),
        (1, 1, 1)
    );
    assert!(server.state.queue.get(old.id).await.unwrap().is_none());
    assert!(server.state.inbox.items_of("u1").await.unwrap().is_empty());
    assert!(
        server
            .state
            .notifications
            .get(&old.notification_id)
            .await
            .unwrap()
            .is_none()
    );
}
