//! "Counts, rates, funnels, unique users and sessions, costs and
//! attributed outcomes come out exactly right on a crafted event stream
//! (including anonymous visitors who later identify)": real SQL stores,
//! the real delivery queue writing delivery facts, the rollup worker
//! folding them, reports read back. Every expected figure below is worked
//! out by hand in the comments next to the stream.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use nudge_control_plane::analytics::{
    Analytics, AnalyticsConfig, Cell, FunnelDefinition, Granularity, Money, Report, ReportName,
    ReportQuery,
};
use nudge_control_plane::channels::{
    ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt,
};
use nudge_control_plane::delivery::{
    Clock, Completion, Decision, Delivery, DeliveryQueue, Engagement, ManualClock, NewDelivery,
    Priority,
};
use nudge_control_plane::event::{Event, EventBody, JsonObject};
use nudge_control_plane::storage::{EventStore, Stores};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

struct Ids {
    user: Option<&'static str>,
    anonymous: Option<&'static str>,
}

const ALICE: Ids = Ids {
    user: Some("alice"),
    anonymous: None,
};
const BOB: Ids = Ids {
    user: Some("bob"),
    anonymous: None,
};
const ANON_1: Ids = Ids {
    user: None,
    anonymous: Some("anon-1"),
};
/// anon-1 after identifying: Segment's libraries send both ids.
const CAROL: Ids = Ids {
    user: Some("carol"),
    anonymous: Some("anon-1"),
};
const ANON_2: Ids = Ids {
    user: None,
    anonymous: Some("anon-2"),
};

fn event(id: usize, who: &Ids, time: &str, body: EventBody) -> Event {
    Event {
        id: format!("ev-{id}"),
        user_id: who.user.map(str::to_owned),
        anonymous_id: who.anonymous.map(str::to_owned),
        timestamp: Some(at(time)),
        sent_at: None,
        received_at: None,
        ingested_at: at(time),
        agent_id: "agent".to_owned(),
        write_key: None,
        context: JsonObject::new(),
        integrations: JsonObject::new(),
        body,
    }
}

fn track(name: &str, properties: Value) -> EventBody {
    EventBody::Track {
        event: name.to_owned(),
        properties: match properties {
            Value::Object(properties) => properties,
            _ => JsonObject::new(),
        },
    }
}

fn product(name: &str, id: &str) -> EventBody {
    track(name, json!({ "product_id": id }))
}

fn paid(amount: Value) -> EventBody {
    let mut properties = JsonObject::new();
    properties.insert("amount".to_owned(), amount);
    track("bill_paid_on_time", Value::Object(properties))
}

/// The crafted stream, in time order.
fn stream() -> Vec<Event> {
    let session = |start: bool, id: &str| {
        let session_id = id.to_owned();
        if start {
            EventBody::SessionStart {
                session_id,
                properties: JsonObject::new(),
            }
        } else {
            EventBody::SessionEnd {
                session_id,
                properties: JsonObject::new(),
            }
        }
    };
    let identify = EventBody::Identify {
        traits: JsonObject::new(),
    };
    let events = vec![
        // Monday 2026-11-02. Alice goes through the whole checkout funnel.
        (&ALICE, "2026-11-02T09:00:00Z", paid(json!(25))),
        (&BOB, "2026-11-02T09:00:00Z", paid(json!("10.00"))),
        (&ALICE, "2026-11-02T10:00:00Z", product("view", "p1")),
        (&ALICE, "2026-11-02T10:05:00Z", product("click", "p1")),
        (&ALICE, "2026-11-02T10:10:00Z", product("cart_add", "p1")),
        (&ALICE, "2026-11-02T10:20:00Z", product("purchase", "p1")),
        // An anonymous visitor browses, then identifies as carol and buys.
        (&ANON_1, "2026-11-02T11:00:00Z", product("view", "p1")),
        (
            &ANON_1,
            "2026-11-02T11:02:00Z",
            product("Product Viewed", "p2"),
        ),
        (&ANON_1, "2026-11-02T11:04:00Z", product("cart_add", "p2")),
        (&CAROL, "2026-11-02T11:10:00Z", identify),
        (&CAROL, "2026-11-02T11:15:00Z", product("purchase", "p2")),
        (&BOB, "2026-11-02T12:00:00Z", product("view", "p2")),
        (&BOB, "2026-11-02T12:01:00Z", product("share", "p2")),
        (&ANON_2, "2026-11-02T13:00:00Z", product("view", "p1")),
        // Tuesday 2026-11-03.
        (&ALICE, "2026-11-03T09:00:00Z", product("view", "p1")),
        // 45 minutes later: a new session.
        (&ALICE, "2026-11-03T09:45:00Z", product("view", "p2")),
        (&BOB, "2026-11-03T10:00:00Z", session(true, "s-bob")),
        (&BOB, "2026-11-03T10:05:00Z", product("view", "p1")),
        (&BOB, "2026-11-03T10:30:00Z", session(false, "s-bob")),
        // Only the anonymous id, but it is linked to carol now.
        (&ANON_1, "2026-11-03T12:00:00Z", product("view", "p3")),
        (&CAROL, "2026-11-03T13:00:00Z", paid(json!(40))),
        // Monday 2026-11-09, past alice's attribution window (7 days
        // after her click on 11-02 08:31).
        (&ALICE, "2026-11-09T09:00:00Z", paid(json!(5.5))),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(index, (who, time, body))| event(index, who, time, body))
        .collect()
}

fn config() -> AnalyticsConfig {
    let mut config = AnalyticsConfig {
        outcome_events: vec!["bill_paid_on_time".to_owned()],
        funnels: vec![FunnelDefinition {
            name: "checkout".to_owned(),
            steps: vec![
                "view".to_owned(),
                "cart_add".to_owned(),
                "purchase".to_owned(),
            ],
            window: std::time::Duration::from_secs(7 * 86_400),
        }],
        ..AnalyticsConfig::default()
    };
    config
        .cost_per_message
        .insert("email.smtp".to_owned(), "0.0004".parse().unwrap());
    config
        .cost_per_message
        .insert("sms".to_owned(), "0.0079".parse().unwrap());
    config
}

struct World {
    _dir: tempfile::TempDir,
    stores: Stores,
    store: EventStore,
    queue: DeliveryQueue,
    clock: Arc<ManualClock>,
    analytics: Analytics,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(dir.path()).await.unwrap();
        let store: EventStore = stores.events.clone();
        let clock = Arc::new(ManualClock::new(at("2026-11-10T12:00:00Z")));
        let analytics = Analytics::open(
            &stores,
            config(),
            clock.clone(),
            &prometheus::Registry::new(),
        )
        .unwrap();
        World {
            queue: stores.deliveries.clone(),
            _dir: dir,
            stores,
            store,
            clock,
            analytics,
        }
    }

    /// Runs the worker until it is caught up.
    fn catch_up(&self) {
        while self.analytics.step().unwrap() > 0 {}
    }

    fn report(&self, name: ReportName, query: ReportQuery) -> Report {
        self.analytics
            .report(&ReportQuery {
                report: Some(name),
                from: query.from.or(Some("2026-11-01".parse().unwrap())),
                to: query.to.or(Some("2026-11-10".parse().unwrap())),
                ..query
            })
            .unwrap()
    }

    /// A delivery of `kind` on `channel` to `user`, created at `created`
    /// and claimed at once.
    async fn delivery(
        &self,
        user: &str,
        channel: ChannelKind,
        created: &str,
        cost: Option<&str>,
    ) -> Delivery {
        let mut delivery = Delivery::new(
            NewDelivery {
                notification_id: format!("n-{user}-{channel}"),
                user_id: user.to_owned(),
                channel,
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
            at(created),
        );
        delivery.template = Some("bill_due_v2".to_owned());
        delivery.cost = cost.map(|cost| cost.parse().unwrap());
        self.queue.enqueue(delivery.clone()).await.unwrap();
        let claimed = self
            .queue
            .claim_due(channel, at(created), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        delivery
    }

    async fn sent(&self, delivery: &Delivery, time: &str) {
        let receipt = SendReceipt {
            provider_message_id: None,
            answer: "250 ok".to_owned(),
        };
        self.queue
            .complete(delivery.id, &Completion::Sent(receipt), at(time))
            .await
            .unwrap();
    }
}

fn text(report: &Report, row: usize, column: &str) -> String {
    report
        .cell(row, column)
        .unwrap_or_else(|| panic!("no {column} in row {row}"))
        .to_text()
}

/// The row whose `column` is `value`.
fn row_where(report: &Report, column: &str, value: &str) -> usize {
    (0..report.rows.len())
        .find(|row| text(report, *row, column) == value)
        .unwrap_or_else(|| panic!("no row with {column} = {value} in {:?}", report.to_json()))
}

/// Plays the deliveries and the event stream in time order, with the
/// worker folding between steps as it would while running.
async fn play(world: &World) {
    // 08:00 a bill reminder by email to alice: opened 08:30, clicked 08:31.
    let alice_email = world
        .delivery("alice", ChannelKind::Email, "2026-11-02T08:00:00Z", None)
        .await;
    world.sent(&alice_email, "2026-11-02T08:00:05Z").await;
    world
        .queue
        .mark_delivered(alice_email.id, at("2026-11-02T08:00:10Z"))
        .await
        .unwrap();
    world
        .queue
        .record_engagement(
            alice_email.id,
            Engagement::Opened,
            at("2026-11-02T08:30:00Z"),
        )
        .await
        .unwrap();
    world
        .queue
        .record_engagement(
            alice_email.id,
            Engagement::Clicked,
            at("2026-11-02T08:31:00Z"),
        )
        .await
        .unwrap();
    // A repeated click changes nothing and counts nothing.
    world
        .queue
        .record_engagement(
            alice_email.id,
            Engagement::Clicked,
            at("2026-11-02T08:40:00Z"),
        )
        .await
        .unwrap();
    // By SMS to bob at a negotiated price: delivered, never opened.
    let bob_sms = world
        .delivery(
            "bob",
            ChannelKind::Sms,
            "2026-11-02T08:00:00Z",
            Some("0.05"),
        )
        .await;
    world.sent(&bob_sms, "2026-11-02T08:00:02Z").await;
    world
        .queue
        .mark_delivered(bob_sms.id, at("2026-11-02T08:01:00Z"))
        .await
        .unwrap();
    // By email to bob: refused for good before sending.
    let bob_email = world
        .delivery("bob", ChannelKind::Email, "2026-11-02T08:00:00Z", None)
        .await;
    let refused = Completion::Failed {
        error: SendError::Permanent {
            answer: "550 no such user".to_owned(),
        },
        decision: Decision::Fail,
    };
    world
        .queue
        .complete(bob_email.id, &refused, at("2026-11-02T08:00:03Z"))
        .await
        .unwrap();
    // By SMS to carol on the 3rd: she clicks at 12:30.
    let carol_sms = world
        .delivery("carol", ChannelKind::Sms, "2026-11-03T08:00:00Z", None)
        .await;
    world.sent(&carol_sms, "2026-11-03T08:00:01Z").await;

    let events = stream();
    let (before_carol_click, after): (Vec<Event>, Vec<Event>) = events
        .into_iter()
        .partition(|event| event.timestamp.unwrap() < at("2026-11-03T12:30:00Z"));
    world.catch_up();
    for chunk in before_carol_click.chunks(3) {
        world.store.ingest(chunk.to_vec()).await.unwrap();
        world.catch_up();
    }
    world
        .queue
        .record_engagement(
            carol_sms.id,
            Engagement::Clicked,
            at("2026-11-03T12:30:00Z"),
        )
        .await
        .unwrap();
    world.catch_up();
    world.store.ingest(after).await.unwrap();
    world.catch_up();
    let swept = world.analytics.sweep_sessions(world.clock.now()).unwrap();
    assert!(swept > 0, "open sessions are over a week old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_stream_comes_out_exactly() {
    let world = World::new().await;
    play(&world).await;

    // Summary per day. 11-02: events: alice 4 + anon-1/carol 4 + bob 2 +
    // anon-2 1 = 11, and the two 09:00 outcomes are track events too = 13.
    // Unique users: alice, carol (anon-1 is carol), bob, anon-2 = 4.
    // Sessions: alice's and bob's 09:00 outcomes are an hour before their
    // next events, so they have two each; carol and anon-2 one = 6.
    let summary = world.report(ReportName::Summary, ReportQuery::default());
    let day = row_where(&summary, "period", "2026-11-02");
    assert_eq!(text(&summary, day, "events"), "13");
    assert_eq!(text(&summary, day, "unique_users"), "4");
    assert_eq!(text(&summary, day, "unique_sessions"), "6");
    // 11-03: alice 2, bob 1 (session calls are not activity), carol 2 = 5;
    // users alice, bob, carol = 3; sessions: alice 2, bob's s-bob,
    // carol's at 12:00 and at 13:00 (an hour later) = 5.
    let day = row_where(&summary, "period", "2026-11-03");
    assert_eq!(text(&summary, day, "events"), "5");
    assert_eq!(text(&summary, day, "unique_users"), "3");
    assert_eq!(text(&summary, day, "unique_sessions"), "5");
    // The week: carol is one user although she was anonymous first.
    let weekly = world.report(
        ReportName::Summary,
        ReportQuery {
            granularity: Some(Granularity::Week),
            ..ReportQuery::default()
        },
    );
    let week = row_where(&weekly, "period", "2026-W45");
    assert_eq!(text(&weekly, week, "events"), "18");
    assert_eq!(text(&weekly, week, "unique_users"), "4");
    assert_eq!(text(&weekly, week, "unique_sessions"), "11");
    // 11-09 (W46): alice's late outcome.
    let week = row_where(&weekly, "period", "2026-W46");
    assert_eq!(text(&weekly, week, "events"), "1");

    // Resources. p1: views alice ×2, anon-1, anon-2, bob = 5; click 1;
    // cart 1; purchase 1. p2: views anon-1 ("Product Viewed"), bob,
    // alice = 3; cart 1 (carol); purchase 1 (carol); share is "other".
    let resources = world.report(ReportName::Resources, ReportQuery::default());
    let p1 = row_where(&resources, "resource", "p1");
    assert_eq!(text(&resources, p1, "view"), "5");
    assert_eq!(text(&resources, p1, "click"), "1");
    assert_eq!(text(&resources, p1, "view_to_click"), "0.2");
    assert_eq!(text(&resources, p1, "click_to_cart"), "1");
    assert_eq!(text(&resources, p1, "cart_to_purchase"), "1");
    let p2 = row_where(&resources, "resource", "p2");
    assert_eq!(text(&resources, p2, "view"), "3");
    assert_eq!(text(&resources, p2, "cart_add"), "1");
    assert_eq!(text(&resources, p2, "purchase"), "1");
    assert_eq!(text(&resources, p2, "view_to_click"), "0");
    assert_eq!(
        resources.cell(p2, "click_to_cart"),
        Some(&Cell::Null),
        "no clicks: no rate"
    );
    assert_eq!(p1, 0, "p1 has the most events");
    let only_p2 = world.report(
        ReportName::Resources,
        ReportQuery {
            resource: Some("p2".to_owned()),
            ..ReportQuery::default()
        },
    );
    assert_eq!(only_p2.rows.len(), 1);
    assert_eq!(text(&only_p2, 0, "view"), "3");
    assert_eq!(text(&only_p2, 0, "purchase"), "1");
    let actions = world.report(
        ReportName::ResourceActions,
        ReportQuery {
            resource: Some("p2".to_owned()),
            ..ReportQuery::default()
        },
    );
    assert_eq!(
        text(&actions, row_where(&actions, "action", "share"), "count"),
        "1"
    );
    // One day only: 11-03 has p1 ×2 views (alice, bob), p2 ×1, p3 ×1.
    let one_day = world.report(
        ReportName::Resources,
        ReportQuery {
            from: Some("2026-11-03".parse().unwrap()),
            to: Some("2026-11-03".parse().unwrap()),
            ..ReportQuery::default()
        },
    );
    let p1 = row_where(&one_day, "resource", "p1");
    assert_eq!(text(&one_day, p1, "view"), "2");
    assert_eq!(one_day.rows.len(), 3);

    // Funnel view → cart_add → purchase. Entered on 11-02: alice,
    // anon-1 (carol), bob, anon-2; on 11-03 alice and carol again (each
    // completed on 11-02, so a view starts a new pass; bob's 11-03 view is
    // inside his open pass) = 6. Reached cart_add: alice and carol (her
    // anonymous progress carried over) = 2; purchase: the same 2.
    let funnels = world.report(ReportName::Funnels, ReportQuery::default());
    assert_eq!(text(&funnels, 0, "users"), "6");
    assert_eq!(text(&funnels, 1, "users"), "2");
    assert_eq!(text(&funnels, 1, "conversion_from_previous"), "0.333333");
    assert_eq!(text(&funnels, 2, "users"), "2");
    assert_eq!(text(&funnels, 2, "conversion_from_previous"), "1");
    assert_eq!(text(&funnels, 2, "conversion_from_start"), "0.333333");

    // Sessions of alice: 11-02 10:00-10:20 (4 events + the 09:00 outcome
    // before it is its own session: 09:00-09:00), 11-03 09:00 (alone),
    // 11-03 09:45 (alone), 11-09 09:00 (alone), all ended by inactivity.
    let sessions = world.report(
        ReportName::Sessions,
        ReportQuery {
            user: Some("alice".to_owned()),
            ..ReportQuery::default()
        },
    );
    assert_eq!(sessions.rows.len(), 5, "{:?}", sessions.to_json());
    let first = row_where(&sessions, "start", "2026-11-02T10:00:00Z");
    assert_eq!(text(&sessions, first, "end"), "2026-11-02T10:20:00Z");
    assert_eq!(text(&sessions, first, "duration_seconds"), "1200");
    assert_eq!(text(&sessions, first, "end_reason"), "inactivity");
    assert_eq!(text(&sessions, first, "events"), "4");
    // Sessions started on 11-02: alice 2, bob 2, carol 1, anon-2 1, all
    // ended by now; durations 0 + 1200 (alice), 0 + 60 (bob), 900
    // (carol), 0 (anon-2): mean 2160 / 6 = 360 s.
    let per_day = world.report(ReportName::Sessions, ReportQuery::default());
    let day = row_where(&per_day, "period", "2026-11-02");
    assert_eq!(text(&per_day, day, "sessions_started"), "6");
    assert_eq!(text(&per_day, day, "sessions_ended"), "6");
    assert_eq!(text(&per_day, day, "mean_duration_seconds"), "360");
    // Bob's explicit session: 10:00 to the end call at 10:30.
    let bob = world.report(
        ReportName::Sessions,
        ReportQuery {
            user: Some("bob".to_owned()),
            ..ReportQuery::default()
        },
    );
    let explicit = row_where(&bob, "session", "s-bob");
    assert_eq!(text(&bob, explicit, "end_reason"), "ended");
    assert_eq!(text(&bob, explicit, "duration_seconds"), "1800");
    assert_eq!(text(&bob, explicit, "events"), "1");

    // Engagement. Carol: 3 anonymous events + identify-day purchase +
    // 11-03 view + outcome = 6 events; sessions 11-02 11:00-11:15 (900
    // s), 11-03 12:00 and 13:00 (alone, 0 s); 2 active days.
    let carol = world.report(
        ReportName::Users,
        ReportQuery {
            user: Some("carol".to_owned()),
            ..ReportQuery::default()
        },
    );
    assert_eq!(text(&carol, 0, "events"), "6");
    assert_eq!(text(&carol, 0, "sessions"), "3");
    assert_eq!(text(&carol, 0, "time_spent_seconds"), "900");
    assert_eq!(text(&carol, 0, "active_days"), "2");
    assert_eq!(text(&carol, 0, "first_seen"), "2026-11-02T11:00:00Z");
    let alice = world.report(
        ReportName::Users,
        ReportQuery {
            user: Some("alice".to_owned()),
            ..ReportQuery::default()
        },
    );
    assert_eq!(text(&alice, 0, "events"), "8");
    assert_eq!(text(&alice, 0, "active_days"), "3");
    assert_eq!(text(&alice, 0, "time_spent_seconds"), "1200");
    assert_eq!(
        text(&alice, 0, "top_features"),
        "view (3); bill_paid_on_time (2); cart_add (1)"
    );
    let everyone = world.report(ReportName::Users, ReportQuery::default());
    assert_eq!(
        everyone.rows.len(),
        4,
        "alice, bob, carol, anonymous:anon-2"
    );
    row_where(&everyone, "user", "anonymous:anon-2");
    let events = world.report(
        ReportName::UserEvents,
        ReportQuery {
            user: Some("carol".to_owned()),
            ..ReportQuery::default()
        },
    );
    assert_eq!(
        text(&events, row_where(&events, "event", "view"), "count"),
        "2"
    );
    assert_eq!(
        text(
            &events,
            row_where(&events, "event", "Product Viewed"),
            "count"
        ),
        "1"
    );

    // Delivery, whole range. Email: alice's sent, delivered 10 s after
    // due, opened and clicked; bob's failed before sending.
    let delivery = world.report(
        ReportName::Delivery,
        ReportQuery {
            granularity: Some(Granularity::Total),
            ..ReportQuery::default()
        },
    );
    let email = row_where(&delivery, "channel", "email");
    assert_eq!(text(&delivery, email, "sent"), "1");
    assert_eq!(text(&delivery, email, "delivered"), "1");
    assert_eq!(text(&delivery, email, "opened"), "1");
    assert_eq!(text(&delivery, email, "clicked"), "1");
    assert_eq!(text(&delivery, email, "failed"), "1");
    assert_eq!(text(&delivery, email, "failure_rate"), "0.5");
    assert_eq!(text(&delivery, email, "click_rate"), "1");
    assert_eq!(text(&delivery, email, "mean_seconds_to_deliver"), "10");
    // Opened 08:30:00, sent 08:00:05: 1795 s.
    assert_eq!(text(&delivery, email, "mean_seconds_to_read"), "1795");
    assert_eq!(text(&delivery, email, "p95_seconds_to_read"), "1800");
    assert_eq!(text(&delivery, email, "cost"), "0.0004");
    assert_eq!(text(&delivery, email, "conversions"), "1");
    assert_eq!(text(&delivery, email, "revenue"), "25.00");
    // SMS: bob's (override 0.05) delivered, carol's (0.0079) clicked, so
    // delivered too.
    let sms = row_where(&delivery, "channel", "sms");
    assert_eq!(text(&delivery, sms, "sent"), "2");
    assert_eq!(text(&delivery, sms, "delivered"), "2");
    assert_eq!(text(&delivery, sms, "clicked"), "1");
    assert_eq!(text(&delivery, sms, "click_rate"), "0.5");
    assert_eq!(text(&delivery, sms, "cost"), "0.0579");
    assert_eq!(text(&delivery, sms, "revenue"), "40.00");
    // One user's figures: bob's SMS and his failed email.
    let bob = world.report(
        ReportName::Delivery,
        ReportQuery {
            user: Some("bob".to_owned()),
            granularity: Some(Granularity::Total),
            ..ReportQuery::default()
        },
    );
    assert_eq!(bob.rows.len(), 2);
    assert_eq!(
        text(&bob, row_where(&bob, "channel", "sms"), "cost"),
        "0.05"
    );
    // Hourly: every figure lands in the cohort's creation hour.
    let hourly = world.report(
        ReportName::Delivery,
        ReportQuery {
            granularity: Some(Granularity::Hour),
            channel: Some(ChannelKind::Sms),
            ..ReportQuery::default()
        },
    );
    let periods: Vec<String> = (0..hourly.rows.len())
        .map(|row| text(&hourly, row, "period"))
        .collect();
    assert_eq!(periods, ["2026-11-02T08", "2026-11-03T08"]);

    // Costs and cost per conversion.
    let costs = world.report(
        ReportName::Costs,
        ReportQuery {
            granularity: Some(Granularity::Total),
            ..ReportQuery::default()
        },
    );
    let sms = row_where(&costs, "channel", "sms");
    assert_eq!(text(&costs, sms, "provider"), "twilio");
    assert_eq!(text(&costs, sms, "messages"), "2");
    assert_eq!(text(&costs, sms, "cost_per_message"), "0.02895");
    assert_eq!(text(&costs, sms, "cost_per_conversion"), "0.0579");
    let email = row_where(&costs, "channel", "email");
    assert_eq!(text(&costs, email, "provider"), "smtp");
    assert_eq!(text(&costs, email, "cost_per_conversion"), "0.0004");

    // Outcomes: alice 25 on 11-02 after her click (email), bob 10 with no
    // touch, carol 40 on 11-03 after her SMS click, alice 5.50 on 11-09
    // outside the window.
    let outcomes = world.report(
        ReportName::Outcomes,
        ReportQuery {
            granularity: Some(Granularity::Total),
            ..ReportQuery::default()
        },
    );
    let json = outcomes.to_json();
    let rows = json["rows"].as_array().unwrap();
    let attributed: Vec<(String, String)> = rows
        .iter()
        .filter(|row| row["attributed"] == "true")
        .map(|row| {
            (
                row["channel"].as_str().unwrap().to_owned(),
                row["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        attributed,
        [
            ("email".to_owned(), "25.00".to_owned()),
            ("sms".to_owned(), "40.00".to_owned())
        ]
    );
    let unattributed: Vec<&Value> = rows
        .iter()
        .filter(|row| row["attributed"] == "false")
        .collect();
    assert_eq!(unattributed.len(), 1, "one group: {rows:?}");
    assert_eq!(unattributed[0]["count"], 2);
    assert_eq!(unattributed[0]["amount"], "15.50");
    assert!(
        rows.iter()
            .filter(|row| row["attributed"] == "true")
            .all(|row| row["template"] == "bill_due_v2" && row["type"] == "bill_due")
    );
    assert_eq!(unattributed[0]["channel"], Value::Null);

    // Channels: email converts 1 of 1 sent, SMS 1 of 2.
    let channels = world.report(ReportName::Channels, ReportQuery::default());
    assert_eq!(text(&channels, 0, "channel"), "email");
    assert_eq!(text(&channels, 0, "rank"), "1");
    assert_eq!(text(&channels, 0, "return_on_cost"), "62500");
    assert_eq!(text(&channels, 1, "channel"), "sms");
    assert_eq!(text(&channels, 1, "conversion_rate"), "0.5");

    // Templates.
    let templates = world.report(ReportName::Templates, ReportQuery::default());
    let row = row_where(&templates, "channel", "sms");
    assert_eq!(text(&templates, row, "template"), "bill_due_v2");
    assert_eq!(text(&templates, row, "conversions"), "1");

    // Exactly once: a second worker on the same data (a restart) finds
    // nothing left to fold, and every figure stays.
    let restarted = Analytics::open(
        &world.stores,
        config(),
        world.clock.clone(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    assert_eq!(restarted.step().unwrap(), 0);
    assert_eq!(
        world.report(
            ReportName::Delivery,
            ReportQuery {
                granularity: Some(Granularity::Total),
                ..ReportQuery::default()
            }
        ),
        delivery
    );
    assert_eq!(
        world.report(ReportName::Summary, ReportQuery::default()),
        summary
    );
    let _ = Money::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_forgets_the_user_but_keeps_aggregates() {
    let world = World::new().await;
    play(&world).await;
    let weekly = |world: &World| {
        world.report(
            ReportName::Summary,
            ReportQuery {
                granularity: Some(Granularity::Week),
                ..ReportQuery::default()
            },
        )
    };
    let before = weekly(&world);
    assert!(world.analytics.erase_user("carol").unwrap() > 0);
    let carol = ReportQuery {
        user: Some("carol".to_owned()),
        ..ReportQuery::default()
    };
    assert!(
        world
            .report(ReportName::Users, carol.clone())
            .rows
            .is_empty()
    );
    assert!(
        world
            .report(ReportName::Sessions, carol.clone())
            .rows
            .is_empty()
    );
    assert!(
        world
            .report(ReportName::UserEvents, carol.clone())
            .rows
            .is_empty()
    );
    assert!(
        world
            .report(
                ReportName::Delivery,
                ReportQuery {
                    granularity: Some(Granularity::Total),
                    ..carol
                }
            )
            .rows
            .is_empty()
    );
    // The counts of the week do not say who: they stay.
    assert_eq!(weekly(&world), before);
    // Her anonymous id is no longer linked: a new anonymous event counts
    // for a new anonymous visitor, not for her.
    world
        .store
        .ingest(vec![event(
            900,
            &ANON_1,
            "2026-11-10T09:00:00Z",
            product("view", "p1"),
        )])
        .await
        .unwrap();
    world.catch_up();
    let everyone = world.report(ReportName::Users, ReportQuery::default());
    row_where(&everyone, "user", "anonymous:anon-1");
    assert!((0..everyone.rows.len()).all(|row| text(&everyone, row, "user") != "carol"));
}

/// More sessions go stale at once than a sweep ends per transaction: all
/// end, each once, by inactivity at their last event, and the sweep's
/// marks go with them (a second sweep finds nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_ends_every_stale_session_once() {
    let world = World::new().await;
    let visitors = 5_001;
    let events: Vec<Event> = (0..visitors)
        .map(|n| {
            let mut event = event(
                n,
                &ALICE,
                "2026-11-09T08:00:00Z",
                track("opened_app", json!({})),
            );
            event.user_id = Some(format!("user-{n}"));
            event
        })
        .collect();
    world.store.ingest(events).await.unwrap();
    world.catch_up();
    let query = ReportQuery {
        granularity: Some(Granularity::Day),
        ..ReportQuery::default()
    };
    let sessions = world.report(ReportName::Sessions, query.clone());
    let day = row_where(&sessions, "period", "2026-11-09");
    assert_eq!(text(&sessions, day, "sessions_started"), "5001");
    assert_eq!(text(&sessions, day, "sessions_ended"), "0");

    // Not stale yet at 08:29: nothing ends.
    let early = at("2026-11-09T08:29:00Z");
    assert_eq!(world.analytics.sweep_sessions(early).unwrap(), 0);
    assert_eq!(
        world.analytics.sweep_sessions(world.clock.now()).unwrap(),
        visitors
    );
    assert_eq!(
        world.analytics.sweep_sessions(world.clock.now()).unwrap(),
        0
    );

    let sessions = world.report(ReportName::Sessions, query);
    assert_eq!(text(&sessions, day, "sessions_ended"), "5001");
    let one = world.report(
        ReportName::Sessions,
        ReportQuery {
            user: Some("user-4321".to_owned()),
            ..ReportQuery::default()
        },
    );
    assert_eq!(one.rows.len(), 1);
    assert_eq!(text(&one, 0, "end_reason"), "inactivity");
    assert_eq!(text(&one, 0, "end"), "2026-11-09T08:00:00Z");
}

/// Amounts stored before intake bounded them (or by another client) cannot
/// wrap a sum: an outcome amount beyond the bound counts as no amount, and
/// costs that would overflow saturate. Before, the second extreme cost
/// panicked the worker in a debug build (wrapped to negative spend in a
/// release build) and it retried the same fact forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_amounts_neither_wrap_nor_stall_the_worker() {
    let world = World::new().await;
    // Two SMS to bob, each costing 5 × 10¹² units (5 × 10¹⁸ micro-units).
    for (user, created) in [
        ("bob", "2026-11-02T08:00:00Z"),
        ("dave", "2026-11-02T08:01:00Z"),
    ] {
        let delivery = world
            .delivery(user, ChannelKind::Sms, created, Some("5000000000000"))
            .await;
        world.sent(&delivery, "2026-11-02T08:05:00Z").await;
    }
    let outcomes = [
        json!(4e12),
        json!("4000000000000"),
        json!(1e9),
        json!("0.5"),
    ];
    let events: Vec<Event> = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, amount)| event(index, &BOB, "2026-11-02T09:00:00Z", paid(amount)))
        .collect();
    world.store.ingest(events).await.unwrap();
    world.catch_up();

    let costs = world.report(
        ReportName::Costs,
        ReportQuery {
            granularity: Some(Granularity::Total),
            ..ReportQuery::default()
        },
    );
    let sms = row_where(&costs, "channel", "sms");
    assert_eq!(text(&costs, sms, "messages"), "2");
    assert_eq!(
        text(&costs, sms, "cost"),
        Money(i64::MAX).to_string(),
        "saturated, not wrapped"
    );

    let outcomes = world.report(
        ReportName::Outcomes,
        ReportQuery {
            granularity: Some(Granularity::Total),
            ..ReportQuery::default()
        },
    );
    let json = outcomes.to_json();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["count"], 4);
    // 10⁹ + 0.5; the two amounts beyond the bound count as none.
    assert_eq!(rows[0]["amount"], "1000000000.50");
}
