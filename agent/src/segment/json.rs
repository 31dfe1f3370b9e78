//! A request body's JSON read without building a tree: the body is checked
//! once, then each object keeps its members as slices of the body's text,
//! and a field is decoded only when a call reads it.
//!
//! Why: parsing every body into a `serde_json::Value` tree, then writing
//! its object fields back out as text, was the largest part of the agent's
//! user-space work per call (a few dozen allocations per call; issue 14).
//! Object fields (`properties`, `traits`, `context`, …) are now passed on
//! as the exact text the client sent; of them only a track's amount
//! properties are decoded (for the bound the control plane sums within).
//!
//! # What it promises
//!
//! * [`check`] accepts exactly what `serde_json::from_str::<Value>` accepts
//!   (the same parser walks every string, escape and number, with the same
//!   nesting limit), so the control plane can always parse the text passed
//!   on. A structural scan alone would not do: it lets a lone surrogate
//!   such as `"\ud800"` through, which the control plane would then refuse.
//!   One exception, refused here though a `Value` parse may take it: an
//!   object key `$serde_json::private::RawValue`. serde_json's `raw_value`
//!   feature (on in this workspace: axum asks for it) makes a `Value` parse
//!   read an object whose first key is that name as embedded JSON text, so
//!   the control plane would read such an object differently from the
//!   text sent, or refuse it. It is serde_json's private name; no client
//!   sends it.
//! * Slices are then found by a small scanner that relies on the text
//!   being checked (it only tracks strings and brackets).
//! * An object whose name repeats reads as its last member, as a `Value`
//!   map does.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Checks that `text` is one well-formed JSON value, as a `Value` parse
/// would, without allocating one.
pub(crate) fn check(text: &str) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Check.deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Walks any value, decoding (and so validating) every string and number.
#[derive(Clone, Copy)]
struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(Check)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        while members.next_key_seed(Name)?.is_some() {
            members.next_value_seed(Check)?;
        }
        Ok(())
    }
}

/// serde_json's private marker of embedded raw JSON (see the module doc).
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// An object key: any string but [`RAW_VALUE_KEY`].
#[derive(Clone, Copy)]
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<(), E> {
        if name == RAW_VALUE_KEY {
            Err(E::custom(format_args!(
                "the object key {RAW_VALUE_KEY:?} is reserved by the JSON parser"
            )))
        } else {
            Ok(())
        }
    }
}

/// One JSON value of a checked body: its exact text, decoded on demand.
/// Only made from checked text ([`Json::parse`] and the values inside it),
/// which is what the scanning below relies on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Json<'a>(&'a str);

/// The JSON types, for reads and for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    /// The type as messages name it ("must be a string, found a number").
    pub(crate) fn article(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Boolean => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

impl<'a> Json<'a> {
    /// A whole body, checked (see [`check`]).
    pub(crate) fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        check(text)?;
        // Checked text is one value between JSON whitespace: no need to
        // scan for where it ends.
        Ok(Json(
            text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r')),
        ))
    }

    /// The value's JSON text, exactly as sent (no surrounding whitespace).
    pub(crate) fn text(self) -> &'a str {
        self.0
    }

    pub(crate) fn kind(self) -> Kind {
        // A checked value's first byte tells its type.
        match self.0.as_bytes().first() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't' | b'f') => Kind::Boolean,
            Some(b'n') => Kind::Null,
            _ => Kind::Number,
        }
    }

    pub(crate) fn is_null(self) -> bool {
        self.kind() == Kind::Null
    }

    /// The string, borrowed from the body unless it holds escapes.
    pub(crate) fn as_str(self) -> Option<Cow<'a, str>> {
        (self.kind() == Kind::String).then(|| string(self.0))
    }

    /// The number as serde_json prints it (`5`, `0.05`, `1e-7`), so ids
    /// and costs sent as numbers read as they always have.
    pub(crate) fn number_text(self) -> Option<String> {
        if self.kind() != Kind::Number {
            return None;
        }
        let number: serde_json::Number = serde_json::from_str(self.0).ok()?;
        Some(number.to_string())
    }

    pub(crate) fn as_object(self) -> Option<Object<'a>> {
        if self.kind() != Kind::Object {
            return None;
        }
        let mut members = Vec::new();
        let bytes = self.0.as_bytes();
        let mut at = skip_space(bytes, 1);
        while bytes.get(at) == Some(&b'"') {
            let name_end = value_end(bytes, at);
            let name = string(&self.0[at..name_end]);
            // Past the `:` to the value.
            let start = skip_space(bytes, skip_space(bytes, name_end) + 1);
            let end = value_end(bytes, start);
            members.push((name, Json(&self.0[start..end])));
            at = next_item(bytes, end);
        }
        Some(Object { members })
    }

    pub(crate) fn as_array(self) -> Option<Vec<Json<'a>>> {
        if self.kind() != Kind::Array {
            return None;
        }
        let mut items = Vec::new();
        let bytes = self.0.as_bytes();
        let mut at = skip_space(bytes, 1);
        while at < bytes.len() && bytes[at] != b']' {
            let end = value_end(bytes, at);
            items.push(Json(&self.0[at..end]));
            at = next_item(bytes, end);
        }
        Some(items)
    }

    /// The value as a `serde_json::Value` tree, for the few reads that need
    /// one (an amount property); `None` cannot happen for checked text.
    pub(crate) fn to_value(self) -> Option<serde_json::Value> {
        serde_json::from_str(self.0).ok()
    }
}

/// One JSON object's members, in order, values not decoded.
#[derive(Debug)]
pub(crate) struct Object<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Object<'a> {
    /// The member's value; the last one when the name repeats.
    pub(crate) fn get(&self, name: &str) -> Option<Json<'a>> {
        self.members
            .iter()
            .rev()
            .find(|(member, _)| member == name)
            .map(|(_, value)| *value)
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

// The scanner. Every function takes checked text, so it only needs to tell
// strings (whose brackets and commas do not count) from structure; on text
// that was not checked it stops at the end instead of panicking.

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Where the value starting at `start` ends (one past its last byte).
fn value_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(b'"') => string_end(bytes, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut at = start;
            while let Some(&byte) = bytes.get(at) {
                match byte {
                    b'"' => {
                        at = string_end(bytes, at);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return at + 1;
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
            bytes.len()
        }
        // A number or a literal: up to the next delimiter.
        _ => {
            let mut at = start;
            while !matches!(
                bytes.get(at),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                at += 1;
            }
            at
        }
    }
}

/// Where the string starting at the quote `start` ends (past its quote).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start + 1;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'\\' => at += 2,
            b'"' => return at + 1,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// After a member or item ending at `end`: the start of the next one, or
/// the closing bracket.
fn next_item(bytes: &[u8], end: usize) -> usize {
    let at = skip_space(bytes, end);
    if bytes.get(at) == Some(&b',') {
        skip_space(bytes, at + 1)
    } else {
        at
    }
}

/// A checked string literal's value, borrowed when it has no escapes.
fn string(literal: &str) -> Cow<'_, str> {
    let inner = &literal[1..literal.len() - 1];
    if inner.contains('\\') {
        Cow::Owned(serde_json::from_str(literal).unwrap_or_default())
    } else {
        Cow::Borrowed(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` must refuse and accept exactly what a `Value` parse does.
    #[test]
    fn check_agrees_with_a_value_parse() {
        for text in [
            r#"{"a":1}"#,
            r#" {"a": [1, 2.5, -3e2, true, null, "x\n\u00e9"]} "#,
            r#"{"s":"\ud83d\ude00"}"#,
            r#"{"s":"\ud800"}"#,
            r#"{"s":"\udc00x"}"#,
            r#"{"n":1e400}"#,
            r#"{"n":-0}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"a":"tab	inside"}"#,
            r#"{"a":"\x"}"#,
            "[1,2]",
            "\"text\"",
            "",
            "{",
        ] {
            let expected = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(check(text).is_ok(), expected, "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            check(&deep).is_ok(),
            serde_json::from_str::<serde_json::Value>(&deep).is_ok()
        );
    }

    #[test]
    fn values_read_lazily_and_exactly() {
        let body =
            Json::parse(r#"{"a": "x\"y", "n": 12.50, "o": {"k": [1, 2]}, "a": "last"}"#).unwrap();
        let object = body.as_object().unwrap();
        assert_eq!(object.get("a").unwrap().as_str().unwrap(), "last");
        assert_eq!(object.get("n").unwrap().number_text().unwrap(), "12.5");
        assert_eq!(object.get("o").unwrap().text(), r#"{"k": [1, 2]}"#);
        assert_eq!(object.get("o").unwrap().kind(), Kind::Object);
        assert!(object.get("missing").is_none());
        let escaped = Json::parse(r#"{"e":"x\"y", "k\u0065y": "\u00e9"}"#)
            .unwrap()
            .as_object()
            .unwrap();
        assert_eq!(escaped.get("e").unwrap().as_str().unwrap(), "x\"y");
        assert_eq!(escaped.get("key").unwrap().as_str().unwrap(), "é");
    }

    /// The scanner finds every member and item of nested, spaced, escaped
    /// text, the same as a `Value` parse of it.
    #[test]
    fn scanning_agrees_with_a_value_parse() {
        let text = r#" { "a" : [ 1 , "],}" , { "b" : "\\" } , [ ] , { } ] ,
            "c":-0.5e+3,"d":true,"e":null,"f":"\"{","g":{"h":[[],[{}]]},"": "" } "#;
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let object = Json::parse(text).unwrap().as_object().unwrap();
        let expected = value.as_object().unwrap();
        assert_eq!(object.members.len(), expected.len());
        for (name, member) in expected {
            let scanned = object.get(name).unwrap();
            assert_eq!(&scanned.to_value().unwrap(), member, "{name}");
        }
        let items = object.get("a").unwrap().as_array().unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(items[1].as_str().unwrap(), "],}");
        assert!(Json::parse("[]").unwrap().as_array().unwrap().is_empty());
        assert!(
            Json::parse("{ }")
                .unwrap()
                .as_object()
                .unwrap()
                .members
                .is_empty()
        );
    }

    /// serde_json's raw-value marker key is refused wherever it sits: a
    /// `Value` parse in either program may read such an object as embedded
    /// JSON text rather than as sent (axum switches the feature on).
    #[test]
    fn the_raw_value_key_is_refused() {
        for text in [
            r#"{"$serde_json::private::RawValue":5}"#,
            r#"{"$serde_json::private::RawValue":"[1]"}"#,
            r#"{"a":{"b":1,"$serde_json::private::RawValue":"1"}}"#,
            r#"{"a":[{"\u0024serde_json::private::RawValue":"1"}]}"#,
        ] {
            let error = check(text).unwrap_err();
            assert!(error.to_string().contains("reserved"), "{text}: {error}");
        }
        check(r#"{"$serde_json":1,"a":"$serde_json::private::RawValue"}"#).unwrap();
    }
}
