//! One call's JSON object → one [`Envelope`], per call kind.

use std::borrow::Cow;

use nudge_proto::v1::{self as proto, Envelope, envelope::Body};
use nudge_proto::validate::{self, COST_RULE};

use super::error::{At, SegmentError};
use super::fields::Fields;
use super::json::{Json, Kind, Object};
use super::{CallKind, MAX_CALL_BYTES, MAX_ID_CHARS};

type Result<T> = std::result::Result<T, SegmentError>;

/// Values an envelope takes when its call does not set them: from the
/// request (write key, receive time) and, in a batch, from its top level.
#[derive(Debug, Clone, Default)]
pub(crate) struct Defaults {
    pub(crate) write_key: String,
    pub(crate) received_at: prost_types::Timestamp,
    pub(crate) context_json: String,
    pub(crate) integrations_json: String,
    pub(crate) sent_at: Option<prost_types::Timestamp>,
}

/// One item of a batch: an object with a Segment `type`, within the
/// per-call size limit.
/// The size counted is the item's JSON text as sent.
/// `map` is the item's members when it is an object.
pub(crate) fn build_item(
    index: usize,
    item: Json<'_>,
    map: Option<&Object<'_>>,
    defaults: &Defaults,
) -> Result<Envelope> {
    let at = At::Item { index, kind: None };
    let Some(map) = map else {
        return Err(SegmentError::invalid(
            at,
            "batch[]",
            format!("items must be objects, found {}", item.kind().article()),
        ));
    };
    let size = item.text().len();
    if size > MAX_CALL_BYTES {
        return Err(SegmentError::CallTooLarge {
            at,
            size,
            limit: MAX_CALL_BYTES,
        });
    }
    let fields = Fields::new(map, at);
    let type_ = fields.required_string("type")?;
    let Some(kind) = CallKind::from_segment_type(&type_) else {
        return Err(SegmentError::invalid(
            at,
            "type",
            format!(
                "is {type_:?}; a batch item must be one of track, identify, page, screen, group, alias"
            ),
        ));
    };
    let fields = Fields::new(
        map,
        At::Item {
            index,
            kind: Some(kind),
        },
    );
    build_checked(kind, fields, defaults)
}

/// A single call posted to its kind's own endpoint.
pub(crate) fn build(kind: CallKind, fields: Fields<'_>, defaults: &Defaults) -> Result<Envelope> {
    // A Segment body may repeat its type (analytics.js does); a different
    // one means the client posted to the wrong endpoint. Nudge's own calls
    // are exempt: notify's `type` is the notification type.
    if kind.is_segment()
        && let Some(type_) = fields.string("type")?
        && type_ != kind.name()
    {
        return Err(SegmentError::invalid(
            fields.at,
            "type",
            format!("is {type_:?} but this endpoint takes {} calls", kind.name()),
        ));
    }
    build_checked(kind, fields, defaults)
}

fn build_checked(kind: CallKind, fields: Fields<'_>, defaults: &Defaults) -> Result<Envelope> {
    let mut envelope = common(fields, defaults)?;
    let has_user = !envelope.user_id.is_empty();
    let has_someone = has_user || !envelope.anonymous_id.is_empty();
    let either = "`userId` or `anonymousId`";
    let require = |ok: bool, required: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(SegmentError::MissingIdentity {
                at: fields.at,
                required,
            })
        }
    };
    let body = match kind {
        CallKind::Track => {
            require(has_someone, either)?;
            // An outcome's amount is summed by the control plane: out of
            // bounds is a 400 now, never a sum that overflows later.
            if let Some(properties) = fields.value("properties").and_then(Json::as_object) {
                // Only the amount properties are decoded, not the rest.
                for name in validate::AMOUNT_PROPERTIES {
                    let Some(amount) = properties.get(name) else {
                        continue;
                    };
                    let Some(amount) = amount.to_value() else {
                        continue;
                    };
                    validate::check_amount(name, &amount).map_err(|invalid| {
                        SegmentError::invalid(fields.at, invalid.field.json_name(), invalid.problem)
                    })?;
                }
            }
            Body::Track(proto::Track {
                event: fields.required_string("event")?.into_owned(),
                properties_json: fields.object_json("properties")?,
            })
        }
        CallKind::Identify => {
            require(has_someone, either)?;
            Body::Identify(proto::Identify {
                traits_json: fields.object_json("traits")?,
            })
        }
        CallKind::Page => {
            require(has_someone, either)?;
            Body::Page(proto::Page {
                name: owned(fields.string("name")?),
                category: owned(fields.string("category")?),
                properties_json: fields.object_json("properties")?,
            })
        }
        CallKind::Screen => {
            require(has_someone, either)?;
            Body::Screen(proto::Screen {
                name: owned(fields.string("name")?),
                category: owned(fields.string("category")?),
                properties_json: fields.object_json("properties")?,
            })
        }
        CallKind::Group => {
            require(has_someone, either)?;
            Body::Group(proto::Group {
                group_id: required_id(fields, "groupId")?,
                traits_json: fields.object_json("traits")?,
            })
        }
        CallKind::Alias => {
            require(has_user, "`userId`")?;
            Body::Alias(proto::Alias {
                previous_id: required_id(fields, "previousId")?,
            })
        }
        CallKind::SessionStart => {
            require(has_someone, either)?;
            Body::SessionStart(proto::SessionStart {
                session_id: required_id(fields, "sessionId")?,
                properties_json: fields.object_json("properties")?,
            })
        }
        CallKind::SessionEnd => {
            require(has_someone, either)?;
            Body::SessionEnd(proto::SessionEnd {
                session_id: required_id(fields, "sessionId")?,
                properties_json: fields.object_json("properties")?,
            })
        }
        CallKind::Notify => {
            // An anonymous visitor has no address book entry to notify.
            require(has_user, "`userId`")?;
            Body::Notify(notify(fields)?)
        }
    };
    envelope.body = Some(body);
    storable(&envelope, fields.at)?;
    Ok(envelope)
}

/// Refuses, naming the JSON field, what the control plane would refuse
/// after the client had been told it succeeded (the shipper would then
/// have to delete an acknowledged call). The rule is nudge-proto's, shared
/// with the control plane, so the two cannot drift apart.
fn storable(envelope: &Envelope, at: At) -> Result<()> {
    let Err(invalid) = validate::check_envelope(envelope) else {
        return Ok(());
    };
    Err(match invalid.field {
        validate::Field::Identity => SegmentError::MissingIdentity {
            at,
            required: "`userId` or `anonymousId`",
        },
        field => SegmentError::invalid(at, field.json_name(), invalid.problem),
    })
}

/// The fields every call shares.
fn common(fields: Fields<'_>, defaults: &Defaults) -> Result<Envelope> {
    let id = match fields.bounded_id("messageId", MAX_ID_CHARS)? {
        Some(id) => id,
        None => uuid::Uuid::now_v7().to_string(),
    };
    let context_json = match fields.object_json("context")? {
        json if json.is_empty() => defaults.context_json.clone(),
        json => json,
    };
    let integrations_json = match fields.object_json("integrations")? {
        json if json.is_empty() => defaults.integrations_json.clone(),
        json => json,
    };
    let write_key = match fields.string("writeKey")? {
        Some(key) => key.into_owned(),
        None => defaults.write_key.clone(),
    };
    Ok(Envelope {
        id,
        user_id: fields.id("userId")?.unwrap_or_default(),
        anonymous_id: fields.id("anonymousId")?.unwrap_or_default(),
        timestamp: fields.timestamp("timestamp")?,
        sent_at: fields.timestamp("sentAt")?.or(defaults.sent_at),
        received_at: Some(defaults.received_at),
        context_json,
        integrations_json,
        write_key,
        body: None,
    })
}

fn notify(fields: Fields<'_>) -> Result<proto::Notify> {
    let template = owned(fields.string("template")?);
    let title = owned(fields.string("title")?);
    // All three may be empty: the control plane then uses the template
    // configured for the notification type, which the agent cannot see.
    let body = owned(fields.string("body")?);
    let channels = match fields.value("channels") {
        None => Vec::new(),
        Some(value) => {
            let Some(items) = value.as_array() else {
                return Err(SegmentError::invalid(
                    fields.at,
                    "channels",
                    format!(
                        "must be an array of strings, found {}",
                        value.kind().article()
                    ),
                ));
            };
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| match item.as_str() {
                    Some(channel) if !channel.is_empty() => Ok(channel.into_owned()),
                    _ => Err(SegmentError::invalid(
                        fields.at,
                        format!("channels[{index}]"),
                        format!("must be a non-empty string, found {}", describe(item)),
                    )),
                })
                .collect::<Result<_>>()?
        }
    };
    let priority = match fields.string("priority")?.as_deref() {
        // Unspecified lets the control plane apply the type's default.
        None => proto::Priority::Unspecified,
        Some("low") => proto::Priority::Low,
        Some("normal") => proto::Priority::Normal,
        Some("high") => proto::Priority::High,
        Some(other) => {
            return Err(SegmentError::invalid(
                fields.at,
                "priority",
                format!("is {other:?}; it must be \"low\", \"normal\" or \"high\""),
            ));
        }
    };
    Ok(proto::Notify {
        r#type: fields.required_string("type")?.into_owned(),
        template,
        title,
        body,
        channels,
        data_json: fields.object_json("data")?,
        priority: priority.into(),
        idempotency_key: fields
            .bounded_id("idempotencyKey", MAX_ID_CHARS)?
            .unwrap_or_default(),
        cost: cost(fields)?,
    })
}

/// A notify's per-message cost override, as decimal text for the control
/// plane (empty when absent). The agent has no money type: it only checks
/// the shape — a non-negative decimal with at most six decimals, as a
/// string or a JSON number — so that a typo is a 400 to the app now rather
/// than an event the control plane rejects later. The control plane parses
/// it exactly.
fn cost(fields: Fields<'_>) -> Result<String> {
    let Some(value) = fields.value("cost") else {
        return Ok(String::new());
    };
    let text = match value.kind() {
        Kind::String => value.as_str().map(Cow::into_owned).unwrap_or_default(),
        // serde_json prints a number in its shortest form: 0.05 is "0.05",
        // 5 is "5"; 1e-7 stays "1e-7" and is refused below.
        Kind::Number => value.number_text().unwrap_or_default(),
        other => {
            return Err(SegmentError::invalid(
                fields.at,
                "cost",
                format!(
                    "must be a decimal string or a number, found {}",
                    other.article()
                ),
            ));
        }
    };
    if text.is_empty() {
        return Ok(String::new());
    }
    if !validate::is_decimal_cost(&text) {
        return Err(SegmentError::invalid(
            fields.at,
            "cost",
            format!("is {text:?}; {COST_RULE}"),
        ));
    }
    Ok(text)
}

fn required_id(fields: Fields<'_>, name: &'static str) -> Result<String> {
    fields.id(name)?.ok_or(SegmentError::MissingField {
        at: fields.at,
        field: name,
    })
}

fn owned(text: Option<Cow<'_, str>>) -> String {
    text.map(Cow::into_owned).unwrap_or_default()
}

fn describe(value: Json<'_>) -> &'static str {
    match value.kind() {
        Kind::String => "an empty string",
        other => other.article(),
    }
}
