//! Reading a JSON value into a serde type the way the OpenAPI document
//! reads it: a struct comes from a JSON object only.
//!
//! serde's derived structs also take a JSON array (their fields in order),
//! so `{"types": {"invoice": []}}` or `"quiet_hours": ["22:00", "07:00",
//! "UTC"]` would pass where the document allows only objects. [`check`]
//! deserializes `T` once more through this module's [`Deserializer`], which
//! refuses an array (or anything else) where a struct is expected and names
//! the place (`types.invoice`). Everything else is handed to the visitor
//! as `serde_json` would hand it.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde_json::Value;

/// `Ok` when `value` reads into `T` with every struct an object; else the
/// reason, naming where.
pub fn check<T: DeserializeOwned>(value: Value) -> Result<(), String> {
    T::deserialize(Strict {
        value,
        path: String::new(),
    })
    .map(drop)
    .map_err(|Error(message)| message)
}

#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<M: fmt::Display>(message: M) -> Self {
        Error(message.to_string())
    }
}

/// A value and where it sits in the body (`types.invoice`, `ids[3]`).
struct Strict {
    value: Value,
    path: String,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de> Deserializer<'de> for Strict {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(value) => visitor.visit_bool(value),
            Value::Number(number) => match (number.as_u64(), number.as_i64(), number.as_f64()) {
                (Some(value), _, _) => visitor.visit_u64(value),
                (None, Some(value), _) => visitor.visit_i64(value),
                (None, None, Some(value)) => visitor.visit_f64(value),
                (None, None, None) => Err(Error(format!("{}: not a number", self.path))),
            },
            Value::String(value) => visitor.visit_string(value),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.into_iter().enumerate(),
                path: self.path,
            }),
            Value::Object(entries) => visitor.visit_map(Entries {
                entries: entries.into_iter(),
                next_value: None,
                path: self.path,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.value.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if !self.value.is_object() {
            let place = if self.path.is_empty() {
                "the body"
            } else {
                &self.path
            };
            return Err(Error(format!("{place}: expected a JSON object")));
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Value::String(variant) => visitor.visit_enum(variant.into_deserializer()),
            // Enums with data are not in this API's bodies; serde_json reads them.
            other => other
                .deserialize_enum(name, variants, visitor)
                .map_err(|error| Error(error.to_string())),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
        ignored_any
    }
}

struct Items {
    items: std::iter::Enumerate<std::vec::IntoIter<Value>>,
    path: String,
}

impl<'de> SeqAccess<'de> for Items {
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        let Some((index, value)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{index}]", self.path);
        seed.deserialize(Strict { value, path }).map(Some)
    }
}

struct Entries {
    entries: serde_json::map::IntoIter,
    /// The value of the key just read, with its path.
    next_value: Option<(Value, String)>,
    path: String,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let path = child(&self.path, &key);
        self.next_value = Some((value, path.clone()));
        seed.deserialize(Strict {
            value: Value::String(key),
            path,
        })
        .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let (value, path) = self
            .next_value
            .take()
            .ok_or_else(|| Error("a map value without its key".to_owned()))?;
        seed.deserialize(Strict { value, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::NewDevice;
    use crate::preferences::UserPreferences;
    use serde_json::json;

    #[test]
    fn structs_come_from_objects_only() {
        let refused = |value: Value| check::<UserPreferences>(value).unwrap_err();
        assert_eq!(refused(json!([])), "the body: expected a JSON object");
        assert_eq!(
            refused(json!({"types": {"invoice": []}})),
            "types.invoice: expected a JSON object"
        );
        assert_eq!(
            refused(json!({"quiet_hours": ["22:00", "07:00", "UTC"]})),
            "quiet_hours: expected a JSON object"
        );
        let device = json!({"platform": "web_push", "subscription": {"endpoint": "https://x", "keys": ["k", "a"]}});
        assert_eq!(
            check::<NewDevice>(device).unwrap_err(),
            "subscription.keys: expected a JSON object"
        );
    }

    #[test]
    fn everything_else_reads_as_serde_json_reads_it() {
        let document = json!({
            "channels": {"email": false},
            "types": {"invoice": {"channels": {"sms": true}, "frequency": "daily"}, "b": {"frequency": null}},
            "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "UTC"},
            "timezone": null,
        });
        assert_eq!(check::<UserPreferences>(document), Ok(()));
        assert!(
            check::<UserPreferences>(json!({"types": {"a": {"frequency": "sometimes"}}})).is_err()
        );
    }
}
