//! [`PendingTriggers`]: delayed rule triggers, until they fire or an
//! `unless` event cancels them.
//!
//! Stored in SQL (table `pending_triggers`, see `storage::pending`): one
//! row per rule and event, pending until it finishes, then kept as that
//! trigger's finished marker, so that replaying the event does not
//! schedule it again (a cancelled trigger would otherwise come back);
//! [`PendingTriggers::prune_finished`] trims the markers, keeping at least
//! the event replay window.
//!
//! [`PendingTriggers::erase_user`] (privacy) removes a user's pending
//! triggers; the finished markers stay (they name a rule and an event id,
//! nothing about the user).
//!
//! Firing is **at least once**: [`PendingTriggers::due`] only reads; the
//! caller creates the notification (idempotent by [`Pending::source_id`])
//! and then calls [`PendingTriggers::complete`]. A crash in between fires
//! again, and the notification store absorbs it. Of a fire and a cancel
//! racing, exactly one finishes the trigger.
//!
//! Every change has committed when it returns. A user or event id with a
//! NUL byte is refused ([`PendingError::Invalid`]): PostgreSQL's `TEXT`
//! cannot hold it, and that refusal is permanent, not worth a retry.

use std::collections::HashSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::model::{Rule, source_id};
use crate::event::JsonObject;
use crate::notifications::NewNotification;
use crate::storage::{Finish, PendingTable, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("pending rule triggers store failed: {0}")]
    Storage(#[from] StorageError),
    #[error("a user or event id with a NUL byte cannot be scheduled")]
    Invalid,
}

/// A delayed trigger: rule `rule` fired by event `event_id` of `user_id`,
/// to notify at `due_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PendingTrigger)]
pub struct Pending {
    pub rule: String,
    pub user_id: String,
    pub event_id: String,
    /// The firing event's properties: the notification's data.
    #[schema(value_type = Object)]
    pub properties: JsonObject,
    /// When the firing event happened; `unless` events before it do not cancel.
    pub scheduled_at: Timestamp,
    pub due_at: Timestamp,
}

impl Pending {
    /// `<rule>:<event id>`: one trigger per rule and event.
    pub fn id(&self) -> String {
        format!("{}:{}", self.rule, self.event_id)
    }

    /// `rule:<rule>:<event id>`, the notification's `source_event_id`.
    pub fn source_id(&self) -> String {
        source_id(&self.rule, &self.event_id)
    }

    /// The notification to create when it fires, from the rule as now
    /// configured (look it up by [`Pending::rule`]; a rule removed from the
    /// config is best completed without firing).
    pub fn notification(&self, rule: &Rule) -> NewNotification {
        let mut notification = rule.notification(&self.user_id, &self.event_id, &self.properties);
        notification.source_event_id = Some(self.source_id());
        notification
    }
}

/// The pending triggers over their table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PendingTriggers {
    table: PendingTable,
}

impl PendingTriggers {
    pub fn new(table: PendingTable) -> Self {
        PendingTriggers { table }
    }

    /// Schedules rule `rule`'s trigger for event `event_id` (which happened
    /// `at`) to fire at `due_at`. Idempotent per (rule, event id): returns
    /// false, changing nothing, when that trigger is pending or finished.
    pub async fn schedule(
        &self,
        rule: &str,
        user_id: &str,
        event_id: &str,
        properties: &JsonObject,
        at: Timestamp,
        due_at: Timestamp,
    ) -> Result<bool, PendingError> {
        if [rule, user_id, event_id]
            .iter()
            .any(|text| text.contains('\0'))
        {
            return Err(PendingError::Invalid);
        }
        let pending = Pending {
            rule: rule.to_owned(),
            user_id: user_id.to_owned(),
            event_id: event_id.to_owned(),
            properties: properties.clone(),
            scheduled_at: at,
            due_at,
        };
        Ok(self.table.schedule(&pending).await?)
    }

    /// Cancels `user_id`'s pending triggers of the rules whose `unless` is
    /// `event_name`, when the event (at `at`) falls in their window:
    /// `scheduled_at <= at <= due_at`. Returns the cancelled triggers.
    /// Call it before scheduling the same event's own triggers.
    pub async fn cancel_for(
        &self,
        user_id: &str,
        event_name: &str,
        at: Timestamp,
        rules: &[Rule],
    ) -> Result<Vec<Pending>, PendingError> {
        let cancelling: HashSet<&str> = rules
            .iter()
            .filter(|rule| rule.unless.as_deref() == Some(event_name))
            .map(|rule| rule.name.as_str())
            .collect();
        let mut cancelled = Vec::new();
        if cancelling.is_empty() || user_id.contains('\0') {
            return Ok(cancelled);
        }
        for pending in self.table.open_at(user_id, at).await? {
            if cancelling.contains(pending.rule.as_str())
                && self
                    .table
                    .finish(&pending.id(), Finish::Cancelled, at)
                    .await?
            {
                cancelled.push(pending);
            }
        }
        Ok(cancelled)
    }

    /// Up to `limit` triggers due at `now`, earliest first. They stay
    /// pending until [`PendingTriggers::complete`].
    pub async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Pending>, PendingError> {
        Ok(self.table.due(now, limit).await?)
    }

    /// Finishes a fired trigger (leaving its marker). False when it was
    /// no longer pending (completed or cancelled meanwhile).
    pub async fn complete(&self, pending: &Pending, now: Timestamp) -> Result<bool, PendingError> {
        Ok(self.table.finish(&pending.id(), Finish::Fired, now).await?)
    }

    /// The trigger with this id (`<rule>:<event id>`), if pending.
    pub async fn get(&self, id: &str) -> Result<Option<Pending>, PendingError> {
        Ok(self.table.get(id).await?)
    }

    /// How many triggers are pending.
    pub async fn count(&self) -> Result<usize, PendingError> {
        Ok(self.table.count().await?)
    }

    /// Drops the markers of triggers finished before `before`; after
    /// that, replaying their events would schedule them again. Returns how
    /// many were dropped.
    pub async fn prune_finished(&self, before: Timestamp) -> Result<usize, PendingError> {
        Ok(self.table.prune_finished(before).await?)
    }

    /// The user's pending triggers (for a privacy export).
    pub async fn for_user(&self, user_id: &str) -> Result<Vec<Pending>, PendingError> {
        Ok(self.table.for_user(user_id).await?)
    }

    /// Removes every pending trigger of `user_id`; returns how many.
    pub async fn erase_user(&self, user_id: &str) -> Result<usize, PendingError> {
        Ok(self.table.erase_user(user_id).await?)
    }
}
