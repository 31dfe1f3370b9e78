//! Parsing and validation of every call kind and every error code.

use nudge_proto::v1::{Priority, envelope::Body};
use serde_json::{Value, json};

use super::*;

fn received() -> Received {
    Received {
        write_key: "header-key".into(),
        received_at: prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        },
    }
}

fn parse(endpoint: Endpoint, body: &Value) -> Result<Vec<Envelope>, SegmentError> {
    Request::parse(endpoint, body.to_string().as_bytes())?.into_envelopes(&received())
}

fn one(kind: CallKind, body: &Value) -> Result<Envelope, SegmentError> {
    parse(Endpoint::Call(kind), body).map(|mut all| all.remove(0))
}

fn code(result: Result<impl std::fmt::Debug, SegmentError>) -> (&'static str, String) {
    let error = result.unwrap_err();
    (error.code(), error.to_string())
}

#[test]
fn track_keeps_every_field() {
    let envelope = one(
        CallKind::Track,
        &json!({
            "messageId": "m-1",
            "userId": "u-1",
            "anonymousId": "a-1",
            "event": "Order Completed",
            "properties": {"total": 12_345_678_901_234_i64},
            "context": {"ip": "1.2.3.4"},
            "integrations": {"All": false},
            "timestamp": "2024-05-01T12:00:00.250Z",
            "sentAt": "2024-05-01T14:00:01+02:00",
            "writeKey": "body-key",
            "type": "track",
            "_metadata": {"ignored": true},
        }),
    )
    .unwrap();
    assert_eq!(envelope.id, "m-1");
    assert_eq!(envelope.user_id, "u-1");
    assert_eq!(envelope.anonymous_id, "a-1");
    assert_eq!(envelope.context_json, r#"{"ip":"1.2.3.4"}"#);
    assert_eq!(envelope.integrations_json, r#"{"All":false}"#);
    assert_eq!(envelope.write_key, "body-key");
    assert_eq!(envelope.received_at, Some(received().received_at));
    let timestamp = envelope.timestamp.unwrap();
    assert_eq!(
        (timestamp.seconds, timestamp.nanos),
        (1_714_564_800, 250_000_000)
    );
    assert_eq!(envelope.sent_at.unwrap().seconds, 1_714_564_801);
    let Some(Body::Track(track)) = envelope.body else {
        panic!("not a track body");
    };
    assert_eq!(track.event, "Order Completed");
    assert_eq!(track.properties_json, r#"{"total":12345678901234}"#);
}

#[test]
fn absent_objects_are_empty_text_and_ids_are_generated() {
    let envelope = one(CallKind::Track, &json!({"userId": "u", "event": "e"})).unwrap();
    assert_eq!(envelope.context_json, "");
    assert_eq!(envelope.integrations_json, "");
    assert_eq!(envelope.write_key, "header-key");
    assert!(envelope.timestamp.is_none());
    let id = uuid::Uuid::parse_str(&envelope.id).unwrap();
    assert_eq!(id.get_version_num(), 7);
    let Some(Body::Track(track)) = envelope.body else {
        panic!("not a track body");
    };
    assert_eq!(track.properties_json, "");

    // `null` and "" count as absent.
    let envelope = one(
        CallKind::Track,
        &json!({"userId": "u", "event": "e", "messageId": "", "properties": null}),
    )
    .unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(&envelope.id)
            .unwrap()
            .get_version_num(),
        7
    );
}

#[test]
fn numeric_ids_are_stringified() {
    let envelope = one(
        CallKind::Group,
        &json!({"userId": 42, "anonymousId": 7.5, "groupId": 9_007_199_254_740_993_u64}),
    )
    .unwrap();
    assert_eq!(envelope.user_id, "42");
    assert_eq!(envelope.anonymous_id, "7.5");
    let Some(Body::Group(group)) = envelope.body else {
        panic!("not a group body");
    };
    assert_eq!(group.group_id, "9007199254740993");

    let (code, message) = code(one(CallKind::Identify, &json!({"userId": true})));
    assert_eq!(code, "invalid_field");
    assert_eq!(
        message,
        "identify call: `userId` must be a string or a number, found a boolean"
    );
}

#[test]
fn timestamps_with_offsets_and_fractions() {
    let at = |text: &str| {
        one(
            CallKind::Track,
            &json!({"userId": "u", "event": "e", "timestamp": text}),
        )
        .map(|envelope| envelope.timestamp.unwrap())
    };
    let utc = at("2024-01-02T03:04:05Z").unwrap();
    assert_eq!((utc.seconds, utc.nanos), (1_704_164_645, 0));
    let offset = at("2024-01-02T04:04:05.123456789+01:00").unwrap();
    assert_eq!((offset.seconds, offset.nanos), (1_704_164_645, 123_456_789));
    let negative = at("2024-01-01T22:04:05.5-05:00").unwrap();
    assert_eq!(
        (negative.seconds, negative.nanos),
        (1_704_164_645, 500_000_000)
    );
    // Before 1970 the protobuf form still has non-negative nanos.
    let old = at("1969-12-31T23:59:59.750Z").unwrap();
    assert_eq!((old.seconds, old.nanos), (-1, 750_000_000));

    for bad in ["2024-01-02T03:04:05", "yesterday", "2024-13-01T00:00:00Z"] {
        let (code, message) = code(at(bad));
        assert_eq!(code, "invalid_field", "{bad}");
        assert!(
            message.starts_with("track call: `timestamp` must be an RFC 3339"),
            "{message}"
        );
    }
    let (code, _) = code(one(
        CallKind::Page,
        &json!({"userId": "u", "sentAt": 1_700_000_000}),
    ));
    assert_eq!(code, "invalid_field");
}

#[test]
fn identity_rules() {
    for kind in [
        CallKind::Track,
        CallKind::Identify,
        CallKind::Page,
        CallKind::Screen,
        CallKind::Group,
        CallKind::SessionStart,
    ] {
        let (code, message) = code(one(
            kind,
            &json!({"event": "e", "groupId": "g", "sessionId": "s"}),
        ));
        assert_eq!(code, "missing_identity", "{kind:?}");
        assert!(
            message.ends_with("`userId` or `anonymousId` is required"),
            "{message}"
        );
    }
    // An anonymous id is enough for these.
    one(CallKind::Screen, &json!({"anonymousId": "a"})).unwrap();

    let (code_, message) = code(one(
        CallKind::Alias,
        &json!({"anonymousId": "a", "previousId": "p"}),
    ));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_identity", "alias call: `userId` is required")
    );
    let (code_, message) = code(one(CallKind::Alias, &json!({"userId": "u"})));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_field", "alias call: `previousId` is required")
    );
    let alias = one(CallKind::Alias, &json!({"userId": "u", "previousId": 12})).unwrap();
    assert!(matches!(alias.body, Some(Body::Alias(a)) if a.previous_id == "12"));
}

#[test]
fn required_fields_and_object_fields() {
    let (code_, message) = code(one(CallKind::Track, &json!({"userId": "u"})));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_field", "track call: `event` is required")
    );
    let (code_, message) = code(one(CallKind::Group, &json!({"userId": "u"})));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_field", "group call: `groupId` is required")
    );
    let (code_, message) = code(one(
        CallKind::Identify,
        &json!({"userId": "u", "traits": [1]}),
    ));
    assert_eq!(
        (code_, message.as_str()),
        (
            "invalid_field",
            "identify call: `traits` must be an object, found an array"
        )
    );
    let (code_, _) = code(one(
        CallKind::Track,
        &json!({"userId": "u", "event": "e", "context": "x"}),
    ));
    assert_eq!(code_, "invalid_field");
    let (code_, _) = code(one(CallKind::Track, &json!({"userId": "u", "event": 3})));
    assert_eq!(code_, "invalid_field");
    let (code_, message) = code(one(
        CallKind::Track,
        &json!({"userId": "u", "event": "e", "type": "page"}),
    ));
    assert_eq!(code_, "invalid_field");
    assert!(
        message.contains("this endpoint takes track calls"),
        "{message}"
    );

    let page = one(
        CallKind::Page,
        &json!({"userId": "u", "name": "Home", "category": "Docs"}),
    )
    .unwrap();
    assert!(matches!(page.body, Some(Body::Page(p)) if p.name == "Home" && p.category == "Docs"));
}

#[test]
fn message_ids_are_bounded() {
    let long = "m".repeat(MAX_ID_CHARS + 1);
    let (code_, message) = code(one(
        CallKind::Identify,
        &json!({"userId": "u", "messageId": long}),
    ));
    assert_eq!(code_, "invalid_field");
    assert!(
        message.contains("`messageId` is 257 characters long"),
        "{message}"
    );
    one(
        CallKind::Identify,
        &json!({"userId": "u", "messageId": "m".repeat(MAX_ID_CHARS)}),
    )
    .unwrap();
}

/// Issue 14: what the control plane refuses is refused here, naming the
/// field, instead of being acknowledged and then lost.
#[test]
fn ids_the_control_plane_refuses_are_refused_at_intake() {
    let over = "u".repeat(nudge_proto::validate::MAX_ID_BYTES + 1);
    for (field, value, problem) in [
        ("userId", json!("a\u{0}b"), "contains a NUL character"),
        ("anonymousId", json!("a\u{0}b"), "contains a NUL character"),
        ("messageId", json!("m\u{0}"), "contains a NUL character"),
        ("userId", json!(over), "is 1025 bytes long"),
        ("anonymousId", json!(over), "is 1025 bytes long"),
    ] {
        let mut body = json!({"userId": "u", "event": "e"});
        body[field] = value;
        let (code_, message) = code(one(CallKind::Track, &body));
        assert_eq!(code_, "invalid_field", "{field}: {message}");
        assert!(
            message.starts_with(&format!("track call: `{field}` {problem}")),
            "{field}: {message}"
        );
        // In a batch the item is named too, and nothing of the batch is kept.
        body["type"] = json!("track");
        let batch = json!({"batch": [{"type": "track", "userId": "u", "event": "e"}, body]});
        let (code_, message) = code(parse(Endpoint::Batch, &batch));
        assert_eq!(code_, "invalid_field");
        assert!(
            message.starts_with(&format!("batch item 1 (track): `{field}`")),
            "{message}"
        );
    }
    // 1,024 bytes is still accepted, and so are multi-byte ids within it.
    let at_limit = "u".repeat(nudge_proto::validate::MAX_ID_BYTES);
    one(CallKind::Track, &json!({"userId": at_limit, "event": "e"})).unwrap();
    let wide = "é".repeat(512); // 1,024 bytes
    one(CallKind::Identify, &json!({"anonymousId": wide})).unwrap();
    let (code_, message) = code(one(
        CallKind::Identify,
        &json!({"anonymousId": format!("{wide}x")}),
    ));
    assert_eq!(code_, "invalid_field", "{message}");
}

#[test]
fn body_level_errors() {
    let (code_, message) = code(Request::parse(
        Endpoint::Call(CallKind::Track),
        b"{\"a\": \xff}",
    ));
    assert_eq!(code_, "invalid_utf8");
    assert!(message.contains("offset 6"), "{message}");
    let (code_, message) = code(Request::parse(Endpoint::Call(CallKind::Track), b"{\"a\": "));
    assert_eq!(code_, "malformed_json");
    assert!(message.contains("line 1"), "{message}");
    let (code_, message) = code(Request::parse(Endpoint::Batch, b"[1]"));
    assert_eq!(code_, "malformed_json");
    assert!(
        message.contains("must be an object, found an array"),
        "{message}"
    );
    let big = vec![b' '; MAX_CALL_BYTES + 1];
    let (code_, _) = code(Request::parse(Endpoint::Call(CallKind::Track), &big));
    assert_eq!(code_, "payload_too_large");
    assert!(Request::parse(Endpoint::Batch, &big).is_err_and(|e| e.code() == "malformed_json"));
}

#[test]
fn batch_items_and_defaults() {
    let envelopes = parse(
        Endpoint::Batch,
        &json!({
            "writeKey": "batch-key",
            "sentAt": "2024-05-01T12:00:00Z",
            "context": {"library": {"name": "analytics-python"}},
            "batch": [
                {"type": "identify", "userId": 1, "traits": {"plan": "pro"}},
                {"type": "track", "userId": 1, "event": "e", "context": {"own": true}, "writeKey": "item-key"},
                {"type": "alias", "userId": "new", "previousId": "old"},
            ],
        }),
    )
    .unwrap();
    assert_eq!(envelopes.len(), 3);
    assert_eq!(envelopes[0].write_key, "batch-key");
    assert_eq!(
        envelopes[0].context_json,
        r#"{"library":{"name":"analytics-python"}}"#
    );
    assert_eq!(envelopes[0].sent_at.unwrap().seconds, 1_714_564_800);
    assert_eq!(envelopes[1].write_key, "item-key");
    assert_eq!(envelopes[1].context_json, r#"{"own":true}"#);
    assert!(matches!(envelopes[2].body, Some(Body::Alias(_))));

    let request = Request::parse(
        Endpoint::Batch,
        br#"{"writeKey":"a","batch":[{"writeKey":"b"},{"type":"track"},{"writeKey":7}]}"#,
    )
    .unwrap();
    assert_eq!(request.write_keys(), ["a", "b"]);

    assert!(
        parse(Endpoint::Batch, &json!({"batch": []}))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn batch_errors_name_the_item() {
    let batch = |items: Value| parse(Endpoint::Batch, &json!({ "batch": items }));
    let ok = json!({"type": "track", "userId": "u", "event": "e"});

    let (code_, message) = code(batch(json!([ok, ok, {"type": "track", "userId": "u"}])));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_field", "batch item 2 (track): `event` is required")
    );
    let (code_, message) = code(batch(json!([ok, {"userId": "u"}])));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_field", "batch item 1: `type` is required")
    );
    let (code_, message) = code(batch(json!([{"type": "notify", "userId": "u"}])));
    assert_eq!(code_, "invalid_field");
    assert!(
        message.starts_with("batch item 0: `type` is \"notify\""),
        "{message}"
    );
    let (code_, message) = code(batch(json!([ok, 3])));
    assert_eq!(code_, "invalid_field");
    assert!(message.starts_with("batch item 1:"), "{message}");
    let (code_, message) = code(batch(json!([{"type": "identify"}])));
    assert_eq!(
        (code_, message.as_str()),
        (
            "missing_identity",
            "batch item 0 (identify): `userId` or `anonymousId` is required"
        )
    );
    let (code_, message) = code(parse(Endpoint::Batch, &json!({"events": []})));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_field", "batch request: `batch` is required")
    );
    let (code_, _) = code(parse(Endpoint::Batch, &json!({"batch": {}})));
    assert_eq!(code_, "invalid_field");

    let huge = json!({"type": "track", "userId": "u", "event": "e",
                      "properties": {"blob": "x".repeat(MAX_CALL_BYTES)}});
    let (code_, message) = code(batch(json!([ok, huge])));
    assert_eq!(code_, "payload_too_large");
    assert!(
        message.starts_with("batch item 1: its JSON is"),
        "{message}"
    );
}

#[test]
fn sessions() {
    let start = one(
        CallKind::SessionStart,
        &json!({"sessionId": "s-1", "anonymousId": "a", "properties": {"device": "ios"},
               "timestamp": "2024-05-01T12:00:00Z"}),
    )
    .unwrap();
    let Some(Body::SessionStart(body)) = start.body else {
        panic!("not a session start");
    };
    assert_eq!(
        (body.session_id.as_str(), body.properties_json.as_str()),
        ("s-1", r#"{"device":"ios"}"#)
    );
    let end = one(
        CallKind::SessionEnd,
        &json!({"sessionId": 5, "userId": "u"}),
    )
    .unwrap();
    assert!(matches!(end.body, Some(Body::SessionEnd(e)) if e.session_id == "5"));

    let (code_, message) = code(one(CallKind::SessionEnd, &json!({"userId": "u"})));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_field", "session end call: `sessionId` is required")
    );
}

#[test]
fn notify_valid() {
    let envelope = one(
        CallKind::Notify,
        &json!({
            "userId": "u-1",
            "type": "payment_failed",
            "template": "payment-failed-v2",
            "channels": ["email", "apns"],
            "data": {"amount": 12.5},
            "priority": "high",
            "idempotencyKey": "invoice-77",
        }),
    )
    .unwrap();
    let Some(Body::Notify(notify)) = envelope.body else {
        panic!("not a notify body");
    };
    assert_eq!(notify.r#type, "payment_failed");
    assert_eq!(notify.template, "payment-failed-v2");
    assert_eq!(notify.channels, ["email", "apns"]);
    assert_eq!(notify.data_json, r#"{"amount":12.5}"#);
    assert_eq!(notify.priority(), Priority::High);
    assert_eq!(notify.idempotency_key, "invoice-77");

    let plain = one(
        CallKind::Notify,
        &json!({"userId": "u", "type": "hello", "title": "Hi", "body": "there"}),
    )
    .unwrap();
    let Some(Body::Notify(notify)) = plain.body else {
        panic!("not a notify body");
    };
    assert_eq!(
        (notify.title.as_str(), notify.body.as_str()),
        ("Hi", "there")
    );
    assert_eq!(notify.priority(), Priority::Unspecified);
    assert!(notify.channels.is_empty());
}

#[test]
fn notify_invalid() {
    let base = || json!({"userId": "u", "type": "t", "template": "x"});
    let with = |key: &str, value: Value| {
        let mut body = base();
        body[key] = value;
        one(CallKind::Notify, &body)
    };
    let (code_, message) = code(one(
        CallKind::Notify,
        &json!({"anonymousId": "a", "type": "t", "title": "x"}),
    ));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_identity", "notify call: `userId` is required")
    );
    let (code_, message) = code(one(
        CallKind::Notify,
        &json!({"userId": "u", "template": "x"}),
    ));
    assert_eq!(
        (code_, message.as_str()),
        ("missing_field", "notify call: `type` is required")
    );
    // The type's configured template is the control plane's business.
    assert!(one(CallKind::Notify, &json!({"userId": "u", "type": "t"})).is_ok());
    let (code_, message) = code(with("channels", json!(["email", 3])));
    assert_eq!(
        (code_, message.as_str()),
        (
            "invalid_field",
            "notify call: `channels[1]` must be a non-empty string, found a number"
        )
    );
    let (code_, _) = code(with("channels", json!("email")));
    assert_eq!(code_, "invalid_field");
    // A channel the control plane does not have is refused here, not
    // acknowledged and then dropped; so is a type with a NUL (a key of
    // preferences and digests).
    let (code_, message) = code(with("channels", json!(["email", "pigeon"])));
    assert_eq!(code_, "invalid_field");
    assert!(
        message.starts_with("notify call: `channels` names \"pigeon\", which is not a channel"),
        "{message}"
    );
    let (code_, message) = code(with("type", json!("in\u{0}voice")));
    assert_eq!(code_, "invalid_field");
    assert!(
        message.starts_with("notify call: `type` contains a control character"),
        "{message}"
    );
    let (code_, message) = code(with("priority", json!("urgent")));
    assert_eq!(code_, "invalid_field");
    assert!(
        message.contains("\"low\", \"normal\" or \"high\""),
        "{message}"
    );
    let (code_, _) = code(with("data", json!([1, 2])));
    assert_eq!(code_, "invalid_field");
    let (code_, _) = code(with("idempotencyKey", json!("k".repeat(MAX_ID_CHARS + 1))));
    assert_eq!(code_, "invalid_field");
}

#[test]
fn notify_cost() {
    let cost = |value: Value| {
        let mut body = json!({"userId": "u", "type": "t"});
        body["cost"] = value;
        one(CallKind::Notify, &body).map(|envelope| match envelope.body {
            Some(Body::Notify(notify)) => notify.cost,
            other => panic!("not a notify body: {other:?}"),
        })
    };
    // Absent, null and "" all mean the configured cost.
    assert_eq!(
        one(CallKind::Notify, &json!({"userId": "u", "type": "t"}))
            .map(|envelope| match envelope.body {
                Some(Body::Notify(notify)) => notify.cost,
                other => panic!("not a notify body: {other:?}"),
            })
            .unwrap(),
        ""
    );
    assert_eq!(cost(Value::Null).unwrap(), "");
    assert_eq!(cost(json!("")).unwrap(), "");
    assert_eq!(cost(json!("0.05")).unwrap(), "0.05");
    assert_eq!(cost(json!("12")).unwrap(), "12");
    assert_eq!(cost(json!("0.000001")).unwrap(), "0.000001");
    assert_eq!(cost(json!(0.05)).unwrap(), "0.05");
    assert_eq!(cost(json!(3)).unwrap(), "3");
    for bad in [
        json!("-0.05"),
        json!(-1),
        json!("0.0000001"),
        json!("abc"),
        json!(".5"),
        json!("5."),
        json!("1e3"),
        json!(1e-7),
        json!(" 1"),
        json!("1234567890123"),
    ] {
        let (code_, message) = code(cost(bad.clone()));
        assert_eq!(code_, "invalid_field", "{bad}");
        assert!(
            message.starts_with("notify call: `cost` is "),
            "{bad}: {message}"
        );
    }
    let (code_, message) = code(cost(json!(["0.05"])));
    assert_eq!(
        (code_, message.as_str()),
        (
            "invalid_field",
            "notify call: `cost` must be a decimal string or a number, found an array"
        )
    );
}

/// Issue 15: where identify calls carry a contact trait, for the wire
/// layer's trust rule.
#[test]
fn contact_traits_are_found_in_identify_traits_only() {
    let found = |endpoint: Endpoint, body: Value| {
        Request::parse(endpoint, body.to_string().as_bytes())
            .unwrap()
            .contact_traits()
    };
    let identify = Endpoint::Call(CallKind::Identify);
    assert_eq!(
        found(identify, json!({"userId": "u", "traits": {"phone": null}})),
        [(At::Call(CallKind::Identify), "phone")]
    );
    assert!(found(identify, json!({"userId": "u", "traits": {"name": "Ada"}})).is_empty());
    assert!(
        found(
            Endpoint::Call(CallKind::Track),
            json!({"userId": "u", "event": "e", "context": {"traits": {"email": "a@b.c"}}})
        )
        .is_empty()
    );
    let batch = json!({"batch": [
        {"type": "identify", "userId": "u", "traits": {"email": "a@b.c"}},
        {"type": "group", "userId": "u", "groupId": "g", "traits": {"email": "a@b.c"}},
        {"type": "identify", "userId": "u", "traits": {"plan": "pro"}},
        {"type": "identify", "userId": "u", "traits": {"phone": "+1", "email": "a@b.c"}},
        "not an object",
    ]});
    let item = |index| At::Item {
        index,
        kind: Some(CallKind::Identify),
    };
    assert_eq!(
        found(Endpoint::Batch, batch),
        [(item(0), "email"), (item(3), "email")]
    );
}

/// Found by the property tests: serde_json's default float parsing read
/// this number as its neighbour, so the stored property differed from the
/// one sent in the last digit. Object fields are now passed on as the text
/// sent, so numbers, key order and spacing are kept as they came.
#[test]
fn object_fields_are_kept_exactly_as_sent() {
    let properties = r#"{"y": 0.30000000000000004, "x": -1.0081661374002426e-286, "big": 123456789012345678901234567890}"#;
    let body = format!(r#"{{"userId": "u", "event": "e", "properties": {properties}}}"#);
    let envelopes = Request::parse(Endpoint::Call(CallKind::Track), body.as_bytes())
        .unwrap()
        .into_envelopes(&received())
        .unwrap();
    let Some(Body::Track(track)) = &envelopes[0].body else {
        panic!("not a track");
    };
    assert_eq!(track.properties_json, properties);
}

/// What the control plane's JSON parser refuses must not be acknowledged:
/// a lone surrogate deep in an object field is a syntax error at intake,
/// though the field itself is passed on undecoded.
#[test]
fn text_the_control_plane_cannot_parse_is_refused() {
    for body in [
        r#"{"userId":"u","event":"e","properties":{"note":"\ud800"}}"#,
        r#"{"userId":"u","event":"e","context":{"n":1e400}}"#,
        r#"{"userId":"u","event":"e","properties":{"a":[1,]}}"#,
        // serde_json's raw-value marker (found by review: it once reached
        // the amount check and panicked).
        r#"{"userId":"u","event":"e","properties":{"amount":{"$serde_json::private::RawValue":5}}}"#,
    ] {
        let error = Request::parse(Endpoint::Call(CallKind::Track), body.as_bytes()).unwrap_err();
        assert_eq!(error.code(), "malformed_json", "{body}");
    }
}
