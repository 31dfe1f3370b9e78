//! The one place where gRPC wire types become domain types and back.
//!
//! Validation happens here too, per envelope: an envelope that can never be
//! stored becomes a [`Rejected`] with a reason a developer can act on, and
//! the rest of its batch goes on. What is rejected:
//!
//! * an empty `id`, or ids longer than [`MAX_ID_BYTES`];
//! * neither `user_id` nor `anonymous_id`;
//! * no `body`;
//! * a `*_json` field that is not a JSON object (empty or `null` means
//!   absent);
//! * ids containing NUL (the store's index separator), timestamps outside
//!   the representable range, a track without an event name;
//! * a notify `cost` that is not a non-negative decimal of at most
//!   `MAX_AMOUNT_UNITS` with at most six decimals, and a track whose
//!   outcome amount is out of those bounds (nudge-proto's money bound, the
//!   agent's own rule: the management API's notify reaches here without
//!   the agent).

use jiff::Timestamp;
use nudge_proto::v1::{self as pb, envelope::Body};
use serde_json::Value;

use crate::channels::ChannelKind;
use crate::event::{
    Event, EventBody, IngestOutcome, JsonObject, NotifyRequest, Priority, Rejected,
};
use crate::money::Money;

/// Longest id (event, user, anonymous) accepted; ids are index keys.
pub const MAX_ID_BYTES: usize = 1024;

/// Converts a batch, splitting it into storable events and rejects.
pub fn events_from_envelopes(
    agent_id: &str,
    envelopes: Vec<pb::Envelope>,
    ingested_at: Timestamp,
) -> (Vec<Event>, Vec<Rejected>) {
    let mut events = Vec::with_capacity(envelopes.len());
    let mut rejected = Vec::new();
    for envelope in envelopes {
        let id = envelope.id.clone();
        match event_from_envelope(agent_id, envelope, ingested_at) {
            Ok(event) => events.push(event),
            Err(reason) => rejected.push(Rejected { id, reason }),
        }
    }
    (events, rejected)
}

/// A notify's content checked and converted exactly as an envelope's
/// would be (the shared check of `nudge_proto::validate`, then the
/// conversion): for callers that send one notify to many users
/// (broadcasts). Its idempotency key is refused: a broadcast's id is its
/// key. Reasons name the field as `notify.<field>`.
pub fn notify_request(notify: pb::Notify) -> Result<NotifyRequest, String> {
    if !notify.idempotency_key.is_empty() {
        return Err(
            "notify.idempotency_key must be empty: the broadcast id is its idempotency key"
                .to_owned(),
        );
    }
    let envelope = pb::Envelope {
        id: "broadcast".to_owned(),
        user_id: "broadcast".to_owned(),
        body: Some(Body::Notify(notify)),
        ..Default::default()
    };
    nudge_proto::validate::check_envelope(&envelope).map_err(|invalid| invalid.to_string())?;
    match event_from_envelope("broadcast", envelope, Timestamp::UNIX_EPOCH)?.body {
        EventBody::Notify(request) => Ok(request),
        _ => Err("notify is missing".to_owned()),
    }
}

/// Converts one envelope, or says why it can never be stored.
pub fn event_from_envelope(
    agent_id: &str,
    envelope: pb::Envelope,
    ingested_at: Timestamp,
) -> Result<Event, String> {
    check_id("id", &envelope.id)?;
    let user_id = non_empty(envelope.user_id);
    let anonymous_id = non_empty(envelope.anonymous_id);
    if user_id.is_none() && anonymous_id.is_none() {
        return Err("neither user_id nor anonymous_id is set".to_owned());
    }
    if let Some(user_id) = &user_id {
        check_id("user_id", user_id)?;
    }
    if let Some(anonymous_id) = &anonymous_id {
        check_id("anonymous_id", anonymous_id)?;
    }
    let Some(body) = envelope.body else {
        return Err("body is missing (expected track, identify, page, screen, group, alias, session_start, session_end or notify)".to_owned());
    };
    Ok(Event {
        id: envelope.id,
        user_id,
        anonymous_id,
        timestamp: timestamp("timestamp", envelope.timestamp)?,
        sent_at: timestamp("sent_at", envelope.sent_at)?,
        received_at: timestamp("received_at", envelope.received_at)?,
        ingested_at,
        agent_id: agent_id.to_owned(),
        write_key: non_empty(envelope.write_key),
        context: object("context_json", &envelope.context_json)?,
        integrations: object("integrations_json", &envelope.integrations_json)?,
        body: body_from_proto(body)?,
    })
}

fn body_from_proto(body: Body) -> Result<EventBody, String> {
    Ok(match body {
        Body::Track(track) => {
            if track.event.is_empty() {
                return Err("track.event is empty".to_owned());
            }
            let properties = object("track.properties_json", &track.properties_json)?;
            nudge_proto::validate::check_amounts(&properties)
                .map_err(|invalid| invalid.to_string())?;
            EventBody::Track {
                event: track.event,
                properties,
            }
        }
        Body::Identify(identify) => EventBody::Identify {
            traits: object("identify.traits_json", &identify.traits_json)?,
        },
        Body::Page(page) => EventBody::Page {
            name: non_empty(page.name),
            category: non_empty(page.category),
            properties: object("page.properties_json", &page.properties_json)?,
        },
        Body::Screen(screen) => EventBody::Screen {
            name: non_empty(screen.name),
            category: non_empty(screen.category),
            properties: object("screen.properties_json", &screen.properties_json)?,
        },
        Body::Group(group) => {
            if group.group_id.is_empty() {
                return Err("group.group_id is empty".to_owned());
            }
            EventBody::Group {
                group_id: group.group_id,
                traits: object("group.traits_json", &group.traits_json)?,
            }
        }
        Body::Alias(alias) => {
            if alias.previous_id.is_empty() {
                return Err("alias.previous_id is empty".to_owned());
            }
            EventBody::Alias {
                previous_id: alias.previous_id,
            }
        }
        Body::SessionStart(start) => EventBody::SessionStart {
            session_id: start.session_id,
            properties: object("session_start.properties_json", &start.properties_json)?,
        },
        Body::SessionEnd(end) => EventBody::SessionEnd {
            session_id: end.session_id,
            properties: object("session_end.properties_json", &end.properties_json)?,
        },
        Body::Notify(notify) => {
            let priority = match notify.priority() {
                pb::Priority::Low => Priority::Low,
                pb::Priority::Unspecified | pb::Priority::Normal => Priority::Normal,
                pb::Priority::High => Priority::High,
            };
            if notify.r#type.is_empty() {
                return Err("notify.type is empty".to_owned());
            }
            EventBody::Notify(NotifyRequest {
                data: object("notify.data_json", &notify.data_json)?,
                notification_type: notify.r#type,
                template: non_empty(notify.template),
                title: non_empty(notify.title),
                body: non_empty(notify.body),
                channels: notify
                    .channels
                    .iter()
                    .map(|name| {
                        ChannelKind::parse(name)
                            .ok_or_else(|| format!("notify.channels: {name:?} is not a channel"))
                    })
                    .collect::<Result<_, _>>()?,
                priority,
                idempotency_key: non_empty(notify.idempotency_key),
                cost: cost("notify.cost", &notify.cost)?,
            })
        }
    })
}

/// Builds the answer to a Push from what the store did plus what conversion
/// rejected.
pub fn push_response(
    batch_id: String,
    outcome: IngestOutcome,
    mut rejected: Vec<Rejected>,
    received_at: Timestamp,
) -> pb::PushResponse {
    rejected.extend(outcome.rejected);
    pb::PushResponse {
        batch_id,
        stored: outcome.stored,
        // Erased users' events are acknowledged like duplicates: accepted,
        // nothing new stored (the wire has no field of their own).
        duplicates: outcome.duplicates + outcome.erased,
        rejected: rejected
            .into_iter()
            .map(|reject| pb::RejectedEnvelope {
                envelope_id: reject.id,
                reason: reject.reason,
            })
            .collect(),
        received_at: Some(to_proto_timestamp(received_at)),
    }
}

/// A jiff timestamp as the contract's protobuf timestamp.
pub fn to_proto_timestamp(at: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

fn timestamp(
    field: &str,
    value: Option<prost_types::Timestamp>,
) -> Result<Option<Timestamp>, String> {
    let Some(value) = value else { return Ok(None) };
    Timestamp::new(value.seconds, value.nanos)
        .map(Some)
        .map_err(|error| format!("{field} is out of range: {error}"))
}

fn object(field: &str, json: &str) -> Result<JsonObject, String> {
    if json.trim().is_empty() {
        return Ok(JsonObject::new());
    }
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(Value::Null) => Ok(JsonObject::new()),
        Ok(_) => Err(format!("{field} is not a JSON object")),
        Err(error) => Err(format!("{field} is not valid JSON: {error}")),
    }
}

/// A notify's per-message cost override: empty is none; otherwise a
/// non-negative decimal with at most six decimals (what [`Money`] parses).
/// A negative cost is refused rather than read as a credit, so analytics'
/// spend never shrinks because of one bad notify.
fn cost(field: &str, text: &str) -> Result<Option<Money>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if !nudge_proto::validate::is_decimal_cost(text) {
        return Err(format!(
            "{field} is {text:?}; {}",
            nudge_proto::validate::COST_RULE
        ));
    }
    let money: Money = text.parse().map_err(|error| format!("{field}: {error}"))?;
    debug_assert!(money >= Money::ZERO && money <= Money::MAX);
    Ok(Some(money))
}

/// The decimal text of a notify's cost for the wire; empty when none.
pub fn cost_to_proto(cost: Option<Money>) -> String {
    cost.map(|money| money.to_string()).unwrap_or_default()
}

fn check_id(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(format!("{field} is longer than {MAX_ID_BYTES} bytes"));
    }
    if value.contains('\0') {
        return Err(format!("{field} contains a NUL character"));
    }
    Ok(())
}

fn non_empty(value: String) -> Option<String> {
    if value.is_empty() { None } else { Some(value) }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: &str) -> pb::Envelope {
        pb::Envelope {
            id: id.to_owned(),
            user_id: "u1".to_owned(),
            context_json: r#"{"ip":"1.2.3.4"}"#.to_owned(),
            body: Some(Body::Track(pb::Track {
                event: "Signed Up".to_owned(),
                properties_json: r#"{"plan":"pro"}"#.to_owned(),
            })),
            ..Default::default()
        }
    }

    fn reason(envelope: pb::Envelope) -> String {
        event_from_envelope("a", envelope, Timestamp::UNIX_EPOCH).unwrap_err()
    }

    #[test]
    fn converts_a_track() {
        let event = event_from_envelope("agent-1", track("e1"), Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(event.user_id.as_deref(), Some("u1"));
        assert_eq!(event.agent_id, "agent-1");
        assert_eq!(event.context["ip"], "1.2.3.4");
        let EventBody::Track {
            event: name,
            properties,
        } = &event.body
        else {
            panic!("not a track")
        };
        assert_eq!(name, "Signed Up");
        assert_eq!(properties["plan"], "pro");
    }

    #[test]
    fn rejects_invalid_envelopes_with_reasons() {
        assert!(reason(track("")).contains("id is empty"));
        let mut anonymous = track("e");
        anonymous.user_id.clear();
        assert!(reason(anonymous).contains("neither user_id nor anonymous_id"));
        let mut no_body = track("e");
        no_body.body = None;
        assert!(reason(no_body).contains("body is missing"));
        let mut bad_context = track("e");
        bad_context.context_json = "{not json".to_owned();
        assert!(reason(bad_context).contains("context_json is not valid JSON"));
        let mut bad_properties = track("e");
        bad_properties.body = Some(Body::Track(pb::Track {
            event: "x".to_owned(),
            properties_json: "[1]".to_owned(),
        }));
        assert!(reason(bad_properties).contains("track.properties_json is not a JSON object"));
    }

    fn notify_costing(cost: &str) -> pb::Envelope {
        pb::Envelope {
            body: Some(Body::Notify(pb::Notify {
                r#type: "payment_failed".to_owned(),
                cost: cost.to_owned(),
                ..Default::default()
            })),
            ..track("n1")
        }
    }

    #[test]
    fn reads_a_notify_cost() {
        let cost_of = |text: &str| {
            let event = event_from_envelope("a", notify_costing(text), Timestamp::UNIX_EPOCH);
            match event.unwrap().body {
                EventBody::Notify(request) => request.cost,
                other => panic!("not a notify: {other:?}"),
            }
        };
        assert_eq!(cost_of(""), None);
        assert_eq!(cost_of("0.05"), Some(Money(50_000)));
        assert_eq!(cost_of("0"), Some(Money::ZERO));
        assert_eq!(cost_of("1000000000"), Some(Money::MAX));
        assert_eq!(cost_to_proto(Some(Money(50_000))), "0.05");
        assert_eq!(cost_to_proto(None), "");
    }

    #[test]
    fn rejects_a_bad_notify_cost() {
        for bad in ["-0.01", "abc", "0.0000001", "1e3", ".5", "1000000000.5"] {
            let reason = reason(notify_costing(bad));
            assert!(
                reason.starts_with(&format!("notify.cost is {bad:?}; it must be")),
                "{bad}: {reason}"
            );
        }
    }

    #[test]
    fn splits_a_batch() {
        let (events, rejected) =
            events_from_envelopes("a", vec![track("ok"), track("")], Timestamp::UNIX_EPOCH);
        assert_eq!(events.len(), 1);
        assert_eq!(rejected.len(), 1);
    }
}
