//! Property tests of the preferences document a user or operator PUTs
//! (issue 15), at the level the HTTP routes call: JSON into
//! [`UserPreferences`], then [`UserPreferences::validate`]. Any body is
//! either accepted or refused with a message that says what was wrong,
//! never a panic; an accepted document round-trips through its JSON form
//! unchanged; quiet hours accept exactly `HH:MM`.
//!
//! Case counts are bounded so the module runs in seconds in `cargo test`;
//! `fuzz/` (see the README's "Fuzzing") runs longer.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

/// The routes' path: parse, then check against the operator's defaults.
fn accept(body: &[u8], defaults: &OperatorDefaults) -> Result<UserPreferences, String> {
    let preferences: UserPreferences =
        serde_json::from_slice(body).map_err(|error| error.to_string())?;
    preferences
        .validate(defaults)
        .map_err(|error| error.to_string())?;
    Ok(preferences)
}

fn defaults() -> OperatorDefaults {
    OperatorDefaults {
        types: [(
            "security".to_owned(),
            TypeDefaults {
                critical: true,
                ..TypeDefaults::default()
            },
        )]
        .into(),
    }
}

/// An accepted document survives its stored (JSON) form.
fn assert_round_trips(preferences: &UserPreferences) {
    let json = serde_json::to_string(preferences).unwrap();
    let back: UserPreferences = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, preferences, "{json}");
}

fn channel_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(ChannelKind::ALL.to_vec())
            .prop_map(|kind| kind.as_str().to_owned()),
        1 => "[a-z_]{0,8}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        proptest::sample::select(vec![
            "instant",
            "hourly",
            "daily",
            "weekly",
            "never",
            "sometimes",
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Mars/Olympus",
            "../etc/passwd",
            "22:00",
            "7:00",
            "24:00",
            "23:60",
            "+1:05",
            "-0:30",
            "00:00",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn channel_map() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(channel_name(), scalar(), 0..4)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// A document with the right shape and random values in every slot,
/// including wrong types and unknown keys.
fn near_document() -> impl Strategy<Value = Value> {
    let type_prefs = (
        proptest::option::of(channel_map()),
        proptest::option::of(scalar()),
        proptest::option::of(scalar()),
    )
        .prop_map(|(channels, frequency, unknown)| {
            let mut map = Map::new();
            if let Some(channels) = channels {
                map.insert("channels".into(), channels);
            }
            if let Some(frequency) = frequency {
                map.insert("frequency".into(), frequency);
            }
            if let Some(unknown) = unknown {
                map.insert("muted".into(), unknown);
            }
            Value::Object(map)
        });
    let types = proptest::collection::btree_map(
        prop_oneof![Just("security".to_owned()), "[a-z_.]{0,8}"],
        type_prefs,
        0..3,
    )
    .prop_map(|map| Value::Object(map.into_iter().collect()));
    let quiet = (scalar(), scalar(), scalar()).prop_map(
        |(start, end, timezone)| json!({"start": start, "end": end, "timezone": timezone}),
    );
    (
        proptest::option::of(channel_map()),
        proptest::option::of(types),
        proptest::option::of(prop_oneof![quiet, scalar()]),
        proptest::option::of(scalar()),
    )
        .prop_map(|(channels, types, quiet_hours, timezone)| {
            let mut map = Map::new();
            for (key, value) in [
                ("channels", channels),
                ("types", types),
                ("quiet_hours", quiet_hours),
                ("timezone", timezone),
            ] {
                if let Some(value) = value {
                    map.insert(key.into(), value);
                }
            }
            Value::Object(map)
        })
}

proptest! {
    #![proptest_config(crate::proptest_cases::bounded(1000))]

    #[test]
    fn arbitrary_bytes_are_accepted_or_refused_clearly(
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        match accept(&body, &defaults()) {
            Ok(preferences) => assert_round_trips(&preferences),
            Err(message) => prop_assert!(!message.trim().is_empty()),
        }
    }

    /// Every refusal of a well-shaped document names the offending value
    /// (serde names the unknown field or variant and the expected type;
    /// ours quote the time zone, the time or the critical type).
    #[test]
    fn near_valid_documents_are_accepted_or_refused_clearly(document in near_document()) {
        match accept(document.to_string().as_bytes(), &defaults()) {
            Ok(preferences) => assert_round_trips(&preferences),
            Err(message) => {
                prop_assert!(!message.trim().is_empty());
                let says_what = ["unknown", "invalid", "expected", "critical", "quiet hours",
                    "time zone", "missing field", "duplicate"]
                    .iter()
                    .any(|word| message.contains(word));
                prop_assert!(says_what, "unclear: {}", message);
            }
        }
    }

    /// Quiet hours take exactly two digits, a colon and two digits, and an
    /// accepted time is written back the way it was given.
    #[test]
    fn quiet_hours_accept_exactly_hh_mm(start in ".{0,6}|[0-9+ -]{1,3}:[0-9+ -]{1,3}") {
        match QuietHours::new(&start, "00:00", "UTC") {
            Ok(quiet) => prop_assert_eq!(quiet.start_hhmm(), start),
            Err(error) => {
                prop_assert_eq!(
                    error,
                    PreferenceError::QuietHoursTime { field: "start", value: start }
                );
            }
        }
    }

    /// A critical type cannot be switched off through the document, and the
    /// refusal names it; any other type can.
    #[test]
    fn critical_opt_outs_are_refused_by_name(
        critical in any::<bool>(),
        channel in proptest::sample::select(ChannelKind::ALL.to_vec()),
    ) {
        let name = if critical { "security" } else { "news" };
        let body = json!({ "types": { name: { "channels": { channel.as_str(): false } } } });
        match accept(body.to_string().as_bytes(), &defaults()) {
            Ok(_) => prop_assert!(!critical),
            Err(message) => {
                prop_assert!(critical);
                prop_assert!(message.contains("\"security\" is critical"), "{}", message);
            }
        }
    }
}
