//! [`Event`]'s `Deserialize`, by hand.
//!
//! The derived one (the common fields plus a `#[serde(flatten)]` body that
//! is an internally tagged enum) has to buffer every field of the event
//! into serde's generic content tree before it knows the variant, then
//! deserialize the body a second time from that tree. Every stored event
//! is decoded by each of its readers (the engine, analytics), and that
//! double pass was a tenth of the control plane's CPU during ingest
//! (README, storage benchmark). This visitor reads each field once,
//! straight into its place.
//!
//! It takes what the derived `Serialize` writes, and keeps the derived
//! reading's rules: the `type` tag names the body and may come anywhere
//! among the fields; `id`, `ingested_at`, `agent_id` and each variant's
//! required fields must be there; absent optional fields are their
//! defaults; fields no variant knows are ignored. A notify's own fields
//! (rare next to tracked events) are collected and read as a
//! [`NotifyRequest`] at the end.

use std::fmt;

use jiff::Timestamp;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;

use super::{Event, EventBody, EventKind, JsonObject, NotifyRequest};

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

/// A field name: one of the event's or its bodies' (no allocation), or any
/// other (a notify's field, or one nobody reads).
enum Field {
    Id,
    UserId,
    AnonymousId,
    Timestamp,
    SentAt,
    ReceivedAt,
    IngestedAt,
    AgentId,
    WriteKey,
    Context,
    Integrations,
    Type,
    EventName,
    Properties,
    Traits,
    Name,
    Category,
    GroupId,
    PreviousId,
    SessionId,
    Other(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

struct FieldVisitor;

impl Visitor<'_> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
        Ok(match name {
            "id" => Field::Id,
            "user_id" => Field::UserId,
            "anonymous_id" => Field::AnonymousId,
            "timestamp" => Field::Timestamp,
            "sent_at" => Field::SentAt,
            "received_at" => Field::ReceivedAt,
            "ingested_at" => Field::IngestedAt,
            "agent_id" => Field::AgentId,
            "write_key" => Field::WriteKey,
            "context" => Field::Context,
            "integrations" => Field::Integrations,
            "type" => Field::Type,
            "event" => Field::EventName,
            "properties" => Field::Properties,
            "traits" => Field::Traits,
            "name" => Field::Name,
            "category" => Field::Category,
            "group_id" => Field::GroupId,
            "previous_id" => Field::PreviousId,
            "session_id" => Field::SessionId,
            other => Field::Other(other.to_owned()),
        })
    }
}

/// Sets `slot` from the map's next value; a second value for it is an
/// error, as in derived structs.
fn fill<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

fn required<T, E: de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| de::Error::missing_field(name))
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut id: Option<String> = None;
        // `Option<Option<…>>`: the outer for "seen", the inner for `null`.
        let mut user_id: Option<Option<String>> = None;
        let mut anonymous_id: Option<Option<String>> = None;
        let mut timestamp: Option<Option<Timestamp>> = None;
        let mut sent_at: Option<Option<Timestamp>> = None;
        let mut received_at: Option<Option<Timestamp>> = None;
        let mut ingested_at: Option<Timestamp> = None;
        let mut agent_id: Option<String> = None;
        let mut write_key: Option<Option<String>> = None;
        let mut context: Option<JsonObject> = None;
        let mut integrations: Option<JsonObject> = None;
        let mut kind: Option<EventKind> = None;
        let mut event: Option<String> = None;
        let mut properties: Option<JsonObject> = None;
        let mut traits: Option<JsonObject> = None;
        let mut name: Option<Option<String>> = None;
        let mut category: Option<Option<String>> = None;
        let mut group_id: Option<String> = None;
        let mut previous_id: Option<String> = None;
        let mut session_id: Option<String> = None;
        // A notify's fields, or fields no variant knows seen before `type`.
        let mut rest = JsonObject::new();

        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Id => fill(&mut map, &mut id, "id")?,
                Field::UserId => fill(&mut map, &mut user_id, "user_id")?,
                Field::AnonymousId => fill(&mut map, &mut anonymous_id, "anonymous_id")?,
                Field::Timestamp => fill(&mut map, &mut timestamp, "timestamp")?,
                Field::SentAt => fill(&mut map, &mut sent_at, "sent_at")?,
                Field::ReceivedAt => fill(&mut map, &mut received_at, "received_at")?,
                Field::IngestedAt => fill(&mut map, &mut ingested_at, "ingested_at")?,
                Field::AgentId => fill(&mut map, &mut agent_id, "agent_id")?,
                Field::WriteKey => fill(&mut map, &mut write_key, "write_key")?,
                Field::Context => fill(&mut map, &mut context, "context")?,
                Field::Integrations => fill(&mut map, &mut integrations, "integrations")?,
                Field::Type => fill(&mut map, &mut kind, "type")?,
                Field::EventName => fill(&mut map, &mut event, "event")?,
                Field::Properties => fill(&mut map, &mut properties, "properties")?,
                Field::Traits => fill(&mut map, &mut traits, "traits")?,
                Field::Name => fill(&mut map, &mut name, "name")?,
                Field::Category => fill(&mut map, &mut category, "category")?,
                Field::GroupId => fill(&mut map, &mut group_id, "group_id")?,
                Field::PreviousId => fill(&mut map, &mut previous_id, "previous_id")?,
                Field::SessionId => fill(&mut map, &mut session_id, "session_id")?,
                Field::Other(field) => match kind {
                    Some(kind) if kind != EventKind::Notify => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    _ => {
                        rest.insert(field, map.next_value::<Value>()?);
                    }
                },
            }
        }

        let body = match required(kind, "type")? {
            EventKind::Track => EventBody::Track {
                event: required(event, "event")?,
                properties: properties.unwrap_or_default(),
            },
            EventKind::Identify => EventBody::Identify {
                traits: traits.unwrap_or_default(),
            },
            EventKind::Page => EventBody::Page {
                name: name.flatten(),
                category: category.flatten(),
                properties: properties.unwrap_or_default(),
            },
            EventKind::Screen => EventBody::Screen {
                name: name.flatten(),
                category: category.flatten(),
                properties: properties.unwrap_or_default(),
            },
            EventKind::Group => EventBody::Group {
                group_id: required(group_id, "group_id")?,
                traits: traits.unwrap_or_default(),
            },
            EventKind::Alias => EventBody::Alias {
                previous_id: required(previous_id, "previous_id")?,
            },
            EventKind::SessionStart => EventBody::SessionStart {
                session_id: required(session_id, "session_id")?,
                properties: properties.unwrap_or_default(),
            },
            EventKind::SessionEnd => EventBody::SessionEnd {
                session_id: required(session_id, "session_id")?,
                properties: properties.unwrap_or_default(),
            },
            EventKind::Notify => EventBody::Notify(from_object::<NotifyRequest, _>(rest)?),
        };
        Ok(Event {
            id: required(id, "id")?,
            user_id: user_id.flatten(),
            anonymous_id: anonymous_id.flatten(),
            timestamp: timestamp.flatten(),
            sent_at: sent_at.flatten(),
            received_at: received_at.flatten(),
            ingested_at: required(ingested_at, "ingested_at")?,
            agent_id: required(agent_id, "agent_id")?,
            write_key: write_key.flatten(),
            context: context.unwrap_or_default(),
            integrations: integrations.unwrap_or_default(),
            body,
        })
    }
}

/// A notify's fields, collected while reading the event.
fn from_object<T: DeserializeOwned, E: de::Error>(object: JsonObject) -> Result<T, E> {
    T::deserialize(Value::Object(object)).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests;
