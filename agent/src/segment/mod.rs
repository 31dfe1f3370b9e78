//! Segment tracking calls (and Nudge's own session and notify calls): parse a
//! request body, validate it, and turn it into [`Envelope`]s for the outbox.
//!
//! This is the domain side of intake; it knows nothing of HTTP (the `http`
//! module reads bodies, authenticates and maps [`SegmentError`] to statuses).
//!
//! # What it promises
//!
//! * Field names and limits follow the Segment HTTP Tracking API:
//!   `messageId`, `userId`, `anonymousId`, `event`, `properties`, `traits`,
//!   `context`, `integrations`, `timestamp`, `sentAt`, `name`, `category`,
//!   `groupId`, `previousId`, `writeKey`; at most [`MAX_CALL_BYTES`] of JSON
//!   per call and [`MAX_BATCH_BYTES`] per batch body. Unknown fields are
//!   ignored (libraries send `type`, `channel`, `_metadata`, …).
//! * Every envelope has an id: the client's `messageId` (at most
//!   [`MAX_ID_CHARS`] characters, since the control plane dedupes on it) or a
//!   new UUIDv7.
//! * A request is all or nothing. Segment's own API accepts the valid items
//!   of a batch and silently drops the others; Nudge refuses the whole
//!   request and names the first bad item, so a client can fix and resend it
//!   without guessing which items were kept (resends are harmless: ids
//!   dedupe).
//! * Object fields (`properties`, `traits`, `context`, `integrations`, notify
//!   `data`) must be JSON objects when present and are kept as the JSON text
//!   the client sent, byte for byte (`""` when absent); timestamps must
//!   carry `Z` or a UTC offset. A body is never parsed into a tree (see
//!   [`json`]): it is checked once and fields are decoded as they are read
//!   (a batch's items are found once, when the body is parsed).
//! * Batch-level `context`, `integrations`, `sentAt` and `writeKey` apply to
//!   items that do not set their own (a fallback, not a deep merge).

mod calls;
mod error;
mod fields;
mod json;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use nudge_proto::v1::Envelope;

pub use error::{At, SegmentError};

use fields::Fields;
use json::{Json, Kind, Object};

/// Largest JSON text of one call, as Segment documents it (32 KB).
pub const MAX_CALL_BYTES: usize = 32 * 1024;
/// Largest body of a batch request, as Segment documents it (500 KB).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Longest `messageId` / `idempotencyKey` accepted.
pub const MAX_ID_CHARS: usize = 256;

/// The kinds of call intake accepts, one per envelope body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
    SessionStart,
    SessionEnd,
    Notify,
}

impl CallKind {
    /// The name used in messages (and, for Segment calls, the `type` value).
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Track => "track",
            CallKind::Identify => "identify",
            CallKind::Page => "page",
            CallKind::Screen => "screen",
            CallKind::Group => "group",
            CallKind::Alias => "alias",
            CallKind::SessionStart => "session start",
            CallKind::SessionEnd => "session end",
            CallKind::Notify => "notify",
        }
    }

    /// The Segment call with this `type` value; only these may sit in a batch.
    pub fn from_segment_type(type_: &str) -> Option<Self> {
        Some(match type_ {
            "track" => CallKind::Track,
            "identify" => CallKind::Identify,
            "page" => CallKind::Page,
            "screen" => CallKind::Screen,
            "group" => CallKind::Group,
            "alias" => CallKind::Alias,
            _ => return None,
        })
    }

    /// Whether this is a Segment spec call (whose body may carry a `type`).
    pub fn is_segment(self) -> bool {
        !matches!(
            self,
            CallKind::SessionStart | CallKind::SessionEnd | CallKind::Notify
        )
    }
}

/// What an intake endpoint takes: one call of a kind, or a Segment batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Call(CallKind),
    Batch,
}

impl Endpoint {
    /// The largest body this endpoint accepts (after decompression).
    pub fn body_limit(self) -> usize {
        match self {
            Endpoint::Call(_) => MAX_CALL_BYTES,
            Endpoint::Batch => MAX_BATCH_BYTES,
        }
    }

    fn at(self) -> At {
        match self {
            Endpoint::Call(kind) => At::Call(kind),
            Endpoint::Batch => At::Batch,
        }
    }
}

/// What the wire layer knows about a request besides its body.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The write key from HTTP Basic auth, `""` when none; body `writeKey`
    /// fields take precedence for the envelopes they belong to.
    pub write_key: String,
    /// When the agent accepted the request.
    pub received_at: prost_types::Timestamp,
}

/// A body that is a well-formed JSON object, not yet validated as calls.
///
/// Split from [`Request::into_envelopes`] so the wire layer can check the
/// body's `writeKey`s before spending time on (and answering with) details.
/// It borrows the body's bytes: fields are read from them in place.
#[derive(Debug)]
pub struct Request<'a> {
    endpoint: Endpoint,
    body: Object<'a>,
    /// A batch's items, each with its members when it is an object; read
    /// once here for the three passes below (empty when `batch` is not an
    /// array, which `into_envelopes` reports).
    items: Vec<(Json<'a>, Option<Object<'a>>)>,
}

impl<'a> Request<'a> {
    /// Checks size, UTF-8 and JSON syntax, and that the top level is an object.
    pub fn parse(endpoint: Endpoint, body: &'a [u8]) -> Result<Self, SegmentError> {
        let limit = endpoint.body_limit();
        if body.len() > limit {
            return Err(SegmentError::BodyTooLarge {
                size: body.len(),
                limit,
            });
        }
        let text = std::str::from_utf8(body).map_err(|error| SegmentError::InvalidUtf8 {
            offset: error.valid_up_to(),
        })?;
        let value = Json::parse(text).map_err(|error| SegmentError::MalformedJson {
            detail: error.to_string(),
        })?;
        match value.as_object() {
            Some(body) => {
                let items = match endpoint {
                    Endpoint::Batch => body
                        .get("batch")
                        .and_then(Json::as_array)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|item| (item, item.as_object()))
                        .collect(),
                    Endpoint::Call(_) => Vec::new(),
                };
                Ok(Self {
                    endpoint,
                    body,
                    items,
                })
            }
            None => Err(SegmentError::MalformedJson {
                detail: format!(
                    "the top level must be an object, found {}",
                    value.kind().article()
                ),
            }),
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Every string `writeKey` in the body: the top level's and, in a batch,
    /// each item's. Values of the wrong type are left for validation to
    /// report.
    pub fn write_keys(&self) -> Vec<Cow<'a, str>> {
        fn own<'a>(map: &Object<'a>) -> Option<Cow<'a, str>> {
            map.get("writeKey")
                .and_then(Json::as_str)
                .filter(|key| !key.is_empty())
        }
        let mut keys: Vec<Cow<'a, str>> = own(&self.body).into_iter().collect();
        keys.extend(
            self.items
                .iter()
                .filter_map(|(_, item)| own(item.as_ref()?)),
        );
        keys
    }

    /// The first contact trait (see [`nudge_proto::contact`]) of each
    /// identify call in the body, with where the call sits: what the wire
    /// layer refuses from an untrusted caller. Only identify traits are
    /// looked at, because only they become the profile the control plane
    /// takes addresses from (`context.traits` and group traits do not). A
    /// trait counts whatever its value, `null` included: merged into the
    /// profile, `null` would erase the user's address.
    pub fn contact_traits(&self) -> Vec<(At, &'static str)> {
        fn first(call: &Object<'_>) -> Option<&'static str> {
            let traits = call.get("traits")?.as_object()?;
            nudge_proto::contact::TRAITS
                .into_iter()
                .find(|name| traits.contains_key(name))
        }
        match self.endpoint {
            Endpoint::Call(CallKind::Identify) => first(&self.body)
                .map(|name| (At::Call(CallKind::Identify), name))
                .into_iter()
                .collect(),
            Endpoint::Call(_) => Vec::new(),
            Endpoint::Batch => self
                .items
                .iter()
                .enumerate()
                .filter_map(|(index, (_, item))| {
                    let call = item.as_ref()?;
                    if call.get("type")?.as_str()? != "identify" {
                        return None;
                    }
                    let at = At::Item {
                        index,
                        kind: Some(CallKind::Identify),
                    };
                    Some((at, first(call)?))
                })
                .collect(),
        }
    }

    /// Validates every call and builds one envelope per call, in order.
    /// All or nothing: the first invalid call fails the whole request.
    pub fn into_envelopes(&self, received: &Received) -> Result<Vec<Envelope>, SegmentError> {
        let top = Fields::new(&self.body, self.endpoint.at());
        let mut defaults = calls::Defaults {
            write_key: received.write_key.clone(),
            received_at: received.received_at,
            ..calls::Defaults::default()
        };
        if let Some(key) = top.string("writeKey")? {
            defaults.write_key = key.into_owned();
        }
        match self.endpoint {
            Endpoint::Call(kind) => Ok(vec![calls::build(kind, top, &defaults)?]),
            Endpoint::Batch => {
                defaults.context_json = top.object_json("context")?;
                defaults.integrations_json = top.object_json("integrations")?;
                defaults.sent_at = top.timestamp("sentAt")?;
                let Some(batch) = top.value("batch") else {
                    return Err(SegmentError::MissingField {
                        at: At::Batch,
                        field: "batch",
                    });
                };
                if batch.kind() != Kind::Array {
                    return Err(SegmentError::invalid(
                        At::Batch,
                        "batch",
                        format!("must be an array, found {}", batch.kind().article()),
                    ));
                }
                self.items
                    .iter()
                    .enumerate()
                    .map(|(index, (item, map))| {
                        calls::build_item(index, *item, map.as_ref(), &defaults)
                    })
                    .collect()
            }
        }
    }
}
