//! [`PendingTriggers`]: delayed rule triggers in sled, until they fire or an
//! `unless` event cancels them.
//!
//! # Trees (in the control plane's one `sled::Db`)
//!
//! | tree | key | value |
//! |---|---|---|
//! | `rule_pending_items` | id (`<rule>:<event id>`) | the [`Pending`] as JSON |
//! | `rule_pending_due` | `due_at` ms (8, BE, sign-flipped) · id | empty |
//! | `rule_pending_user` | user id length (4, BE) · user id · id | empty |
//! | `rule_pending_done` | id | finished ms (8, BE) · 1 fired / 2 cancelled |
//!
//! Rule names are `[A-Za-z0-9_.-]`, so the first `:` of an id ends the rule
//! name. Every change touches the record and both indexes in one sled
//! transaction. `rule_pending_done` keeps a tombstone per finished trigger
//! so that replaying the event does not schedule it again (a cancelled
//! trigger would otherwise come back); [`PendingTriggers::prune_finished`]
//! trims it, keeping at least the event replay window.
//!
//! [`PendingTriggers::erase_user`] (privacy) removes a user's pending
//! triggers with their index entries; the `done` tombstones stay (they
//! name a rule and an event id, nothing about the user).
//!
//! Firing is **at least once**: [`PendingTriggers::due`] only reads; the
//! caller creates the notification (idempotent by [`Pending::source_id`])
//! and then calls [`PendingTriggers::complete`]. A crash in between fires
//! again, and the notification store absorbs it.
//!
//! Nothing here flushes: the caller flushes the db with its own progress
//! (the engine's cursor), as sled's background flush otherwise does.

use std::collections::HashSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::model::{Rule, source_id};
use crate::event::JsonObject;
use crate::notifications::NewNotification;

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("pending rule triggers store failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("pending rule trigger record is corrupt: {0}")]
    Codec(#[from] serde_json::Error),
}

impl From<TransactionError<()>> for PendingError {
    fn from(error: TransactionError<()>) -> Self {
        match error {
            TransactionError::Storage(error) => PendingError::Sled(error),
            // The closures below never abort.
            TransactionError::Abort(()) => unreachable!("pending transactions do not abort"),
        }
    }
}

/// A delayed trigger: rule `rule` fired by event `event_id` of `user_id`,
/// to notify at `due_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub rule: String,
    pub user_id: String,
    pub event_id: String,
    /// The firing event's properties: the notification's data.
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

    fn due_key(&self, id: &[u8]) -> Vec<u8> {
        let mut key = millis_key(self.due_at).to_vec();
        key.extend_from_slice(id);
        key
    }

    fn user_key(&self, id: &[u8]) -> Vec<u8> {
        let mut key = user_prefix(&self.user_id);
        key.extend_from_slice(id);
        key
    }
}

const FIRED: u8 = 1;
const CANCELLED: u8 = 2;

/// Cheap to clone: clones share the trees.
#[derive(Clone)]
pub struct PendingTriggers {
    items: sled::Tree,
    due: sled::Tree,
    by_user: sled::Tree,
    done: sled::Tree,
}

impl PendingTriggers {
    /// Opens (or creates) the `rule_pending_*` trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, PendingError> {
        Ok(PendingTriggers {
            items: db.open_tree("rule_pending_items")?,
            due: db.open_tree("rule_pending_due")?,
            by_user: db.open_tree("rule_pending_user")?,
            done: db.open_tree("rule_pending_done")?,
        })
    }

    /// Schedules rule `rule`'s trigger for event `event_id` (which happened
    /// `at`) to fire at `due_at`. Idempotent per (rule, event id): returns
    /// false, changing nothing, when that trigger is pending or finished.
    pub fn schedule(
        &self,
        rule: &str,
        user_id: &str,
        event_id: &str,
        properties: &JsonObject,
        at: Timestamp,
        due_at: Timestamp,
    ) -> Result<bool, PendingError> {
        let pending = Pending {
            rule: rule.to_owned(),
            user_id: user_id.to_owned(),
            event_id: event_id.to_owned(),
            properties: properties.clone(),
            scheduled_at: at,
            due_at,
        };
        let id = pending.id().into_bytes();
        let bytes = serde_json::to_vec(&pending)?;
        let (due_key, user_key) = (pending.due_key(&id), pending.user_key(&id));
        let scheduled = (&self.items, &self.due, &self.by_user, &self.done).transaction(
            |(items, due, by_user, done)| {
                if items.get(&id)?.is_some() || done.get(&id)?.is_some() {
                    return Ok(false);
                }
                items.insert(id.as_slice(), bytes.as_slice())?;
                due.insert(due_key.as_slice(), &[][..])?;
                by_user.insert(user_key.as_slice(), &[][..])?;
                Ok::<_, ConflictableTransactionError<()>>(true)
            },
        )?;
        Ok(scheduled)
    }

    /// Cancels `user_id`'s pending triggers of the rules whose `unless` is
    /// `event_name`, when the event (at `at`) falls in their window:
    /// `scheduled_at <= at <= due_at`. Returns the cancelled triggers.
    /// Call it before scheduling the same event's own triggers.
    pub fn cancel_for(
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
        if cancelling.is_empty() {
            return Ok(cancelled);
        }
        let prefix = user_prefix(user_id);
        for entry in self.by_user.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let id = &key[prefix.len()..];
            let rule = id.split(|b| *b == b':').next().unwrap_or_default();
            if !std::str::from_utf8(rule).is_ok_and(|rule| cancelling.contains(rule)) {
                continue;
            }
            let Some(pending) = self.load(id)? else {
                continue;
            };
            if pending.scheduled_at <= at
                && at <= pending.due_at
                && self.finish(&pending, CANCELLED, at)?
            {
                cancelled.push(pending);
            }
        }
        Ok(cancelled)
    }

    /// Up to `limit` triggers due at `now`, earliest first. They stay
    /// pending until [`PendingTriggers::complete`].
    pub fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Pending>, PendingError> {
        let end = u64::from_be_bytes(millis_key(now))
            .saturating_add(1)
            .to_be_bytes();
        let mut found = Vec::new();
        for entry in self.due.range(..end) {
            if found.len() >= limit {
                break;
            }
            let (key, _) = entry?;
            if let Some(pending) = self.load(&key[8..])? {
                found.push(pending);
            }
        }
        Ok(found)
    }

    /// Removes a fired trigger (leaving its tombstone). False when it was
    /// no longer pending (completed or cancelled meanwhile).
    pub fn complete(&self, pending: &Pending, now: Timestamp) -> Result<bool, PendingError> {
        self.finish(pending, FIRED, now)
    }

    /// The trigger with this id (`<rule>:<event id>`), if pending.
    pub fn get(&self, id: &str) -> Result<Option<Pending>, PendingError> {
        self.load(id.as_bytes())
    }

    /// How many triggers are pending.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Drops the tombstones of triggers finished before `before`; after
    /// that, replaying their events would schedule them again. Returns how
    /// many were dropped.
    pub fn prune_finished(&self, before: Timestamp) -> Result<usize, PendingError> {
        let mut pruned = 0;
        for entry in self.done.iter() {
            let (key, value) = entry?;
            let finished = value
                .get(..8)
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(i64::MIN, i64::from_be_bytes);
            if finished < before.as_millisecond() {
                self.done.remove(key)?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// The user's pending triggers (for a privacy export).
    pub fn for_user(&self, user_id: &str) -> Result<Vec<Pending>, PendingError> {
        let mut found = Vec::new();
        for entry in self.by_user.scan_prefix(user_prefix(user_id)).keys() {
            let user_key = entry?;
            if let Some(pending) = self.load(&user_key[4 + user_id.len()..])? {
                found.push(pending);
            }
        }
        Ok(found)
    }

    /// Removes every pending trigger of `user_id`; returns how many.
    pub fn erase_user(&self, user_id: &str) -> Result<usize, PendingError> {
        let mut removed = 0;
        for entry in self.by_user.scan_prefix(user_prefix(user_id)).keys() {
            let user_key = entry?;
            let id = user_key[4 + user_id.len()..].to_vec();
            let pending = self.load(&id)?;
            let due_key = pending.as_ref().map(|pending| pending.due_key(&id));
            let gone =
                (&self.items, &self.due, &self.by_user).transaction(|(items, due, by_user)| {
                    by_user.remove(&user_key)?;
                    if let Some(due_key) = &due_key {
                        due.remove(due_key.as_slice())?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(
                        items.remove(id.as_slice())?.is_some(),
                    )
                })?;
            removed += usize::from(gone);
        }
        Ok(removed)
    }

    fn load(&self, id: &[u8]) -> Result<Option<Pending>, PendingError> {
        Ok(match self.items.get(id)? {
            Some(bytes) => Some(serde_json::from_slice(&bytes)?),
            None => None,
        })
    }

    /// Removes `pending` and its index entries and leaves a tombstone, if
    /// it is still pending.
    fn finish(&self, pending: &Pending, state: u8, at: Timestamp) -> Result<bool, PendingError> {
        let id = pending.id().into_bytes();
        let (due_key, user_key) = (pending.due_key(&id), pending.user_key(&id));
        let mut tombstone = at.as_millisecond().to_be_bytes().to_vec();
        tombstone.push(state);
        let finished = (&self.items, &self.due, &self.by_user, &self.done).transaction(
            |(items, due, by_user, done)| {
                if items.remove(id.as_slice())?.is_none() {
                    return Ok(false);
                }
                due.remove(due_key.as_slice())?;
                by_user.remove(user_key.as_slice())?;
                done.insert(id.as_slice(), tombstone.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(true)
            },
        )?;
        Ok(finished)
    }
}

/// Big-endian with the sign bit flipped, so byte order is time order.
fn millis_key(at: Timestamp) -> [u8; 8] {
    ((at.as_millisecond() as u64) ^ (1 << 63)).to_be_bytes()
}

fn user_prefix(user_id: &str) -> Vec<u8> {
    let mut key = (user_id.len() as u32).to_be_bytes().to_vec();
    key.extend_from_slice(user_id.as_bytes());
    key
}
