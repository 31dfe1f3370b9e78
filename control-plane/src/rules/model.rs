//! [`Rule`]: one `[[rules]]` table of the engine config, and its checks.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channels::ChannelKind;
use crate::event::{JsonObject, NotifyRequest, Priority};
use crate::notifications::NewNotification;

/// "On track event `on` (where every `when` holds) notify type `notify`",
/// at once or `delay` later unless the user sends `unless` first.
///
/// ```toml
/// [[rules]]
/// name = "cart-reminder"
/// on = "cart_add"
/// notify = "cart_reminder"
/// when = [ { property = "total", op = "gte", value = 20 } ]
/// delay = "1h"
/// unless = "purchase"
/// channels = ["email"]
/// priority = "normal"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique among the rules; `[A-Za-z0-9_.-]`, at most 128 characters.
    pub name: String,
    /// The track event name that fires it.
    pub on: String,
    /// The notification type it creates.
    pub notify: String,
    /// Conditions on the event's properties; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
    /// Fire this long after the event instead of at once (humantime: "1h").
    #[serde(
        default,
        with = "opt_humantime",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<Duration>,
    /// A track event that, sent by the same user within `delay`, cancels
    /// the trigger. Needs `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<String>,
    /// Channels to use; empty means the type's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    #[serde(default)]
    pub priority: Priority,
}

/// One condition on a property: `property` is a dotted path into the
/// event's properties (`items.0.sku`: object keys and array indexes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub property: String,
    pub op: Op,
    /// What to compare with; `exists` takes none (or `false` for "absent").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// How a [`Condition`] compares. An unknown op is refused when the config
/// is parsed (serde names the allowed ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal JSON values; numbers compare by value (`20` equals `20.0`).
    Eq,
    /// Not [`Op::Eq`]; an absent property is not equal.
    Ne,
    /// Numbers only: a non-number property does not match.
    Gt,
    Gte,
    Lt,
    Lte,
    /// A string property containing the string value, or an array property
    /// with an element equal to the value.
    Contains,
    /// The property is present and not null (`value = false`: the opposite).
    Exists,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Contains => "contains",
            Op::Exists => "exists",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Op::Gt | Op::Gte | Op::Lt | Op::Lte)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a rule (or a set of rules) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule name {0:?} is invalid: use 1 to 128 characters of A-Z a-z 0-9 _ . -")]
    InvalidName(String),
    #[error("rule {0:?} is defined twice")]
    Duplicate(String),
    #[error("rule {rule:?}: `{field}` must not be empty")]
    Empty { rule: String, field: &'static str },
    #[error(
        "rule {rule:?}: `unless = {unless:?}` needs a `delay` (the window in which it cancels)"
    )]
    UnlessWithoutDelay { rule: String, unless: String },
    #[error("rule {rule:?}: `delay` must be longer than zero")]
    ZeroDelay { rule: String },
    #[error("rule {rule:?}: unknown channel {channel:?}")]
    UnknownChannel { rule: String, channel: String },
    #[error("rule {rule:?}: condition {index} (`{property}` {op}): {problem}")]
    Condition {
        rule: String,
        index: usize,
        property: String,
        op: Op,
        problem: &'static str,
    },
}

/// The source id of the notification a rule creates for an event:
/// `rule:<name>:<event id>`. The notification store creates one
/// notification per source id, which makes firing idempotent.
pub fn source_id(rule: &str, event_id: &str) -> String {
    format!("rule:{rule}:{event_id}")
}

/// Checks every rule and that names are unique.
pub fn validate_rules(rules: &[Rule]) -> Result<(), RuleError> {
    let mut names = HashSet::new();
    for rule in rules {
        rule.validate()?;
        if !names.insert(rule.name.as_str()) {
            return Err(RuleError::Duplicate(rule.name.clone()));
        }
    }
    Ok(())
}

impl Rule {
    /// Checks what serde cannot: the name, empty fields, `unless` without
    /// `delay`, channels, and each condition's value against its op.
    pub fn validate(&self) -> Result<(), RuleError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 128
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            return Err(RuleError::InvalidName(self.name.clone()));
        }
        let rule = || self.name.clone();
        for (field, value) in [("on", &self.on), ("notify", &self.notify)] {
            if value.is_empty() {
                return Err(RuleError::Empty {
                    rule: rule(),
                    field,
                });
            }
        }
        if self.unless.as_deref() == Some("") {
            return Err(RuleError::Empty {
                rule: rule(),
                field: "unless",
            });
        }
        match (&self.unless, self.delay) {
            (Some(unless), None) => {
                return Err(RuleError::UnlessWithoutDelay {
                    rule: rule(),
                    unless: unless.clone(),
                });
            }
            (_, Some(delay)) if delay.is_zero() => {
                return Err(RuleError::ZeroDelay { rule: rule() });
            }
            _ => {}
        }
        if let Some(channel) = self
            .channels
            .iter()
            .find(|channel| ChannelKind::parse(channel).is_none())
        {
            return Err(RuleError::UnknownChannel {
                rule: rule(),
                channel: channel.clone(),
            });
        }
        for (index, condition) in self.when.iter().enumerate() {
            if let Some(problem) = condition.problem() {
                return Err(RuleError::Condition {
                    rule: rule(),
                    index,
                    property: condition.property.clone(),
                    op: condition.op,
                    problem,
                });
            }
        }
        Ok(())
    }

    /// Whether every condition holds for these properties.
    pub fn conditions_hold(&self, properties: &JsonObject) -> bool {
        self.when
            .iter()
            .all(|condition| condition.holds(properties))
    }

    /// The notification this rule creates for `user_id` from event
    /// `event_id`: data = the event's properties, source id
    /// [`source_id`]; no template/title/body (the type's templates apply).
    pub fn notification(
        &self,
        user_id: &str,
        event_id: &str,
        properties: &JsonObject,
    ) -> NewNotification {
        NewNotification {
            user_id: user_id.to_owned(),
            request: NotifyRequest {
                notification_type: self.notify.clone(),
                template: None,
                title: None,
                body: None,
                data: properties.clone(),
                priority: self.priority,
                // Names were checked when the rule was (`validate`).
                channels: self
                    .channels
                    .iter()
                    .filter_map(|name| ChannelKind::parse(name))
                    .collect(),
                idempotency_key: None,
                cost: None,
            },
            source_event_id: Some(source_id(&self.name, event_id)),
        }
    }
}

impl Condition {
    /// What is wrong with the condition's value for its op, if anything.
    pub fn problem(&self) -> Option<&'static str> {
        if self.property.is_empty() || self.property.split('.').any(str::is_empty) {
            return Some("`property` must be a dotted path without empty parts");
        }
        match (self.op, &self.value) {
            (Op::Exists, None | Some(Value::Bool(_))) => None,
            (Op::Exists, Some(_)) => Some("`exists` takes no value, or true/false"),
            (_, None | Some(Value::Null)) => Some("needs a `value`"),
            (op, Some(value)) if op.numeric() && !value.is_number() => {
                Some("gt, gte, lt and lte compare numbers: `value` must be a number")
            }
            _ => None,
        }
    }

    /// Whether the condition holds for these properties.
    pub fn holds(&self, properties: &JsonObject) -> bool {
        let actual = lookup(properties, &self.property);
        let expected = self.value.as_ref();
        match self.op {
            Op::Exists => {
                let present = actual.is_some_and(|value| !value.is_null());
                present == expected.and_then(Value::as_bool).unwrap_or(true)
            }
            Op::Eq => matches!((actual, expected), (Some(a), Some(e)) if json_eq(a, e)),
            Op::Ne => !matches!((actual, expected), (Some(a), Some(e)) if json_eq(a, e)),
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                let (Some(a), Some(e)) = (
                    actual.and_then(Value::as_f64),
                    expected.and_then(Value::as_f64),
                ) else {
                    return false;
                };
                match self.op {
                    Op::Gt => a > e,
                    Op::Gte => a >= e,
                    Op::Lt => a < e,
                    _ => a <= e,
                }
            }
            Op::Contains => match (actual, expected) {
                (Some(Value::String(a)), Some(Value::String(e))) => a.contains(e.as_str()),
                (Some(Value::Array(items)), Some(e)) => items.iter().any(|item| json_eq(item, e)),
                _ => false,
            },
        }
    }
}

/// The value at a dotted path: a top-level key spelled exactly like the
/// path first (for property names that contain dots), else each part an
/// object key or an array index.
pub fn lookup<'a>(properties: &'a JsonObject, path: &str) -> Option<&'a Value> {
    if let Some(value) = properties.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = properties.get(parts.next()?)?;
    for part in parts {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// JSON equality, except that numbers compare by value.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// `Option<Duration>` as a humantime string ("1h 30m").
mod opt_humantime {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => s.collect_str(&humantime::format_duration(*duration)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}
