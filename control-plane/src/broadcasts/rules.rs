//! Subscription rules: tracked events that subscribe users to topics, or
//! take them off one (`[[subscriptions]]` in the engine config).
//!
//! ```toml
//! [[subscriptions]]
//! on = "project_joined"
//! topic = "project:{project_id}"   # {path}: a property of the event
//! when = [ { property = "role", op = "ne", value = "guest" } ]
//! action = "subscribe"             # or "unsubscribe"
//! ```
//!
//! The engine applies them to each tracked event in ingest order, so a
//! `project_left` after a `project_joined` leaves the user unsubscribed.
//! An event whose properties lack a placeholder's value, or give one that
//! makes no valid topic name, subscribes to nothing (logged).

use serde::{Deserialize, Serialize};

use crate::event::JsonObject;
use crate::rules::{Condition, lookup};

/// One `[[subscriptions]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRule {
    /// The track event name that fires it.
    pub on: String,
    /// The topic, with `{path}` placeholders filled from the event's
    /// properties (dotted paths, as in conditions).
    pub topic: String,
    /// Conditions on the event's properties; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
    #[serde(default)]
    pub action: SubscriptionAction,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionAction {
    #[default]
    Subscribe,
    Unsubscribe,
}

/// A text split into literal parts and `{path}` placeholders.
enum Part<'a> {
    Literal(&'a str),
    Placeholder(&'a str),
}

fn parts(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Literal(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("topic {template:?}: a `{{` is not closed"))?;
        let path = &after[..close];
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!(
                "topic {template:?}: `{{{path}}}` is not a dotted property path"
            ));
        }
        parts.push(Part::Placeholder(path));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("topic {template:?}: a `}}` has no `{{`"));
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest));
    }
    Ok(parts)
}

impl SubscriptionRule {
    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.on.is_empty() {
            return Err("`on` must not be empty".to_owned());
        }
        for part in parts(&self.topic)? {
            if let Part::Literal(text) = part {
                // A literal part must be made of what topic names may hold.
                super::check_name("topic", text).map_err(|_| {
                    format!(
                        "topic {:?}: {text:?} holds a character topic names may not",
                        self.topic
                    )
                })?;
            }
        }
        if self.topic.is_empty() {
            return Err("`topic` must not be empty".to_owned());
        }
        for (index, condition) in self.when.iter().enumerate() {
            if let Some(problem) = condition.problem() {
                return Err(format!(
                    "when[{index}] (`{}` {}): {problem}",
                    condition.property, condition.op
                ));
            }
        }
        Ok(())
    }

    /// The topic this event names, if its conditions hold and every
    /// placeholder has a string or number value that makes a valid name.
    pub fn topic_for(&self, properties: &JsonObject) -> Option<String> {
        if !self
            .when
            .iter()
            .all(|condition| condition.holds(properties))
        {
            return None;
        }
        let mut topic = String::new();
        for part in parts(&self.topic).ok()? {
            match part {
                Part::Literal(text) => topic.push_str(text),
                Part::Placeholder(path) => match lookup(properties, path)? {
                    serde_json::Value::String(text) => topic.push_str(text),
                    serde_json::Value::Number(number) => topic.push_str(&number.to_string()),
                    _ => return None,
                },
            }
        }
        super::check_name("topic", &topic).ok()?;
        Some(topic)
    }
}

/// Checks every rule; the message names the rule by its place.
pub fn validate_all(rules: &[SubscriptionRule]) -> Result<(), String> {
    for (index, rule) in rules.iter().enumerate() {
        rule.validate()
            .map_err(|problem| format!("subscriptions[{index}]: {problem}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(topic: &str) -> SubscriptionRule {
        SubscriptionRule {
            on: "project_joined".into(),
            topic: topic.into(),
            when: Vec::new(),
            action: SubscriptionAction::Subscribe,
        }
    }

    fn props(json: &str) -> JsonObject {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn placeholders_are_filled_from_properties() {
        let rule = rule("project:{project.id}/{region}");
        assert!(rule.validate().is_ok());
        assert_eq!(
            rule.topic_for(&props(r#"{"project": {"id": 42}, "region": "eu"}"#)),
            Some("project:42/eu".to_owned())
        );
        assert_eq!(rule.topic_for(&props(r#"{"project": {"id": 42}}"#)), None);
        // A value that makes no topic name subscribes to nothing.
        assert_eq!(
            rule.topic_for(&props(r#"{"project": {"id": "a b"}, "region": "eu"}"#)),
            None
        );
    }

    #[test]
    fn bad_templates_and_conditions_are_refused() {
        assert!(rule("").validate().is_err());
        assert!(rule("p:{").validate().is_err());
        assert!(rule("p:{}").validate().is_err());
        assert!(rule("p}").validate().is_err());
        assert!(rule("has space:{id}").validate().is_err());
        let mut conditional = rule("news");
        conditional.when =
            serde_json::from_str(r#"[{"property": "n", "op": "gt", "value": "x"}]"#).unwrap();
        let error = validate_all(&[rule("ok"), conditional]).unwrap_err();
        assert!(error.starts_with("subscriptions[1]: when[0]"), "{error}");
    }

    #[test]
    fn conditions_gate_the_rule() {
        let mut rule = rule("news");
        rule.when =
            serde_json::from_str(r#"[{"property": "opt_in", "op": "eq", "value": true}]"#).unwrap();
        assert_eq!(
            rule.topic_for(&props(r#"{"opt_in": true}"#)),
            Some("news".into())
        );
        assert_eq!(rule.topic_for(&props(r#"{"opt_in": false}"#)), None);
    }
}
