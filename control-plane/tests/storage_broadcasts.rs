//! Topics and broadcasts in storage (`control-plane/src/storage/topics.rs`,
//! `broadcasts.rs`, `audiences.rs`) on SQLite and on PostgreSQL:
//! subscriptions are kept once and paged by user id, an erased user is
//! not subscribed; a broadcast id is created once (same spec: the first
//! back; another spec: a conflict); only open, due broadcasts are picked;
//! progress moves only from the cursor it started at and never after a
//! cancel; segments read profiles, users with events and recent activity
//! a page at a time.

#[macro_use]
mod support;

use jiff::Timestamp;
use nudge_control_plane::broadcasts::{
    self, Audience, Broadcast, BroadcastError, BroadcastSpec, BroadcastState, BroadcastTable,
    Segment,
};
use nudge_control_plane::event::{Event, EventBody, JsonObject, NotifyRequest, Priority};
use nudge_control_plane::storage::{Cancelled, PageDone, Subscribed};
use support::Backend;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

fn spec(audience: Audience, title: &str) -> BroadcastSpec {
    BroadcastSpec {
        request: NotifyRequest {
            notification_type: "announcement".into(),
            template: None,
            title: Some(title.into()),
            body: Some("Body".into()),
            channels: Vec::new(),
            data: JsonObject::new(),
            priority: Priority::Normal,
            idempotency_key: None,
            cost: None,
        },
        audience,
        send_at: None,
    }
}

fn event(id: &str, user: &str, body: EventBody, ingested_at: Timestamp) -> Event {
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
        body,
    }
}

async fn subscriptions_are_kept_once_and_paged_by_user(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    let topics = &stores.topics;
    for user in ["u3", "u1", "u2", "u4", "u5"] {
        assert_eq!(
            topics.subscribe("news", user, at(0)).await.unwrap(),
            Subscribed::New
        );
    }
    assert_eq!(
        topics.subscribe("news", "u1", at(5)).await.unwrap(),
        Subscribed::Already
    );
    topics.subscribe("releases", "u1", at(1)).await.unwrap();
    assert_eq!(topics.count("news").await.unwrap(), 5);

    let first = topics.subscribers_after("news", None, 2).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|s| s.user_id.as_str()).collect();
    assert_eq!(ids, ["u1", "u2"]);
    assert_eq!(
        first[0].subscribed_at,
        at(0),
        "the first subscription's time"
    );
    let rest = topics
        .subscribers_after("news", Some("u2"), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = rest.iter().map(|s| s.user_id.as_str()).collect();
    assert_eq!(ids, ["u3", "u4", "u5"]);

    let mine = topics.of_user("u1").await.unwrap();
    let names: Vec<&str> = mine.iter().map(|s| s.topic.as_str()).collect();
    assert_eq!(names, ["news", "releases"]);

    assert!(topics.unsubscribe("news", "u1").await.unwrap());
    assert!(!topics.unsubscribe("news", "u1").await.unwrap());
    assert_eq!(topics.count("news").await.unwrap(), 4);

    // Erasure: the user's subscriptions go, and they cannot come back.
    stores.events.erase_user("u2", at(9)).await.unwrap();
    assert_eq!(topics.erase_user("u2").await.unwrap(), 1);
    assert_eq!(
        topics.subscribe("news", "u2", at(10)).await.unwrap(),
        Subscribed::UserErased
    );
    assert!(topics.of_user("u2").await.unwrap().is_empty());
    let error = broadcasts::subscribe(topics, "news", "u2", at(10))
        .await
        .unwrap_err();
    assert!(matches!(error, BroadcastError::UserErased(_)), "{error}");
    let error = broadcasts::subscribe(topics, "bad topic", "u9", at(10))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("topic"), "{error}");
    assert_eq!(
        topics.count("news").await.unwrap(),
        3,
        "refusals changed nothing"
    );
}

async fn a_broadcast_id_is_created_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    let table = &stores.broadcasts;
    let news = spec(Audience::Topic("news".into()), "Hello");
    let (first, created) = broadcasts::create(table, "b1", &news, at(0)).await.unwrap();
    assert!(created);
    assert_eq!(first.state, BroadcastState::Scheduled);
    assert_eq!(first.due_at, at(0));
    assert_eq!(
        (first.scanned, first.recipients, first.notifications),
        (0, 0, 0)
    );

    let (again, created) = broadcasts::create(table, "b1", &news, at(60))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, first, "the first, unchanged");

    let other = spec(Audience::Topic("news".into()), "Changed");
    let error = broadcasts::create(table, "b1", &other, at(60))
        .await
        .unwrap_err();
    assert!(matches!(error, BroadcastError::Conflict(_)), "{error}");

    // Refused before anything is stored.
    let error = broadcasts::create(table, "bad id", &news, at(0))
        .await
        .unwrap_err();
    assert!(error.to_string().starts_with("id "), "{error}");
    let mut far = news.clone();
    far.send_at = Some(at(367 * 86_400));
    let error = broadcasts::create(table, "b2", &far, at(0))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("send_at"), "{error}");
    let empty = spec(Audience::Segment(Segment::default()), "x");
    let error = broadcasts::create(table, "b3", &empty, at(0))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("audience.segment"), "{error}");
    assert!(table.get("b2").await.unwrap().is_none());
    assert!(table.get("b3").await.unwrap().is_none());

    // Listing: newest first, paged by id.
    for (n, id) in ["c1", "c2", "c3"].iter().enumerate() {
        broadcasts::create(table, id, &news, at(10 + n as i64))
            .await
            .unwrap();
    }
    let page = table.list(None, 2).await.unwrap();
    let ids: Vec<&str> = page.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["c3", "c2"]);
    let page = table.list(Some("c2"), 10).await.unwrap();
    let ids: Vec<&str> = page.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["c1", "b1"]);
}

async fn progress_moves_from_its_cursor_and_stops_at_a_cancel(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    let table = &stores.broadcasts;
    let mut later = spec(Audience::Topic("news".into()), "Later");
    later.send_at = Some(at(3600));
    broadcasts::create(table, "later", &later, at(0))
        .await
        .unwrap();
    let now = spec(Audience::Topic("news".into()), "Now");
    broadcasts::create(table, "now", &now, at(0)).await.unwrap();

    // Only what is due.
    let due = first_due(table, at(10)).await.unwrap();
    assert_eq!(due.id, "now");

    let page = PageDone {
        from: None,
        to: Some("u500".into()),
        scanned: 500,
        recipients: 480,
        notifications: 480,
        last: false,
    };
    assert!(table.record_page("now", &page, at(11)).await.unwrap());
    // The same page again (another replica, or a replay) counts nothing.
    assert!(!table.record_page("now", &page, at(12)).await.unwrap());
    let running = table.get("now").await.unwrap().unwrap();
    assert_eq!(running.state, BroadcastState::Running);
    assert_eq!(running.cursor.as_deref(), Some("u500"));
    assert_eq!(
        (running.scanned, running.recipients, running.notifications),
        (500, 480, 480)
    );
    assert_eq!(running.started_at, Some(at(11)));

    let last = PageDone {
        from: Some("u500".into()),
        to: Some("u700".into()),
        scanned: 200,
        recipients: 200,
        notifications: 150,
        last: true,
    };
    assert!(table.record_page("now", &last, at(13)).await.unwrap());
    let done = table.get("now").await.unwrap().unwrap();
    assert_eq!(done.state, BroadcastState::Done);
    assert_eq!(
        (done.scanned, done.recipients, done.notifications),
        (700, 680, 630)
    );
    assert_eq!(done.finished_at, Some(at(13)));
    assert!(first_due(table, at(20)).await.is_none(), "done is not due");
    // Done can still be cancelled (to recall what is held), once.
    let Cancelled::Now(recalled) = table.cancel("now", at(21)).await.unwrap() else {
        panic!("a done broadcast can be cancelled")
    };
    assert_eq!(recalled.state, BroadcastState::Cancelled);
    assert_eq!(
        (recalled.recipients, recalled.finished_at),
        (680, Some(at(21))),
        "its progress stays"
    );
    assert!(matches!(
        table.cancel("now", at(22)).await.unwrap(),
        Cancelled::Closed(_)
    ));
    assert!(first_due(table, at(30)).await.is_none());

    // A cancel wins over a page in flight, and the broadcast is no longer
    // due.
    assert_eq!(first_due(table, at(3600)).await.unwrap().id, "later");
    let Cancelled::Now(cancelled) = table.cancel("later", at(3601)).await.unwrap() else {
        panic!("open, so cancelled now")
    };
    assert_eq!(cancelled.state, BroadcastState::Cancelled);
    assert_eq!(cancelled.finished_at, Some(at(3601)));
    let in_flight = PageDone {
        from: None,
        to: Some("u1".into()),
        scanned: 1,
        recipients: 1,
        notifications: 1,
        last: true,
    };
    assert!(
        !table
            .record_page("later", &in_flight, at(3602))
            .await
            .unwrap()
    );
    let still = table.get("later").await.unwrap().unwrap();
    assert_eq!(
        (still.state, still.recipients),
        (BroadcastState::Cancelled, 0)
    );
    assert!(first_due(table, at(9999)).await.is_none());
    assert!(matches!(
        table.cancel("nope", at(1)).await.unwrap(),
        Cancelled::NotFound
    ));
}

async fn segments_read_profiles_users_and_activity_by_page(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    let events = &stores.events;
    let identify = |id: &str, user: &str, plan: &str, t: i64| {
        let traits: JsonObject =
            serde_json::from_value(serde_json::json!({ "plan": plan })).unwrap();
        event(id, user, EventBody::Identify { traits }, at(t))
    };
    let track = |id: &str, user: &str, t: i64| {
        event(
            id,
            user,
            EventBody::Track {
                event: "clicked".into(),
                properties: JsonObject::new(),
            },
            at(t),
        )
    };
    events
        .ingest(vec![
            identify("e1", "a", "pro", 0),
            identify("e2", "b", "free", 0),
            identify("e3", "c", "pro", 0),
            track("e4", "c", 100),
            track("e5", "d", 200),
            track("e6", "d", 201),
        ])
        .await
        .unwrap();
    let first = events.profiles_after(None, 2).await.unwrap();
    let users: Vec<&str> = first.iter().map(|(user, _)| user.as_str()).collect();
    assert_eq!(users, ["a", "b"]);
    assert_eq!(first[0].1.get("plan"), Some(&serde_json::json!("pro")));
    let rest = events.profiles_after(Some("b"), 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0, "c");

    assert_eq!(
        events.users_after(None, 10).await.unwrap(),
        ["a", "b", "c", "d"]
    );
    assert_eq!(events.users_after(Some("b"), 1).await.unwrap(), ["c"]);

    let active = events
        .active_since(&["a", "b", "c", "d"], at(100))
        .await
        .unwrap();
    let mut active: Vec<String> = active.into_iter().collect();
    active.sort();
    assert_eq!(active, ["c", "d"]);
}

on_both_engines!(
    subscriptions_are_kept_once_and_paged_by_user,
    a_broadcast_id_is_created_once,
    progress_moves_from_its_cursor_and_stops_at_a_cancel,
    segments_read_profiles_users_and_activity_by_page,
);

/// The open broadcast due first at `now`, if any.
async fn first_due(table: &BroadcastTable, now: Timestamp) -> Option<Broadcast> {
    table.due(now, 1).await.unwrap().pop()
}
