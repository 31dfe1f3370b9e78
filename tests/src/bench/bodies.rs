//! The request bodies the benchmark sends: a realistic `/v1/track` call
//! (~300 bytes of JSON) and a `/v1/batch` of such calls, encoded once.

use bytes::Bytes;
use serde_json::{Value, json};

fn track_event(i: usize) -> Value {
    json!({
        "userId": format!("bench-user-{:05}", i % 1000),
        "event": "Order Completed",
        "properties": {
            "orderId": format!("ord-{i:08}"),
            "total": 129.95,
            "currency": "EUR",
            "coupon": "SPRING-SALE",
            "items": 3,
            "category": "books",
            "source": "nudge-bench"
        },
        "context": { "library": { "name": "nudge-bench", "version": "0.1.0" } }
    })
}

pub fn track_body() -> Bytes {
    Bytes::from(serde_json::to_vec(&track_event(0)).expect("json"))
}

pub fn batch_body(events: usize) -> Bytes {
    let batch: Vec<Value> = (0..events)
        .map(|i| {
            let mut event = track_event(i);
            event["type"] = json!("track");
            event
        })
        .collect();
    Bytes::from(serde_json::to_vec(&json!({ "batch": batch })).expect("json"))
}
