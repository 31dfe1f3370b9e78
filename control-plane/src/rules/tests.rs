//! Rules: parsing, validation, matching, and pending triggers in a real
//! (embedded SQLite) database.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::event::{Event, EventBody, JsonObject, Priority};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rules: Vec<Rule>,
}

fn parse(toml_text: &str) -> Result<Vec<Rule>, toml::de::Error> {
    toml::from_str::<Config>(toml_text).map(|config| config.rules)
}

const EXAMPLE: &str = r#"
[[rules]]
name = "cart-reminder"
on = "cart_add"
notify = "cart_reminder"
when = [ { property = "total", op = "gte", value = 20 }, { property = "plan", op = "eq", value = "pro" } ]
delay = "1h"
unless = "purchase"
channels = ["email"]
priority = "high"

[[rules]]
name = "payment.failed_1"
on = "payment_failed"
notify = "payment_failed"
"#;

fn rule(toml_rule: &str) -> Rule {
    let rules = parse(&format!(
        "[[rules]]\nname = \"r\"\non = \"e\"\nnotify = \"t\"\n{toml_rule}"
    ))
    .unwrap();
    rules.into_iter().next().unwrap()
}

fn props(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn track(id: &str, user: Option<&str>, name: &str, properties: serde_json::Value) -> Event {
    Event {
        id: id.into(),
        user_id: user.map(Into::into),
        anonymous_id: None,
        timestamp: None,
        sent_at: None,
        received_at: None,
        ingested_at: Timestamp::UNIX_EPOCH,
        agent_id: String::new(),
        write_key: None,
        context: JsonObject::new(),
        integrations: JsonObject::new(),
        body: EventBody::Track {
            event: name.into(),
            properties: props(properties),
        },
    }
}

fn ts(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

#[test]
fn example_parses_and_validates() {
    let rules = parse(EXAMPLE).unwrap();
    validate_rules(&rules).unwrap();
    let reminder = &rules[0];
    assert_eq!(reminder.delay, Some(Duration::from_secs(3600)));
    assert_eq!(reminder.unless.as_deref(), Some("purchase"));
    assert_eq!(reminder.priority, Priority::High);
    assert_eq!(reminder.when[0].op, Op::Gte);
    assert_eq!(rules[1].priority, Priority::Normal);
    assert!(rules[1].when.is_empty() && rules[1].delay.is_none());
    // Round trip through TOML (the gRPC API will show rules).
    let text = toml::to_string(&serde_json::json!({ "rules": rules })).unwrap();
    assert_eq!(parse(&text).unwrap(), rules);
}

#[test]
fn unknown_fields_and_ops_are_refused_when_parsed() {
    let error = parse("[[rules]]\nname = \"r\"\non = \"e\"\nnotify = \"t\"\nsurprise = 1\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("surprise"), "{error}");
    let error = parse(
        "[[rules]]\nname = \"r\"\non = \"e\"\nnotify = \"t\"\nwhen = [{ property = \"a\", op = \"like\", value = 1 }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("like") && error.contains("gte"), "{error}");
    let error = parse("[[rules]]\nname = \"r\"\non = \"e\"\nnotify = \"t\"\ndelay = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("delay"), "{error}");
}

#[test]
fn validation_errors_are_clear() {
    let bad_name = Rule {
        name: "cart reminder".into(),
        ..rule("")
    };
    assert_eq!(
        bad_name.validate(),
        Err(RuleError::InvalidName("cart reminder".into()))
    );
    assert!(matches!(
        rule("unless = \"purchase\"").validate(),
        Err(RuleError::UnlessWithoutDelay { .. })
    ));
    assert!(matches!(
        rule("delay = \"0s\"").validate(),
        Err(RuleError::ZeroDelay { .. })
    ));
    assert!(matches!(
        rule("channels = [\"pigeon\"]").validate(),
        Err(RuleError::UnknownChannel { .. })
    ));
    let error = rule("when = [{ property = \"plan\", op = \"gt\", value = \"pro\" }]")
        .validate()
        .unwrap_err();
    assert!(error.to_string().contains("must be a number"), "{error}");
    for when in [
        "{ property = \"a\", op = \"eq\" }",
        "{ property = \"a..b\", op = \"exists\" }",
        "{ property = \"a\", op = \"exists\", value = 3 }",
    ] {
        assert!(
            matches!(
                rule(&format!("when = [{when}]")).validate(),
                Err(RuleError::Condition { .. })
            ),
            "{when}"
        );
    }
    let empty_on = Rule {
        on: String::new(),
        ..rule("")
    };
    assert!(matches!(
        empty_on.validate(),
        Err(RuleError::Empty { field: "on", .. })
    ));
    let twice = [rule(""), rule("")];
    assert_eq!(
        validate_rules(&twice),
        Err(RuleError::Duplicate("r".into()))
    );
}

#[test]
fn each_op_and_dotted_paths() {
    let properties = props(json!({
        "total": 25,
        "ratio": 0.5,
        "plan": "pro",
        "title": "Blue shoes",
        "tags": ["sale", 3],
        "gone": null,
        "items": [{ "sku": "A-1", "qty": 2 }],
        "user": { "address": { "city": "Oslo" } },
        "a.b": "literal"
    }));
    let holds = |when: &str| {
        let rule = rule(&format!("when = [{when}]"));
        rule.validate().unwrap();
        rule.conditions_hold(&properties)
    };
    let cases = [
        (
            "{ property = \"plan\", op = \"eq\", value = \"pro\" }",
            true,
        ),
        ("{ property = \"total\", op = \"eq\", value = 25.0 }", true),
        (
            "{ property = \"plan\", op = \"eq\", value = \"free\" }",
            false,
        ),
        (
            "{ property = \"plan\", op = \"ne\", value = \"free\" }",
            true,
        ),
        (
            "{ property = \"plan\", op = \"ne\", value = \"pro\" }",
            false,
        ),
        (
            "{ property = \"missing\", op = \"ne\", value = \"pro\" }",
            true,
        ),
        ("{ property = \"total\", op = \"gt\", value = 20 }", true),
        ("{ property = \"total\", op = \"gt\", value = 25 }", false),
        ("{ property = \"total\", op = \"gte\", value = 25 }", true),
        ("{ property = \"ratio\", op = \"lt\", value = 1 }", true),
        ("{ property = \"ratio\", op = \"lte\", value = 0.5 }", true),
        ("{ property = \"ratio\", op = \"lte\", value = 0.4 }", false),
        ("{ property = \"plan\", op = \"gt\", value = 1 }", false),
        ("{ property = \"missing\", op = \"lt\", value = 1 }", false),
        (
            "{ property = \"title\", op = \"contains\", value = \"shoe\" }",
            true,
        ),
        (
            "{ property = \"title\", op = \"contains\", value = \"hat\" }",
            false,
        ),
        (
            "{ property = \"tags\", op = \"contains\", value = \"sale\" }",
            true,
        ),
        (
            "{ property = \"tags\", op = \"contains\", value = 3 }",
            true,
        ),
        (
            "{ property = \"tags\", op = \"contains\", value = \"new\" }",
            false,
        ),
        (
            "{ property = \"total\", op = \"contains\", value = \"2\" }",
            false,
        ),
        ("{ property = \"plan\", op = \"exists\" }", true),
        ("{ property = \"gone\", op = \"exists\" }", false),
        ("{ property = \"missing\", op = \"exists\" }", false),
        (
            "{ property = \"missing\", op = \"exists\", value = false }",
            true,
        ),
        (
            "{ property = \"items.0.sku\", op = \"eq\", value = \"A-1\" }",
            true,
        ),
        (
            "{ property = \"items.0.qty\", op = \"gte\", value = 2 }",
            true,
        ),
        ("{ property = \"items.1.sku\", op = \"exists\" }", false),
        ("{ property = \"items.x.sku\", op = \"exists\" }", false),
        (
            "{ property = \"user.address.city\", op = \"eq\", value = \"Oslo\" }",
            true,
        ),
        ("{ property = \"plan.deeper\", op = \"exists\" }", false),
        (
            "{ property = \"a.b\", op = \"eq\", value = \"literal\" }",
            true,
        ),
    ];
    for (when, expected) in cases {
        assert_eq!(holds(when), expected, "{when}");
    }
    // All conditions must hold.
    let both = rule(
        "when = [{ property = \"total\", op = \"gte\", value = 20 }, { property = \"plan\", op = \"eq\", value = \"free\" }]",
    );
    assert!(!both.conditions_hold(&properties));
}

#[test]
fn matching_needs_a_track_event_with_its_name_and_a_user() {
    let rules = parse(EXAMPLE).unwrap();
    let cart = json!({ "total": 30, "plan": "pro" });
    let names = |event: &Event| -> Vec<String> {
        matching(&rules, event)
            .iter()
            .map(|rule| rule.name.clone())
            .collect()
    };
    assert_eq!(
        names(&track("e1", Some("u1"), "cart_add", cart.clone())),
        ["cart-reminder"]
    );
    assert!(
        names(&track(
            "e1",
            Some("u1"),
            "cart_add",
            json!({ "total": 5, "plan": "pro" })
        ))
        .is_empty()
    );
    assert!(names(&track("e1", Some("u1"), "cart_view", cart.clone())).is_empty());
    assert!(names(&track("e1", None, "cart_add", cart.clone())).is_empty());
    assert!(names(&track("e1", Some(""), "cart_add", cart.clone())).is_empty());
    assert_eq!(
        names(&track("e2", Some("u1"), "payment_failed", json!({}))),
        ["payment.failed_1"]
    );
    let mut identify = track("e3", Some("u1"), "cart_add", cart);
    identify.body = EventBody::Identify {
        traits: JsonObject::new(),
    };
    assert!(names(&identify).is_empty());
}

#[test]
fn immediate_notification_carries_the_rule_source_id() {
    let rules = parse(EXAMPLE).unwrap();
    let properties = props(json!({ "total": 30 }));
    let notification = rules[0].notification("u1", "e1", &properties);
    assert_eq!(
        notification.source_event_id.as_deref(),
        Some("rule:cart-reminder:e1")
    );
    assert_eq!(notification.request.notification_type, "cart_reminder");
    assert_eq!(notification.request.data, properties);
    assert_eq!(
        notification.request.channels,
        [crate::channels::ChannelKind::Email]
    );
    assert_eq!(notification.request.priority, Priority::High);
    assert_eq!(notification.user_id, "u1");
}

async fn open(dir: &tempfile::TempDir) -> (crate::storage::Stores, PendingTriggers) {
    let stores = crate::storage::Stores::open_embedded(dir.path())
        .await
        .unwrap();
    let pending = stores.pending.clone();
    (stores, pending)
}

fn ids(found: &[Pending]) -> Vec<String> {
    found.iter().map(Pending::id).collect()
}

#[tokio::test]
async fn schedule_is_idempotent_per_rule_and_event() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, pending) = open(&dir).await;
    let properties = props(json!({ "total": 30 }));
    assert!(
        pending
            .schedule("cart-reminder", "u1", "e1", &properties, ts(0), ts(3600))
            .await
            .unwrap()
    );
    assert!(
        !pending
            .schedule("cart-reminder", "u1", "e1", &properties, ts(5), ts(3605))
            .await
            .unwrap()
    );
    assert!(
        pending
            .schedule("other", "u1", "e1", &properties, ts(0), ts(60))
            .await
            .unwrap()
    );
    assert_eq!(pending.count().await.unwrap(), 2);
    let found = pending.get("cart-reminder:e1").await.unwrap().unwrap();
    assert_eq!(found.due_at, ts(3600));
    assert_eq!(found.properties, properties);
    assert_eq!(found.source_id(), "rule:cart-reminder:e1");

    // Finished (fired) triggers are not scheduled again by a replay.
    assert!(pending.complete(&found, ts(3600)).await.unwrap());
    assert!(!pending.complete(&found, ts(3601)).await.unwrap());
    assert!(
        !pending
            .schedule("cart-reminder", "u1", "e1", &properties, ts(0), ts(3600))
            .await
            .unwrap()
    );
    assert_eq!(pending.count().await.unwrap(), 1);
    // Until their tombstones are pruned.
    assert_eq!(pending.prune_finished(ts(3601)).await.unwrap(), 1);
    assert!(
        pending
            .schedule("cart-reminder", "u1", "e1", &properties, ts(0), ts(3600))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn unless_cancels_within_the_window_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, pending) = open(&dir).await;
    let rules = parse(EXAMPLE).unwrap();
    let none = JsonObject::new();
    pending
        .schedule("cart-reminder", "u1", "e1", &none, ts(100), ts(3700))
        .await
        .unwrap();
    pending
        .schedule("cart-reminder", "u2", "e2", &none, ts(100), ts(3700))
        .await
        .unwrap();
    pending
        .schedule("cart-reminder", "u1", "e3", &none, ts(1000), ts(4600))
        .await
        .unwrap();
    pending
        .schedule("no-unless", "u1", "e4", &none, ts(100), ts(3700))
        .await
        .unwrap();

    // Another event name, and an `unless` event before the trigger's
    // event, cancel nothing.
    assert!(
        pending
            .cancel_for("u1", "cart_view", ts(200), &rules)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        pending
            .cancel_for("u1", "purchase", ts(50), &rules)
            .await
            .unwrap()
            .is_empty()
    );

    // Purchase at 500: cancels u1's e1 (scheduled at 100), not e3
    // (scheduled later), not u2's, not a rule without that `unless`.
    let cancelled = pending
        .cancel_for("u1", "purchase", ts(500), &rules)
        .await
        .unwrap();
    assert_eq!(ids(&cancelled), ["cart-reminder:e1"]);
    assert!(pending.get("cart-reminder:e1").await.unwrap().is_none());
    assert!(pending.get("cart-reminder:e2").await.unwrap().is_some());
    assert!(pending.get("no-unless:e4").await.unwrap().is_some());

    // After e3's due time: too late to cancel.
    assert!(
        pending
            .cancel_for("u1", "purchase", ts(4601), &rules)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(pending.get("cart-reminder:e3").await.unwrap().is_some());

    // A cancelled trigger stays cancelled when its event is replayed.
    assert!(
        !pending
            .schedule("cart-reminder", "u1", "e1", &none, ts(100), ts(3700))
            .await
            .unwrap()
    );
    assert_eq!(ids(&pending.due(ts(10_000), 10).await.unwrap()).len(), 3);
}

#[tokio::test]
async fn due_in_order_until_completed() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, pending) = open(&dir).await;
    let none = JsonObject::new();
    pending
        .schedule("r", "u1", "late", &none, ts(0), ts(300))
        .await
        .unwrap();
    pending
        .schedule("r", "u2", "early", &none, ts(0), ts(100))
        .await
        .unwrap();
    pending
        .schedule("r", "u1", "middle", &none, ts(0), ts(200))
        .await
        .unwrap();

    assert!(pending.due(ts(99), 10).await.unwrap().is_empty());
    assert_eq!(ids(&pending.due(ts(100), 10).await.unwrap()), ["r:early"]);
    assert_eq!(
        ids(&pending.due(ts(1000), 2).await.unwrap()),
        ["r:early", "r:middle"]
    );
    let all = pending.due(ts(1000), 10).await.unwrap();
    assert_eq!(ids(&all), ["r:early", "r:middle", "r:late"]);

    // Not completed: still due (a crash here refires).
    assert_eq!(pending.due(ts(1000), 10).await.unwrap().len(), 3);
    assert!(pending.complete(&all[0], ts(1000)).await.unwrap());
    assert_eq!(
        ids(&pending.due(ts(1000), 10).await.unwrap()),
        ["r:middle", "r:late"]
    );
    // Completed triggers no longer cancel either.
    assert!(pending.complete(&all[1], ts(1000)).await.unwrap());
    assert!(pending.complete(&all[2], ts(1000)).await.unwrap());
    assert!(pending.count().await.unwrap() == 0);
}

#[tokio::test]
async fn pending_notification_uses_the_rule() {
    let rules = parse(EXAMPLE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_stores, pending) = open(&dir).await;
    let properties = props(json!({ "total": 30 }));
    pending
        .schedule("cart-reminder", "u1", "e1", &properties, ts(0), ts(3600))
        .await
        .unwrap();
    let due = pending.due(ts(3600), 1).await.unwrap();
    let notification = due[0].notification(&rules[0]);
    assert_eq!(notification, rules[0].notification("u1", "e1", &properties));
}

#[tokio::test]
async fn reopening_keeps_pending_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let properties = props(json!({ "items": [{ "sku": "A-1" }] }));
    {
        let (stores, pending) = open(&dir).await;
        pending
            .schedule("r", "u1", "e1", &properties, ts(0), ts(60))
            .await
            .unwrap();
        pending
            .schedule("r", "u1", "e2", &properties, ts(0), ts(120))
            .await
            .unwrap();
        let first = pending.get("r:e1").await.unwrap().unwrap();
        pending.complete(&first, ts(60)).await.unwrap();
        stores.close().await.unwrap();
    }
    let (_stores, pending) = open(&dir).await;
    let due = pending.due(ts(1000), 10).await.unwrap();
    assert_eq!(ids(&due), ["r:e2"]);
    assert_eq!(due[0].properties, properties);
    assert!(
        !pending
            .schedule("r", "u1", "e1", &properties, ts(0), ts(60))
            .await
            .unwrap()
    );
}
