//! Property tests of intake parsing (issue 15): whatever body arrives on
//! whichever endpoint, [`Request::parse`] and [`Request::into_envelopes`]
//! return instead of panicking, and a refusal names what was wrong (the
//! call or batch item, and the field); a well-formed call of every kind is
//! accepted and keeps what the client sent.
//!
//! Case counts are bounded so the whole module runs in seconds in the
//! normal `cargo test`; `fuzz/` (see the README's "Fuzzing") runs the same
//! entry points for as long as one likes.

use nudge_proto::v1::envelope::Body;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

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

/// Parses and builds as the wire layer does.
fn intake(endpoint: Endpoint, body: &[u8]) -> Result<Vec<Envelope>, SegmentError> {
    Request::parse(endpoint, body)?.into_envelopes(&received())
}

/// What "a clear refusal" means for intake: a stable code, a message that
/// starts with where the problem is (for call-level problems), and names
/// the field in backticks.
fn assert_clear(error: &SegmentError) {
    let message = error.to_string();
    assert!(!error.code().is_empty(), "no code for {error:?}");
    match error {
        SegmentError::InvalidUtf8 { .. } | SegmentError::BodyTooLarge { .. } => {}
        SegmentError::MalformedJson { detail } => {
            assert!(!detail.trim().is_empty(), "empty JSON detail: {message}");
        }
        SegmentError::MissingIdentity { at, required } => {
            assert!(message.starts_with(&at.to_string()), "{message}");
            assert!(message.contains(required), "{message}");
        }
        SegmentError::MissingField { at, field } => {
            assert!(message.starts_with(&at.to_string()), "{message}");
            assert!(message.contains(&format!("`{field}`")), "{message}");
        }
        SegmentError::InvalidField { at, field, problem } => {
            assert!(!field.is_empty(), "no field named: {message}");
            assert!(!problem.trim().is_empty(), "no problem said: {message}");
            assert!(message.starts_with(&at.to_string()), "{message}");
            assert!(message.contains(&format!("`{field}`")), "{message}");
        }
        SegmentError::CallTooLarge { at, .. } => {
            assert!(message.starts_with(&at.to_string()), "{message}");
        }
    }
}

const KINDS: [CallKind; 9] = [
    CallKind::Track,
    CallKind::Identify,
    CallKind::Page,
    CallKind::Screen,
    CallKind::Group,
    CallKind::Alias,
    CallKind::SessionStart,
    CallKind::SessionEnd,
    CallKind::Notify,
];

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        proptest::sample::select(KINDS.to_vec()).prop_map(Endpoint::Call),
        Just(Endpoint::Batch),
    ]
}

/// Strings that are likely to mean something to some field: empty, ids,
/// timestamps (good and bad), channel names, priorities, costs, control
/// characters and non-ASCII text.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9_-]{1,12}",
        "[0-9]{1,11}(\\.[0-9]{1,7})?",
        "-?[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        proptest::sample::select(vec![
            "track", "identify", "page", "screen", "group", "alias", "email", "in_app", "sms",
            "pigeon", "low", "normal", "high", "urgent", "\u{0}", "a\nb",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        // Past the 256-character messageId / idempotencyKey bound.
        "x{250,300}",
    ]
}

/// Any JSON value, small, with numbers at the edges (huge, negative,
/// fractional) where amounts and ids live.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(field_name(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Field names intake reads, plus the amount properties and a few it does
/// not know, so most generated keys reach a real check.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "messageId", "userId", "anonymousId", "event", "properties", "traits",
            "context", "integrations", "timestamp", "sentAt", "name", "category",
            "groupId", "previousId", "writeKey", "type", "sessionId", "template",
            "title", "body", "channels", "data", "priority", "idempotencyKey", "cost",
            "batch", "amount", "revenue", "value",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z_]{1,8}",
    ]
}

/// A JSON object with known fields set to random values.
fn near_call() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(field_name(), json_value(), 0..10)
        .prop_map(|map| map.into_iter().collect())
}

/// A batch body whose items are near-valid calls with a Segment `type`.
fn near_batch() -> impl Strategy<Value = Value> {
    let item = (
        near_call(),
        proptest::option::of(proptest::sample::select(vec![
            "track", "identify", "page", "screen", "group", "alias", "notify",
        ])),
    )
        .prop_map(|(mut call, type_)| {
            if let Some(type_) = type_ {
                call.insert("type".into(), type_.into());
            }
            Value::Object(call)
        });
    (proptest::collection::vec(item, 0..5), near_call()).prop_map(|(items, mut top)| {
        top.insert("batch".into(), Value::Array(items));
        Value::Object(top)
    })
}

/// An id intake and the control plane both accept: non-empty, no NUL,
/// within the bounds.
fn id() -> impl Strategy<Value = String> {
    "[^\u{0}]{1,64}"
}

/// A name (event, notification type, group id, …): what [`id`] allows
/// without control characters, which a notification type may not hold.
fn name() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{1,64}"
}

/// Timestamps in the storable range (years 0001-9998), with any
/// sub-second part, written as RFC 3339 with `Z` or an offset.
fn timestamp() -> impl Strategy<Value = (jiff::Timestamp, String)> {
    (
        -62_135_596_800i64..253_370_764_800,
        0i32..1_000_000_000,
        -12i32..=14,
    )
        .prop_map(|(seconds, nanos, offset_hours)| {
            let time = jiff::Timestamp::new(seconds, nanos).unwrap();
            let offset = jiff::tz::Offset::from_hours(offset_hours as i8).unwrap();
            let text = time.display_with_offset(offset).to_string();
            (time, text)
        })
}

fn properties() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map("[a-z]{1,8}", json_value(), 0..4).prop_map(|map| {
        map.into_iter()
            // Amount properties have their own bound, tested apart.
            .filter(|(key, _)| !matches!(key.as_str(), "amount" | "revenue" | "value"))
            .collect()
    })
}

/// Bounded cases; no seed files: a failure found here becomes a named unit
/// test with its minimal input in `tests.rs`.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Raw bytes: never a panic, every refusal clear.
    #[test]
    fn arbitrary_bytes_are_parsed_or_refused_clearly(
        endpoint in endpoint(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        if let Err(error) = intake(endpoint, &body) {
            assert_clear(&error);
        }
    }

    /// Arbitrary text, so that JSON syntax errors at every position are met.
    #[test]
    fn arbitrary_text_is_parsed_or_refused_clearly(endpoint in endpoint(), body in ".{0,256}") {
        if let Err(error) = intake(endpoint, body.as_bytes()) {
            assert_clear(&error);
        }
    }

    /// JSON objects with intake's field names and random values of every
    /// type: reaches each field's checks. Whatever is accepted must be
    /// storable (the promise `storable` keeps), so check it again here.
    #[test]
    fn near_valid_calls_are_accepted_or_refused_clearly(
        endpoint in endpoint(),
        call in near_call(),
    ) {
        let body = Value::Object(call).to_string();
        match intake(endpoint, body.as_bytes()) {
            Ok(envelopes) => {
                if let Endpoint::Call(_) = endpoint {
                    prop_assert_eq!(envelopes.len(), 1);
                }
                for envelope in &envelopes {
                    prop_assert!(nudge_proto::validate::check_envelope(envelope).is_ok());
                }
            }
            Err(error) => assert_clear(&error),
        }
    }

    #[test]
    fn near_valid_batches_are_accepted_or_refused_clearly(batch in near_batch()) {
        let items = batch["batch"].as_array().map_or(0, Vec::len);
        match intake(Endpoint::Batch, batch.to_string().as_bytes()) {
            // All or nothing: one envelope per item.
            Ok(envelopes) => prop_assert_eq!(envelopes.len(), items),
            Err(error) => assert_clear(&error),
        }
    }

    /// A valid call of every kind is accepted and keeps its ids, time and
    /// object fields.
    #[test]
    fn valid_calls_are_accepted_and_keep_their_fields(
        kind in proptest::sample::select(KINDS.to_vec()),
        message_id in id(),
        user_id in id(),
        anonymous_id in proptest::option::of(id()),
        (time, time_text) in timestamp(),
        properties in properties(),
        name in name(),
        as_batch_item in any::<bool>(),
    ) {
        let mut call = json!({
            "messageId": message_id,
            "userId": user_id,
            "timestamp": time_text,
            "properties": properties,
            "traits": properties,
            "data": properties,
            "event": name,
            "groupId": name,
            "previousId": name,
            "sessionId": name,
            "type": if kind == CallKind::Notify { name.as_str() } else { kind.name() },
        });
        if let Some(anonymous_id) = &anonymous_id {
            call["anonymousId"] = json!(anonymous_id);
        }
        // Only Segment calls may sit in a batch.
        let (endpoint, body) = if as_batch_item && kind.is_segment() {
            (Endpoint::Batch, json!({ "batch": [call] }))
        } else {
            (Endpoint::Call(kind), call)
        };
        let envelopes = intake(endpoint, body.to_string().as_bytes())
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(envelopes.len(), 1);
        let envelope = &envelopes[0];
        prop_assert_eq!(&envelope.id, &message_id);
        prop_assert_eq!(&envelope.user_id, &user_id);
        prop_assert_eq!(&envelope.anonymous_id, &anonymous_id.unwrap_or_default());
        prop_assert_eq!(envelope.timestamp, Some(fields::to_proto(time)));
        let object = |json: &str| serde_json::from_str::<Value>(json).unwrap();
        let sent = Value::Object(properties);
        let kept = match envelope.body.as_ref().unwrap() {
            Body::Track(track) => {
                prop_assert_eq!(&track.event, &name);
                object(&track.properties_json)
            }
            Body::Identify(identify) => object(&identify.traits_json),
            Body::Page(page) => object(&page.properties_json),
            Body::Screen(screen) => object(&screen.properties_json),
            Body::Group(group) => {
                prop_assert_eq!(&group.group_id, &name);
                object(&group.traits_json)
            }
            Body::Alias(alias) => {
                prop_assert_eq!(&alias.previous_id, &name);
                sent.clone()
            }
            Body::SessionStart(session) => object(&session.properties_json),
            Body::SessionEnd(session) => object(&session.properties_json),
            Body::Notify(notify) => {
                prop_assert_eq!(&notify.r#type, &name);
                object(&notify.data_json)
            }
        };
        prop_assert_eq!(kept, sent);
    }
}
