//! What makes an [`Envelope`] storable: the one check that both programs
//! run, so that the agent never acknowledges a call the control plane will
//! refuse.
//!
//! The agent runs [`check_envelope`] on every envelope it builds, before the
//! call is appended to its outbox, and answers `400` naming the field; the
//! control plane runs it again on every envelope of a `Push` (an older agent,
//! or another client, may send anything) and lists the envelope as rejected.
//! Before this check was shared, an event whose `userId` held a NUL or ran
//! past 1,024 bytes was acknowledged by the agent, refused by the control
//! plane and then deleted by the shipper: acknowledged, yet silently gone.
//!
//! # What it refuses
//!
//! * `id` empty; `id`, `user_id` or `anonymous_id` longer than
//!   [`MAX_ID_BYTES`] or holding a NUL (ids are store keys, and NUL is the
//!   store's key separator);
//! * neither `user_id` nor `anonymous_id`; no `body`;
//! * a timestamp outside what the store can represent (years -9999..=9999)
//!   or with `nanos` outside `0..1e9`;
//! * an empty `track.event`, `group.group_id`, `alias.previous_id` or
//!   `notify.type`; a `notify.cost` that is not a non-negative decimal of
//!   at most [`MAX_AMOUNT_UNITS`] with at most six decimals;
//! * a `notify.type` or `notify.template` longer than [`MAX_NAME_BYTES`] or
//!   holding a control character (they are keys of preferences, digests and
//!   templates); a `notify.idempotency_key` like an id; a
//!   `notify.channels` entry that is not one of [`CHANNELS`].
//!
//! The `*_json` fields are not parsed here: the agent passes on the text
//! of JSON objects it has just checked with the same parser the control
//! plane uses, so they are objects by construction, and parsing them
//! again at intake would double the cost of every call. The control plane
//! still parses them when it converts. What must be checked inside them
//! is checked by the one rule here, where each program reads the object:
//! [`check_amounts`] / [`check_amount`] (a track's outcome amount).
//!
//! # Money bound
//!
//! Every amount the control plane sums — a notify's `cost`, an outcome's
//! `amount`/`revenue`/`value` — is at most [`MAX_AMOUNT_UNITS`] (one
//! billion) in absolute value. Kept as i64 millionths, one amount is at
//! most 10¹⁵, so thousands of extreme amounts fit in a sum before it would
//! overflow (and the control plane's sums saturate rather than wrap).

use crate::v1::{Envelope, envelope::Body};

/// Longest id (envelope, user, anonymous) accepted, in bytes: ids are index
/// keys in the control plane's store.
pub const MAX_ID_BYTES: usize = 1024;

/// Largest absolute amount (a notify's cost, an outcome's amount) accepted,
/// in units of the operator's currency (see the module's "Money bound").
pub const MAX_AMOUNT_UNITS: u64 = 1_000_000_000;

/// Most digits before a cost's decimal point (those of
/// [`MAX_AMOUNT_UNITS`]); [`is_decimal_cost`] also checks the value.
pub const MAX_COST_WHOLE_DIGITS: usize = 10;

/// The track properties the control plane reads an outcome's amount from,
/// in the order it looks for them.
pub const AMOUNT_PROPERTIES: [&str; 3] = ["amount", "revenue", "value"];

/// Longest notification type or template name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The channels a notify may ask for: the control plane's channel kinds,
/// by their wire names (its tests hold the two lists in step).
pub const CHANNELS: [&str; 7] = [
    "in_app", "email", "apns", "fcm", "web_push", "sms", "webhook",
];

/// The envelope field a refusal is about, with its name on both wires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Id,
    UserId,
    AnonymousId,
    /// Neither `user_id` nor `anonymous_id` is set.
    Identity,
    Timestamp,
    SentAt,
    ReceivedAt,
    Body,
    TrackEvent,
    GroupId,
    AliasPreviousId,
    NotifyType,
    NotifyCost,
    NotifyTemplate,
    NotifyChannels,
    NotifyIdempotencyKey,
    /// A track's properties (an amount out of bounds).
    TrackProperties,
}

impl Field {
    /// The protobuf field path (`user_id`, `track.event`), for the control
    /// plane's rejection reasons.
    pub fn proto_name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::UserId => "user_id",
            Field::AnonymousId => "anonymous_id",
            Field::Identity => "user_id",
            Field::Timestamp => "timestamp",
            Field::SentAt => "sent_at",
            Field::ReceivedAt => "received_at",
            Field::Body => "body",
            Field::TrackEvent => "track.event",
            Field::GroupId => "group.group_id",
            Field::AliasPreviousId => "alias.previous_id",
            Field::NotifyType => "notify.type",
            Field::NotifyCost => "notify.cost",
            Field::NotifyTemplate => "notify.template",
            Field::NotifyChannels => "notify.channels",
            Field::NotifyIdempotencyKey => "notify.idempotency_key",
            Field::TrackProperties => "track.properties_json",
        }
    }

    /// The field's name in a Segment (or Nudge) JSON call, for the agent's
    /// `400` answers.
    pub fn json_name(self) -> &'static str {
        match self {
            Field::Id => "messageId",
            Field::UserId => "userId",
            Field::AnonymousId => "anonymousId",
            Field::Identity => "userId",
            Field::Timestamp => "timestamp",
            Field::SentAt => "sentAt",
            Field::ReceivedAt => "receivedAt",
            Field::Body => "type",
            Field::TrackEvent => "event",
            Field::GroupId => "groupId",
            Field::AliasPreviousId => "previousId",
            Field::NotifyType => "type",
            Field::NotifyCost => "cost",
            Field::NotifyTemplate => "template",
            Field::NotifyChannels => "channels",
            Field::NotifyIdempotencyKey => "idempotencyKey",
            Field::TrackProperties => "properties",
        }
    }
}

/// Why an envelope can never be stored: the field and what is wrong with it
/// (phrased to follow the field's name: "`userId` contains a NUL
/// character").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: Field,
    pub problem: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field {
            // Two fields, neither set: the problem names both.
            Field::Identity => f.write_str(&self.problem),
            field => write!(f, "{} {}", field.proto_name(), self.problem),
        }
    }
}

impl std::error::Error for Invalid {}

/// Checks everything the control plane refuses that can be checked without
/// parsing JSON (see the module's list). Cheap: no allocation unless it
/// refuses.
pub fn check_envelope(envelope: &Envelope) -> Result<(), Invalid> {
    let invalid = |field, problem: String| Err(Invalid { field, problem });
    if envelope.id.is_empty() {
        return invalid(Field::Id, "is empty".to_owned());
    }
    check_id(Field::Id, &envelope.id)?;
    check_id(Field::UserId, &envelope.user_id)?;
    check_id(Field::AnonymousId, &envelope.anonymous_id)?;
    if envelope.user_id.is_empty() && envelope.anonymous_id.is_empty() {
        return invalid(
            Field::Identity,
            "neither user_id nor anonymous_id is set".to_owned(),
        );
    }
    check_timestamp(Field::Timestamp, envelope.timestamp.as_ref())?;
    check_timestamp(Field::SentAt, envelope.sent_at.as_ref())?;
    check_timestamp(Field::ReceivedAt, envelope.received_at.as_ref())?;
    let required = |field, value: &str| {
        if value.is_empty() {
            invalid(field, "is empty".to_owned())
        } else {
            Ok(())
        }
    };
    match &envelope.body {
        None => invalid(
            Field::Body,
            "is missing (expected track, identify, page, screen, group, alias, \
             session_start, session_end or notify)"
                .to_owned(),
        ),
        Some(Body::Track(track)) => required(Field::TrackEvent, &track.event),
        Some(Body::Group(group)) => required(Field::GroupId, &group.group_id),
        Some(Body::Alias(alias)) => required(Field::AliasPreviousId, &alias.previous_id),
        Some(Body::Notify(notify)) => {
            required(Field::NotifyType, &notify.r#type)?;
            check_name(Field::NotifyType, &notify.r#type)?;
            check_name(Field::NotifyTemplate, &notify.template)?;
            check_id(Field::NotifyIdempotencyKey, &notify.idempotency_key)?;
            if let Some(unknown) = notify
                .channels
                .iter()
                .find(|channel| !CHANNELS.contains(&channel.as_str()))
            {
                return invalid(
                    Field::NotifyChannels,
                    format!(
                        "names {unknown:?}, which is not a channel (one of {})",
                        CHANNELS.join(", ")
                    ),
                );
            }
            if notify.cost.is_empty() || is_decimal_cost(&notify.cost) {
                Ok(())
            } else {
                invalid(
                    Field::NotifyCost,
                    format!("is {:?}; {COST_RULE}", notify.cost),
                )
            }
        }
        Some(
            Body::Identify(_)
            | Body::Page(_)
            | Body::Screen(_)
            | Body::SessionStart(_)
            | Body::SessionEnd(_),
        ) => Ok(()),
    }
}

/// An id that may be empty (absent) but is otherwise a store key.
fn check_id(field: Field, value: &str) -> Result<(), Invalid> {
    if value.len() > MAX_ID_BYTES {
        return Err(Invalid {
            field,
            problem: format!(
                "is {} bytes long, over the limit of {MAX_ID_BYTES} bytes",
                value.len()
            ),
        });
    }
    if value.as_bytes().contains(&0) {
        return Err(Invalid {
            field,
            problem: "contains a NUL character".to_owned(),
        });
    }
    Ok(())
}

/// A name that may be empty (absent) but is otherwise a key: bounded, no
/// control characters (NUL among them).
fn check_name(field: Field, value: &str) -> Result<(), Invalid> {
    if value.len() > MAX_NAME_BYTES {
        return Err(Invalid {
            field,
            problem: format!(
                "is {} bytes long, over the limit of {MAX_NAME_BYTES} bytes",
                value.len()
            ),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid {
            field,
            problem: "contains a control character".to_owned(),
        });
    }
    Ok(())
}

fn check_timestamp(field: Field, value: Option<&prost_types::Timestamp>) -> Result<(), Invalid> {
    let Some(value) = value else { return Ok(()) };
    // The control plane keeps times as jiff timestamps; asking jiff is the
    // only way to agree with it exactly on the range.
    if (0..1_000_000_000).contains(&value.nanos)
        && jiff::Timestamp::new(value.seconds, value.nanos).is_ok()
    {
        return Ok(());
    }
    Err(Invalid {
        field,
        problem: format!(
            "is out of range ({} s, {} ns); years -9999 to 9999 are storable",
            value.seconds, value.nanos
        ),
    })
}

/// What a cost must be, for refusals (both programs say the same).
pub const COST_RULE: &str = "it must be a non-negative decimal of at most 1000000000 \
     with at most 6 decimals (e.g. \"0.05\")";

/// A non-negative decimal of at most [`MAX_AMOUNT_UNITS`]: 1 to
/// [`MAX_COST_WHOLE_DIGITS`] digits, then optionally `.` and 1 to 6 digits.
pub fn is_decimal_cost(text: &str) -> bool {
    let digits = |part: &str, most: usize| {
        (1..=most).contains(&part.len()) && part.bytes().all(|byte| byte.is_ascii_digit())
    };
    let (whole, fraction) = match text.split_once('.') {
        None => (text, None),
        Some((whole, fraction)) => (whole, Some(fraction)),
    };
    if !digits(whole, MAX_COST_WHOLE_DIGITS) || !fraction.is_none_or(|part| digits(part, 6)) {
        return false;
    }
    // At most 10 digits: fits u64.
    let units: u64 = whole.parse().unwrap_or(u64::MAX);
    let has_fraction = fraction.is_some_and(|part| part.bytes().any(|byte| byte != b'0'));
    units < MAX_AMOUNT_UNITS || (units == MAX_AMOUNT_UNITS && !has_fraction)
}

/// Whether `amount` (in units) is within ±[`MAX_AMOUNT_UNITS`].
pub fn amount_in_bounds(amount: f64) -> bool {
    amount.is_finite() && amount.abs() <= MAX_AMOUNT_UNITS as f64
}

/// Refuses a track whose outcome amount ([`AMOUNT_PROPERTIES`]: a number,
/// or a string holding a decimal number) lies outside ±[`MAX_AMOUNT_UNITS`].
/// Strings that are not numbers are left alone: the control plane does not
/// read them as amounts.
pub fn check_amounts(
    properties: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), Invalid> {
    for name in AMOUNT_PROPERTIES {
        if let Some(value) = properties.get(name) {
            check_amount(name, value)?;
        }
    }
    Ok(())
}

/// [`check_amounts`] for one property, for a caller that reads properties
/// one by one (the agent does not decode a whole object).
pub fn check_amount(name: &str, value: &serde_json::Value) -> Result<(), Invalid> {
    let amount = match value {
        serde_json::Value::Number(number) => number.as_f64(),
        serde_json::Value::String(text) => decimal(text),
        _ => None,
    };
    match amount {
        Some(amount) if !amount_in_bounds(amount) => Err(Invalid {
            field: Field::TrackProperties,
            problem: format!(
                "`{name}` is {amount}; amounts must be between -{MAX_AMOUNT_UNITS} and {MAX_AMOUNT_UNITS}"
            ),
        }),
        _ => Ok(()),
    }
}

/// A decimal string's value (`-12.5`), `None` for anything else.
fn decimal(text: &str) -> Option<f64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    let all_digits =
        |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    (all_digits(whole) && all_digits(fraction))
        .then(|| text.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Alias, Group, Identify, Notify, Track};

    fn track() -> Envelope {
        Envelope {
            id: "e1".to_owned(),
            user_id: "u1".to_owned(),
            body: Some(Body::Track(Track {
                event: "Signed Up".to_owned(),
                properties_json: String::new(),
            })),
            ..Default::default()
        }
    }

    fn refused(envelope: &Envelope) -> Field {
        check_envelope(envelope).unwrap_err().field
    }

    #[test]
    fn a_plain_track_passes() {
        check_envelope(&track()).unwrap();
        let anonymous = Envelope {
            user_id: String::new(),
            anonymous_id: "a1".to_owned(),
            ..track()
        };
        check_envelope(&anonymous).unwrap();
    }

    #[test]
    fn ids_are_bounded_and_free_of_nul() {
        let at_limit = "x".repeat(MAX_ID_BYTES);
        let over = "x".repeat(MAX_ID_BYTES + 1);
        for (field, set) in [
            (
                Field::Id,
                (|e: &mut Envelope, v: &str| e.id = v.to_owned()) as fn(&mut _, &_),
            ),
            (Field::UserId, |e, v| e.user_id = v.to_owned()),
            (Field::AnonymousId, |e, v| e.anonymous_id = v.to_owned()),
        ] {
            let mut ok = track();
            set(&mut ok, &at_limit);
            check_envelope(&ok).unwrap();
            let mut long = track();
            set(&mut long, &over);
            let error = check_envelope(&long).unwrap_err();
            assert_eq!(error.field, field);
            assert!(error.problem.contains("1025 bytes"), "{error}");
            let mut nul = track();
            set(&mut nul, "a\0b");
            assert_eq!(refused(&nul), field);
        }
        // Multi-byte characters count in bytes: 257 × 4 bytes is over.
        let mut wide = track();
        wide.user_id = "𝄞".repeat(257);
        assert_eq!(refused(&wide), Field::UserId);
    }

    #[test]
    fn identity_body_and_required_names() {
        let mut nobody = track();
        nobody.user_id.clear();
        assert_eq!(refused(&nobody), Field::Identity);
        let mut no_id = track();
        no_id.id.clear();
        assert_eq!(refused(&no_id), Field::Id);
        let mut no_body = track();
        no_body.body = None;
        assert_eq!(refused(&no_body), Field::Body);
        let with = |body| Envelope {
            body: Some(body),
            ..track()
        };
        assert_eq!(
            refused(&with(Body::Track(Track::default()))),
            Field::TrackEvent
        );
        assert_eq!(
            refused(&with(Body::Group(Group::default()))),
            Field::GroupId
        );
        assert_eq!(
            refused(&with(Body::Alias(Alias::default()))),
            Field::AliasPreviousId
        );
        assert_eq!(
            refused(&with(Body::Notify(Notify::default()))),
            Field::NotifyType
        );
        check_envelope(&with(Body::Identify(Identify::default()))).unwrap();
    }

    #[test]
    fn notify_names_channels_and_keys() {
        let notify = |change: &dyn Fn(&mut Notify)| {
            let mut notify = Notify {
                r#type: "invoice".to_owned(),
                channels: vec!["email".to_owned(), "in_app".to_owned()],
                ..Default::default()
            };
            change(&mut notify);
            Envelope {
                body: Some(Body::Notify(notify)),
                ..track()
            }
        };
        check_envelope(&notify(&|_| {})).unwrap();
        type Change<'a> = &'a dyn Fn(&mut Notify);
        let cases: [(Change, Field); 6] = [
            (&|n| n.r#type = "in\0voice".to_owned(), Field::NotifyType),
            (
                &|n| n.r#type = "x".repeat(MAX_NAME_BYTES + 1),
                Field::NotifyType,
            ),
            (
                &|n| n.template = "welcome\n".to_owned(),
                Field::NotifyTemplate,
            ),
            (
                &|n| n.channels.push("pigeon".to_owned()),
                Field::NotifyChannels,
            ),
            (
                &|n| n.idempotency_key = "k\0".to_owned(),
                Field::NotifyIdempotencyKey,
            ),
            (
                &|n| n.idempotency_key = "k".repeat(MAX_ID_BYTES + 1),
                Field::NotifyIdempotencyKey,
            ),
        ];
        for (change, field) in cases {
            assert_eq!(refused(&notify(change)), field);
        }
        let message = check_envelope(&notify(&|n| n.channels = vec!["pigeon".to_owned()]))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("notify.channels names \"pigeon\""),
            "{message}"
        );
    }

    #[test]
    fn notify_costs() {
        let notify = |cost: &str| Envelope {
            body: Some(Body::Notify(Notify {
                r#type: "invoice".to_owned(),
                cost: cost.to_owned(),
                ..Default::default()
            })),
            ..track()
        };
        for good in [
            "",
            "0",
            "0.05",
            "999999999.999999",
            "1000000000",
            "1000000000.000",
        ] {
            check_envelope(&notify(good)).unwrap();
        }
        for bad in [
            "-1",
            "1e3",
            ".5",
            "5.",
            "0.0000001",
            "1000000000.000001",
            "1000000001",
            "999999999999",
            "1234567890123",
            "abc",
        ] {
            assert_eq!(refused(&notify(bad)), Field::NotifyCost, "{bad}");
        }
    }

    #[test]
    fn outcome_amounts_are_bounded() {
        let properties = |json: &str| match serde_json::from_str(json).unwrap() {
            serde_json::Value::Object(object) => object,
            _ => unreachable!(),
        };
        for good in [
            r#"{}"#,
            r#"{"amount": 25.5}"#,
            r#"{"revenue": -1000000000}"#,
            r#"{"value": "999999999.99"}"#,
            r#"{"value": "not a number", "amount": "1e30"}"#,
        ] {
            check_amounts(&properties(good)).unwrap();
        }
        for bad in [
            r#"{"amount": 1e18}"#,
            r#"{"revenue": -1000000001}"#,
            r#"{"value": "4000000000000"}"#,
            r#"{"amount": 18446744073709551615}"#,
        ] {
            let invalid = check_amounts(&properties(bad)).unwrap_err();
            assert_eq!(invalid.field, Field::TrackProperties, "{bad}");
        }
    }

    #[test]
    fn timestamps_must_be_storable() {
        let at = |seconds, nanos| Envelope {
            sent_at: Some(prost_types::Timestamp { seconds, nanos }),
            ..track()
        };
        check_envelope(&at(1_700_000_000, 5)).unwrap();
        assert_eq!(refused(&at(i64::MAX, 0)), Field::SentAt);
        assert_eq!(refused(&at(0, -1)), Field::SentAt);
        assert_eq!(refused(&at(0, 1_000_000_000)), Field::SentAt);
    }
}
