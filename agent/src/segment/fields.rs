//! Typed reads of one call's JSON object, with errors that name the field.
//!
//! JSON `null` is treated as absent everywhere (clients serialise unset
//! optionals as `null`), and so is an empty string for ids and names.

use serde_json::{Map, Value};

use super::error::{At, SegmentError};

type Result<T> = std::result::Result<T, SegmentError>;

/// One call's (or a batch's top-level) JSON object and where it sits.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) map: &'a Map<String, Value>,
    pub(crate) at: At,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>, at: At) -> Self {
        Self { map, at }
    }

    /// The field's value, `None` when absent or `null`.
    pub(crate) fn value(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|value| !value.is_null())
    }

    fn invalid(&self, name: &str, problem: impl Into<String>) -> SegmentError {
        SegmentError::invalid(self.at, name, problem)
    }

    /// A string field; `""` counts as absent.
    pub(crate) fn string(&self, name: &str) -> Result<Option<&'a str>> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => {
                Err(self.invalid(name, format!("must be a string, found {}", kind(other))))
            }
        }
    }

    pub(crate) fn required_string(&self, name: &'static str) -> Result<&'a str> {
        self.string(name)?.ok_or(SegmentError::MissingField {
            at: self.at,
            field: name,
        })
    }

    /// An identifier: a string, or a number that is stringified (Segment's
    /// API accepts numeric user ids, and so do its libraries).
    pub(crate) fn id(&self, name: &str) -> Result<Option<String>> {
        let id = match self.value(name) {
            None => return Ok(None),
            Some(Value::String(text)) if text.is_empty() => return Ok(None),
            Some(Value::String(text)) => text.clone(),
            Some(Value::Number(number)) => number.to_string(),
            Some(other) => {
                return Err(self.invalid(
                    name,
                    format!("must be a string or a number, found {}", kind(other)),
                ));
            }
        };
        Ok(Some(id))
    }

    /// An id that is also a dedupe key downstream, so it is bounded.
    pub(crate) fn bounded_id(&self, name: &str, max_chars: usize) -> Result<Option<String>> {
        let id = self.id(name)?;
        if let Some(id) = &id {
            let chars = id.chars().count();
            if chars > max_chars {
                return Err(self.invalid(
                    name,
                    format!("is {chars} characters long, over the limit of {max_chars}"),
                ));
            }
        }
        Ok(id)
    }

    /// A JSON object field as JSON text, `""` when absent.
    pub(crate) fn object_json(&self, name: &str) -> Result<String> {
        match self.value(name) {
            None => Ok(String::new()),
            // `to_string` writes straight into a byte buffer; `Value`'s
            // `Display` (`value.to_string()`) goes through the formatting
            // machinery and cost twice as many instructions per call.
            Some(value @ Value::Object(_)) => Ok(serde_json::to_string(value)
                .expect("a JSON value always serialises (its keys are strings)")),
            Some(other) => {
                Err(self.invalid(name, format!("must be an object, found {}", kind(other))))
            }
        }
    }

    /// A point in time: RFC 3339 / ISO 8601 with `Z` or a UTC offset and
    /// optional fractional seconds.
    pub(crate) fn timestamp(&self, name: &str) -> Result<Option<prost_types::Timestamp>> {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        let parsed: jiff::Timestamp = text.parse().map_err(|error| {
            self.invalid(
                name,
                format!(
                    "must be an RFC 3339 timestamp with `Z` or a UTC offset, \
                     like 2024-05-01T12:00:00.123Z ({error})"
                ),
            )
        })?;
        Ok(Some(to_proto(parsed)))
    }
}

/// Converts to the protobuf form, whose `nanos` must be in `0..1e9` even
/// before 1970 (jiff gives a negative sub-second part there).
pub(crate) fn to_proto(time: jiff::Timestamp) -> prost_types::Timestamp {
    let mut seconds = time.as_second();
    let mut nanos = time.subsec_nanosecond();
    if nanos < 0 {
        seconds -= 1;
        nanos += 1_000_000_000;
    }
    debug_assert!((0..1_000_000_000).contains(&nanos));
    prost_types::Timestamp { seconds, nanos }
}

/// The JSON type of a value, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
