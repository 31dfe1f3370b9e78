//! Benchmark: reading stored events (their JSON) with the control plane's
//! hand-written `Event` deserializer, next to the derived one it replaced
//! (`#[serde(flatten)]` over an internally tagged body, re-declared here
//! field for field) in the same run. Every stored event is read by each of
//! its readers (the engine, analytics), so this is a cost per reader.
//!
//! The events are a Segment-like mix: tracks with a dozen properties and a
//! library's context, identifies, pages and notifies, ~700 bytes of JSON
//! each.
//!
//! Run: `cargo bench -p nudge-control-plane --bench event_decode`
//! (`-- --events N --rounds N` to change the sizes). Prints figures; it
//! asserts nothing about speed.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use nudge_control_plane::event::{Event, EventBody, JsonObject, NotifyRequest, Priority};
use serde_json::{Value, json};

/// The derived reading the control plane used before, as the baseline.
#[path = "../src/event/deserialize/derived.rs"]
mod derived;
use derived::Derived;

#[path = "support/args.rs"]
mod args;
use args::arg;

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

fn event(n: usize) -> Event {
    let at = Timestamp::from_second(1_700_000_000 + n as i64).unwrap();
    let body = match n % 10 {
        0..=5 => EventBody::Track {
            event: "Order Completed".into(),
            properties: object(json!({
                "order_id": format!("o-{n}"), "total": 27.5, "revenue": 25.0,
                "shipping": 3.0, "tax": 2.0, "currency": "EUR", "coupon": null,
                "products": [{"sku": "45790-32", "name": "Monopoly", "price": 19.0, "quantity": 1}],
                "affiliation": "Google Store", "discount": 2.5, "first": n.is_multiple_of(7),
            })),
        },
        6 => EventBody::Identify {
            traits: object(
                json!({"email": format!("user{n}@example.com"), "name": "Ada Lovelace",
                "plan": "pro", "logins": n, "created_at": "2023-01-01T00:00:00Z"}),
            ),
        },
        7 | 8 => EventBody::Page {
            name: Some("Pricing".into()),
            category: Some("Docs".into()),
            properties: object(
                json!({"path": "/pricing", "referrer": "https://example.com/",
                "search": "?plan=pro", "title": "Pricing", "url": "https://app.example/pricing"}),
            ),
        },
        _ => EventBody::Notify(NotifyRequest {
            notification_type: "payment_failed".into(),
            template: None,
            title: Some("Payment failed".into()),
            body: Some("Your card was declined".into()),
            channels: Vec::new(),
            data: object(json!({"amount": "€12.00", "card": "4242"})),
            priority: Priority::High,
            idempotency_key: Some(format!("k-{n}")),
            cost: None,
        }),
    };
    Event {
        id: format!("0190a1b2-c3d4-7e5f-8a9b-{n:012}"),
        user_id: Some(format!("user-{}", n % 5000)),
        anonymous_id: Some("507f191e810c19729de860ea".into()),
        timestamp: Some(at),
        sent_at: Some(at),
        received_at: Some(at),
        ingested_at: at,
        agent_id: "agent-7f9c".into(),
        write_key: Some("wk_live_1234".into()),
        context: object(json!({
            "ip": "203.0.113.9", "locale": "de-DE",
            "library": {"name": "analytics-python", "version": "2.3.2"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        })),
        integrations: JsonObject::new(),
        body,
    }
}

/// How long one pass over every payload takes.
fn time(pass: impl FnOnce() -> usize) -> Duration {
    let started = Instant::now();
    std::hint::black_box(pass());
    started.elapsed()
}

fn main() {
    let count = arg("--events", 100_000);
    let rounds = arg("--rounds", 5);
    let payloads: Vec<Vec<u8>> = (0..count)
        .map(|n| serde_json::to_vec(&event(n)).unwrap())
        .collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    // Both readings agree on every payload before anything is timed.
    for (n, payload) in payloads.iter().enumerate() {
        let ours: Event = serde_json::from_slice(payload).unwrap();
        let derived: Derived = serde_json::from_slice(payload).unwrap();
        assert_eq!(ours, Event::from(derived), "payload {n}");
        assert_eq!(ours, event(n), "payload {n}");
    }

    println!(
        "event_decode: {count} events, {} B of JSON each on average, best of {rounds} rounds, alternating",
        bytes / count.max(1)
    );
    let mut hand = Duration::MAX;
    let mut derived = Duration::MAX;
    for _ in 0..rounds {
        derived = derived.min(time(|| {
            payloads
                .iter()
                .map(|p| serde_json::from_slice::<Derived>(p).unwrap().id.len())
                .sum()
        }));
        hand = hand.min(time(|| {
            payloads
                .iter()
                .map(|p| serde_json::from_slice::<Event>(p).unwrap().id.len())
                .sum()
        }));
    }
    println!("{:<34} {:>12} {:>10}", "reading", "events/s", "ns/event");
    for (name, took) in [
        ("derived (flatten, baseline)", derived),
        ("hand-written (Event)", hand),
    ] {
        let per_event = took.as_nanos() as f64 / count as f64;
        println!(
            "{name:<34} {:>12.0} {:>10.0}",
            count as f64 / took.as_secs_f64(),
            per_event
        );
    }
    println!(
        "hand-written / derived time: {:.2}",
        hand.as_secs_f64() / derived.as_secs_f64()
    );
}
