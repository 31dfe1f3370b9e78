//! [`matching`]: which rules a stored event fires.

use super::model::Rule;
use crate::event::{Event, EventBody};

/// The rules `event` fires, in config order: only track events with a
/// (non-empty) user id, whose name is the rule's `on` and whose properties
/// satisfy every `when` condition.
pub fn matching<'a>(rules: &'a [Rule], event: &Event) -> Vec<&'a Rule> {
    let EventBody::Track {
        event: name,
        properties,
    } = &event.body
    else {
        return Vec::new();
    };
    if event.user_id.as_deref().is_none_or(str::is_empty) {
        return Vec::new();
    }
    rules
        .iter()
        .filter(|rule| rule.on == *name && rule.conditions_hold(properties))
        .collect()
}
