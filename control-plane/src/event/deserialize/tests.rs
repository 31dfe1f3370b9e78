//! The hand-written reading against what it replaced: every kind of event
//! survives its JSON, in the order `Serialize` writes it and in any other,
//! and reads exactly as the derived `flatten` + tagged-enum reading read
//! it (kept in `derived.rs`, which the benchmark shares), refusals included.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::super::{Event, EventBody, JsonObject, NotifyRequest, Priority};
use crate::channels::ChannelKind;

#[path = "derived.rs"]
mod derived;
use derived::Derived;

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn bodies() -> Vec<EventBody> {
    let props = object(json!({"plan": "pro", "amount": 12.5, "tags": ["a", {"b": null}]}));
    vec![
        EventBody::Track {
            event: "Order Completed".into(),
            properties: props.clone(),
        },
        EventBody::Track {
            event: String::new(),
            properties: JsonObject::new(),
        },
        EventBody::Identify {
            traits: object(json!({"email": "ada@example.com", "name": "Ada"})),
        },
        EventBody::Page {
            name: Some("Pricing".into()),
            category: None,
            properties: props.clone(),
        },
        EventBody::Screen {
            name: None,
            category: Some("Onboarding".into()),
            properties: JsonObject::new(),
        },
        EventBody::Group {
            group_id: "g1".into(),
            traits: object(json!({"name": "Acme"})),
        },
        EventBody::Alias {
            previous_id: "anon-1".into(),
        },
        EventBody::SessionStart {
            session_id: "s1".into(),
            properties: props,
        },
        EventBody::SessionEnd {
            session_id: "s1".into(),
            properties: JsonObject::new(),
        },
        EventBody::Notify(NotifyRequest {
            notification_type: "payment_failed".into(),
            template: Some("dunning".into()),
            title: None,
            body: Some("Your card was declined".into()),
            channels: vec![ChannelKind::Email, ChannelKind::InApp],
            data: object(json!({"amount": "€12", "name": "not the page's name"})),
            priority: Priority::High,
            idempotency_key: Some("k1".into()),
            cost: Some("0.05".parse().unwrap()),
        }),
    ]
}

fn events() -> Vec<Event> {
    let mut events = Vec::new();
    for (n, body) in bodies().into_iter().enumerate() {
        let full = n % 2 == 0;
        events.push(Event {
            id: format!("e{n}"),
            user_id: full.then(|| "u1".to_owned()),
            anonymous_id: (!full).then(|| "a1".to_owned()),
            timestamp: full.then(|| at(1_700_000_000)),
            sent_at: full.then(|| at(1_700_000_001)),
            received_at: Some(at(1_700_000_002)),
            ingested_at: at(1_700_000_003),
            agent_id: if full {
                "agent-1".into()
            } else {
                String::new()
            },
            write_key: full.then(|| "wk".to_owned()),
            context: if full {
                object(json!({"ip": "203.0.113.9", "library": {"name": "analytics-python"}}))
            } else {
                JsonObject::new()
            },
            integrations: object(json!({"All": true})),
            body,
        });
    }
    events
}

fn both(json: &str) -> (Result<Event, String>, Result<Event, String>) {
    (
        serde_json::from_str::<Event>(json).map_err(|e| e.to_string()),
        serde_json::from_str::<Derived>(json)
            .map(Event::from)
            .map_err(|e| e.to_string()),
    )
}

#[test]
fn every_kind_reads_back_as_written_and_as_the_derived_reading_did() {
    for event in events() {
        let written = serde_json::to_string(&event).unwrap();
        // serde_json's map sorts keys, so this puts `type` after the
        // body's fields and `id` in the middle.
        let sorted = serde_json::to_value(&event).unwrap().to_string();
        for json in [&written, &sorted] {
            let (ours, derived) = both(json);
            assert_eq!(ours.as_ref(), Ok(&event), "{json}");
            assert_eq!(derived.as_ref(), Ok(&event), "{json}");
        }
        // The `type` tag first.
        let mut reordered = JsonObject::new();
        let value = object(serde_json::to_value(&event).unwrap());
        reordered.insert("type".into(), value["type"].clone());
        reordered.extend(value);
        let first = Value::Object(reordered).to_string();
        assert_eq!(serde_json::from_str::<Event>(&first).unwrap(), event);
    }
}

#[test]
fn optional_fields_may_be_absent_or_null_and_unknown_ones_are_ignored() {
    let json = r#"{"extra": [1, 2], "id": "e1", "user_id": null, "timestamp": null,
        "ingested_at": "2023-11-14T22:13:23Z", "agent_id": "", "name": null,
        "type": "page", "later": {"x": 1}, "write_key": null}"#;
    let (ours, derived) = both(json);
    let event = ours.unwrap();
    assert_eq!(Ok(&event), derived.as_ref());
    assert_eq!(event.user_id, None);
    assert_eq!(
        event.body,
        EventBody::Page {
            name: None,
            category: None,
            properties: JsonObject::new(),
        }
    );
    assert!(event.context.is_empty());

    // A notify's data travels through the collected fields, whatever
    // came before `type`.
    let json = r#"{"data": {"n": 1}, "notification_type": "digest", "id": "e2",
        "ingested_at": "2023-11-14T22:13:23Z", "agent_id": "a", "type": "notify",
        "priority": "low", "unknown": true}"#;
    let (ours, derived) = both(json);
    assert_eq!(ours.as_ref().ok(), derived.as_ref().ok());
    let EventBody::Notify(notify) = ours.unwrap().body else {
        panic!("a notify")
    };
    assert_eq!(notify.notification_type, "digest");
    assert_eq!(notify.priority, Priority::Low);
    assert_eq!(notify.data, object(json!({"n": 1})));
}

#[test]
fn what_the_derived_reading_refused_is_refused_naming_the_field() {
    let base = r#""id": "e1", "ingested_at": "2023-11-14T22:13:23Z", "agent_id": "a""#;
    for (json, field) in [
        (format!("{{{base}}}"), "type"),
        (format!(r#"{{{base}, "type": "track"}}"#), "event"),
        (format!(r#"{{{base}, "type": "group"}}"#), "group_id"),
        (format!(r#"{{{base}, "type": "alias"}}"#), "previous_id"),
        (
            format!(r#"{{{base}, "type": "session_start"}}"#),
            "session_id",
        ),
        (
            format!(r#"{{{base}, "type": "notify"}}"#),
            "notification_type",
        ),
        (
            r#"{"ingested_at": "2023-11-14T22:13:23Z", "agent_id": "a", "type": "identify"}"#
                .to_owned(),
            "id",
        ),
        (
            format!(r#"{{{base}, "type": "track", "event": "x", "properties": []}}"#),
            "map",
        ),
        (format!(r#"{{{base}, "type": "launch"}}"#), "launch"),
        (
            format!(r#"{{{base}, "type": "identify", "ingested_at": 5}}"#),
            "ingested_at",
        ),
    ] {
        let (ours, derived) = both(&json);
        let message = ours.expect_err(&json);
        assert!(derived.is_err(), "the derived reading took {json}");
        assert!(message.contains(field), "{field:?} not in {message:?}");
    }
}
