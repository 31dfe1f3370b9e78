//! Typed reads of one call's JSON object, with errors that name the field.
//!
//! JSON `null` is treated as absent everywhere (clients serialise unset
//! optionals as `null`), and so is an empty string for ids and names.

use std::borrow::Cow;

use super::error::{At, SegmentError};
use super::json::{Json, Kind, Object};

type Result<T> = std::result::Result<T, SegmentError>;

/// One call's (or a batch's top-level) JSON object and where it sits.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) map: &'a Object<'a>,
    pub(crate) at: At,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Object<'a>, at: At) -> Self {
        Self { map, at }
    }

    /// The field's value, `None` when absent or `null`.
    pub(crate) fn value(&self, name: &str) -> Option<Json<'a>> {
        self.map.get(name).filter(|value| !value.is_null())
    }

    fn invalid(&self, name: &str, problem: impl Into<String>) -> SegmentError {
        SegmentError::invalid(self.at, name, problem)
    }

    /// A string field; `""` counts as absent.
    pub(crate) fn string(&self, name: &str) -> Result<Option<Cow<'a, str>>> {
        let Some(value) = self.value(name) else {
            return Ok(None);
        };
        match value.as_str() {
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => Ok(Some(text)),
            None => Err(self.invalid(
                name,
                format!("must be a string, found {}", value.kind().article()),
            )),
        }
    }

    pub(crate) fn required_string(&self, name: &'static str) -> Result<Cow<'a, str>> {
        self.string(name)?.ok_or(SegmentError::MissingField {
            at: self.at,
            field: name,
        })
    }

    /// An identifier: a string, or a number that is stringified (Segment's
    /// API accepts numeric user ids, and so do its libraries).
    pub(crate) fn id(&self, name: &str) -> Result<Option<String>> {
        let Some(value) = self.value(name) else {
            return Ok(None);
        };
        let id = match value.kind() {
            Kind::String => value.as_str().map(Cow::into_owned),
            Kind::Number => value.number_text(),
            other => {
                return Err(self.invalid(
                    name,
                    format!("must be a string or a number, found {}", other.article()),
                ));
            }
        };
        Ok(id.filter(|id| !id.is_empty()))
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

    /// A JSON object field as the JSON text sent, `""` when absent.
    pub(crate) fn object_json(&self, name: &str) -> Result<String> {
        match self.value(name) {
            None => Ok(String::new()),
            Some(value) if value.kind() == Kind::Object => Ok(value.text().to_owned()),
            Some(other) => Err(self.invalid(
                name,
                format!("must be an object, found {}", other.kind().article()),
            )),
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
