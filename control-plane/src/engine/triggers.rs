//! Rules as triggers: a tracked event fires the rules that match it at
//! once, or schedules the delayed ones; a later event named in a rule's
//! `unless` cancels that user's pending trigger; due triggers fire on each
//! pass of the engine.
//!
//! Firing is at least once (a crash between creating the notification and
//! completing the trigger fires again), and the notification store dedupes
//! by the trigger's source id (`rule:<name>:<event id>`), so a user gets one
//! notification per rule and event.

use jiff::Timestamp;

use super::{Engine, EngineError};
use crate::event::{Event, EventBody};
use crate::rules::{Pending, matching};

/// Due triggers fired per pass.
const DUE_PAGE: usize = 256;

impl Engine {
    /// Applies the rules to one tracked event.
    pub(super) async fn track(&self, event: &Event) -> Result<(), EngineError> {
        let (
            EventBody::Track {
                event: name,
                properties,
            },
            Some(user_id),
        ) = (&event.body, &event.user_id)
        else {
            return Ok(());
        };
        self.apply_subscription_rules(user_id, name, properties)
            .await?;
        let settings = self.settings.current();
        let rules = &settings.rules;
        if rules.is_empty() {
            return Ok(());
        }
        // When it happened for the user: the client's time if it sent one.
        let at = event.timestamp.unwrap_or(event.ingested_at);
        // Cancel first, so a rule whose `unless` is its own `on` event
        // cannot cancel the trigger it is about to schedule.
        for cancelled in self.pending.cancel_for(user_id, name, at, rules).await? {
            tracing::info!(rule = %cancelled.rule, user_event = %cancelled.event_id, by = %name, "pending rule cancelled");
        }
        for rule in matching(rules, event) {
            match rule.delay {
                None => {
                    let draft = rule.notification(user_id, &event.id, properties);
                    self.create_and_plan(draft, "rule").await?;
                }
                Some(delay) => {
                    let due_at = at.checked_add(delay).unwrap_or(Timestamp::MAX);
                    self.pending
                        .schedule(&rule.name, user_id, &event.id, properties, at, due_at)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Fires every pending trigger that is due; returns how many.
    pub(super) async fn fire_due(&self) -> Result<usize, EngineError> {
        let now = self.clock.now();
        let due: Vec<Pending> = self.pending.due(now, DUE_PAGE).await?;
        let settings = self.settings.current();
        for pending in &due {
            match settings.rules.iter().find(|r| r.name == pending.rule) {
                Some(rule) => {
                    self.create_and_plan(pending.notification(rule), "rule")
                        .await?;
                }
                None => {
                    tracing::warn!(rule = %pending.rule, "pending trigger of a rule no longer configured; dropped");
                }
            }
            self.pending.complete(pending, now).await?;
        }
        Ok(due.len())
    }
}
