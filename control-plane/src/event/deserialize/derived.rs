//! The derived reading of an [`Event`] that the hand-written one in
//! `deserialize.rs` replaced, field for field: the common fields plus a
//! `#[serde(flatten)]`, internally tagged body. It is the reference the
//! module's tests hold the new reading to, and the baseline of
//! `benches/event_decode.rs`; both include this file by path, and the
//! library itself does not use it. The includer imports `Event`,
//! `EventBody` and `JsonObject`.

use jiff::Timestamp;
use serde::Deserialize;

use super::{Event, EventBody, JsonObject};

#[derive(Deserialize)]
pub struct Derived {
    pub id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub anonymous_id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    #[serde(default)]
    pub sent_at: Option<Timestamp>,
    #[serde(default)]
    pub received_at: Option<Timestamp>,
    pub ingested_at: Timestamp,
    pub agent_id: String,
    #[serde(default)]
    pub write_key: Option<String>,
    #[serde(default)]
    pub context: JsonObject,
    #[serde(default)]
    pub integrations: JsonObject,
    #[serde(flatten)]
    pub body: EventBody,
}

impl From<Derived> for Event {
    fn from(derived: Derived) -> Event {
        Event {
            id: derived.id,
            user_id: derived.user_id,
            anonymous_id: derived.anonymous_id,
            timestamp: derived.timestamp,
            sent_at: derived.sent_at,
            received_at: derived.received_at,
            ingested_at: derived.ingested_at,
            agent_id: derived.agent_id,
            write_key: derived.write_key,
            context: derived.context,
            integrations: derived.integrations,
            body: derived.body,
        }
    }
}
