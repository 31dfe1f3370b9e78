//! Property tests of the control plane's side of a notify (issue 15): the
//! envelope's JSON text and cost as any client could send them over gRPC
//! (the management API's notify included) are converted or refused with a
//! reason that starts with the field, never a panic; a well-formed notify
//! keeps its data, channels and cost.
//!
//! Case counts are bounded so the module runs in seconds in `cargo test`;
//! `fuzz/` (see the README's "Fuzzing") runs longer.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::*;

const FIELDS: [&str; 6] = [
    "id",
    "user_id",
    "context_json",
    "integrations_json",
    "notify.",
    "neither user_id",
];

fn notify_envelope(notify: pb::Notify, context_json: String) -> pb::Envelope {
    pb::Envelope {
        id: "n-1".into(),
        user_id: "u-1".into(),
        context_json,
        body: Some(Body::Notify(notify)),
        ..pb::Envelope::default()
    }
}

fn convert(envelope: pb::Envelope) -> Result<Event, String> {
    event_from_envelope("agent-1", envelope, Timestamp::UNIX_EPOCH)
}

/// JSON text of every kind: objects, other values, broken JSON, empty.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("null".to_owned()),
        Just("  ".to_owned()),
        "\\{\"[a-z]{1,4}\": ?(1|\"x\"|\\[\\]|\\{\\}|null|1e999|-0)\\}",
        "\\[[0-9, ]{0,6}\\]",
        "\\{[\"a-z:,0-9 ]{0,12}",
        ".{0,24}",
    ]
}

fn cost_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9]{1,11}(\\.[0-9]{0,8})?",
        "-?[0-9.e+-]{1,8}",
        ".{0,8}",
    ]
}

fn channel_names() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            proptest::sample::select(ChannelKind::ALL.to_vec())
                .prop_map(|kind| kind.as_str().to_owned()),
            "[a-z_]{0,8}",
        ],
        0..3,
    )
}

proptest! {
    #![proptest_config(crate::proptest_cases::bounded(1000))]

    #[test]
    fn notify_fields_convert_or_are_refused_by_field(
        type_ in prop_oneof![Just(String::new()), ".{1,12}"],
        data_json in json_text(),
        context_json in json_text(),
        cost in cost_text(),
        channels in channel_names(),
        priority in any::<i32>(),
    ) {
        let notify = pb::Notify {
            r#type: type_,
            data_json,
            cost,
            channels,
            priority,
            ..pb::Notify::default()
        };
        if let Err(reason) = convert(notify_envelope(notify, context_json)) {
            prop_assert!(
                FIELDS.iter().any(|field| reason.starts_with(field)),
                "reason does not name the field: {}", reason
            );
        }
    }

    /// A well-formed notify keeps its data, channels and cost.
    #[test]
    fn valid_notify_keeps_its_fields(
        data in proptest::collection::btree_map("[a-z]{1,6}", ".{0,8}", 0..4),
        channels in proptest::collection::vec(
            proptest::sample::select(ChannelKind::ALL.to_vec()), 0..3),
        units in 0u64..1_000_000_000,
        micros in 0u32..1_000_000,
    ) {
        let data: Map<String, Value> =
            data.into_iter().map(|(key, value)| (key, Value::String(value))).collect();
        let cost = format!("{units}.{micros:06}");
        let notify = pb::Notify {
            r#type: "invoice".into(),
            data_json: serde_json::to_string(&data).unwrap(),
            cost: cost.clone(),
            channels: channels.iter().map(|kind| kind.as_str().to_owned()).collect(),
            ..pb::Notify::default()
        };
        let event = convert(notify_envelope(notify, String::new()))
            .map_err(TestCaseError::fail)?;
        let EventBody::Notify(request) = event.body else {
            return Err(TestCaseError::fail("not a notify"));
        };
        prop_assert_eq!(request.data, data);
        prop_assert_eq!(request.channels, channels);
        let expected: Money = cost.parse().unwrap();
        prop_assert_eq!(request.cost, Some(expected));
    }
}
