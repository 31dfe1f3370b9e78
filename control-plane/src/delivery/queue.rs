//! [`DeliveryQueue`]: deliveries in sled, with a due index for the
//! dispatcher and atomic claims.
//!
//! # Trees (all in the control plane's one `sled::Db`)
//!
//! | tree | key | value |
//! |---|---|---|
//! | `delivery_items` | id (16 bytes, UUIDv7) | the [`Delivery`] as JSON |
//! | `delivery_due` | channel (1) · 255−priority (1) · `not_before` ms (8, BE, sign-flipped) · id (16) | empty |
//! | `delivery_sending` | id | channel byte |
//! | `delivery_dead` | id | channel byte |
//! | `delivery_provider_ids` | channel (1) · the provider's message id | id |
//! | `delivery_facts` ([`FACTS_TREE`]) | `generate_id` (8, BE) | a [`DeliveryFact`] as JSON, drained by analytics |
//!
//! A range scan of `delivery_due` under one channel and priority, up to
//! "now", yields the due deliveries oldest `not_before` first; scanning the
//! priorities from high to low gives the claim order.
//!
//! # Invariants
//!
//! * A delivery is in exactly one index matching its status: `Queued` in
//!   `delivery_due`, `Sending` in `delivery_sending`, `DeadLettered` in
//!   `delivery_dead`, final states in none. Every write that changes a
//!   status updates the record and the indexes in one sled transaction.
//! * Claims are serialisable transactions that re-check the status, so two
//!   workers (or two processes' worth of threads) never claim the same
//!   delivery.
//! * A delivery the provider accepted with a message id is findable by it
//!   ([`DeliveryQueue::find_by_provider_id`], for provider callbacks such
//!   as Twilio's): the index entry is written in the same transaction that
//!   records the `Sent`. Should a provider reuse an id, the later delivery
//!   wins.
//! * Every change that analytics counts (sent, delivered, engagement,
//!   failures, retries, complaints; see [`super::facts`]) appends its
//!   [`DeliveryFact`] to `delivery_facts` in the same transaction as the
//!   change, and only when the delivery actually changed; claims,
//!   recovery, manual retries, deletes and trims write none.
//! * `enqueue` and `retry_dead_letter` return only after `flush_async`, so
//!   an accepted delivery survives a crash. Outcomes are not flushed one by
//!   one (sled's background flush covers them): losing one in a crash means
//!   the delivery is sent again.
//! * Delivery is **at least once**: a crash while `Sending` leaves the
//!   delivery there, and [`DeliveryQueue::recover`] (run at start-up, before
//!   any worker) puts it back to `Queued`. The provider may already have it,
//!   so receivers dedupe by delivery id (`OutboundMessage::delivery_id`).
//!
//! * [`DeliveryQueue::delete`] (privacy erase, retention) takes a delivery
//!   out of the record tree and every index in one transaction, and
//!   leaves its facts (analytics erases a user's facts itself). One
//!   deleted while `Sending` finishes its send; recording the outcome then
//!   finds no delivery (`NotFound`) and nothing comes back.
//! * [`DeliveryQueue::trim_attempt_logs`] (retention) keeps only the last
//!   attempt of deliveries last updated before a cutoff; the delivery, its
//!   status and timestamps stay.
//!
//! The methods other than `enqueue`/`retry_dead_letter` are synchronous
//! sled calls: they touch memory and sled's page cache, not the disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use tokio::sync::Notify;
use uuid::Uuid;

use super::facts::{DeliveryFact, FACTS_TREE, FactKind};
use super::model::{Attempt, AttemptOutcome, Delivery, Engagement, Priority, Status};
use super::retry::Decision;
use crate::channels::{ChannelKind, SendError, SendReceipt};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("delivery store failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("delivery record is corrupt: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("delivery {0} not found")]
    NotFound(Uuid),
    #[error("delivery {0} already exists")]
    AlreadyExists(Uuid),
    #[error("delivery {id} cannot go from {from} to {to}")]
    InvalidTransition { id: Uuid, from: Status, to: Status },
}

/// How a claimed delivery's attempt ended, with the retry decision already
/// taken for failures (the queue stores outcomes; it does not decide them).
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    Sent(SendReceipt),
    Failed {
        error: SendError,
        decision: Decision,
    },
}

/// Cheap to clone: every clone shares the trees and the wake-ups.
#[derive(Clone)]
pub struct DeliveryQueue {
    db: sled::Db,
    items: sled::Tree,
    due: sled::Tree,
    sending: sled::Tree,
    dead: sled::Tree,
    provider_ids: sled::Tree,
    /// Written in the transactions that change deliveries; drained by
    /// analytics (see [`super::facts`]).
    facts: sled::Tree,
    /// One per channel, indexed by [`channel_byte`]: `notify_one` keeps a
    /// permit, so a wake-up sent while the worker is busy is not lost.
    wakers: Arc<[Notify; 7]>,
}

/// The queue's trees inside a transaction, in [`DeliveryQueue::transact`]'s
/// order: items, due, sending, dead, provider ids, facts.
type Trees = (
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
);

impl DeliveryQueue {
    /// Opens (or creates) the `delivery_*` trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, QueueError> {
        Ok(DeliveryQueue {
            db: db.clone(),
            items: db.open_tree("delivery_items")?,
            due: db.open_tree("delivery_due")?,
            sending: db.open_tree("delivery_sending")?,
            dead: db.open_tree("delivery_dead")?,
            provider_ids: db.open_tree("delivery_provider_ids")?,
            facts: db.open_tree(FACTS_TREE)?,
            wakers: Arc::new(std::array::from_fn(|_| Notify::new())),
        })
    }

    /// Signalled when a delivery of `channel` may have become due.
    pub fn waker(&self, channel: ChannelKind) -> &Notify {
        &self.wakers[usize::from(channel_byte(channel))]
    }

    /// Stores a new `Queued` delivery durably (flushed) and wakes the
    /// channel's worker.
    pub async fn enqueue(&self, delivery: Delivery) -> Result<(), QueueError> {
        if delivery.status != Status::Queued {
            return Err(QueueError::InvalidTransition {
                id: delivery.id,
                from: delivery.status,
                to: Status::Queued,
            });
        }
        let bytes = serde_json::to_vec(&delivery)?;
        let id = delivery.id;
        let due_key = due_key(&delivery);
        self.transact(|(items, due, _, _, _, _)| {
            if items.get(id.as_bytes())?.is_some() {
                return abort(QueueError::AlreadyExists(id));
            }
            items.insert(&id.as_bytes()[..], bytes.as_slice())?;
            due.insert(due_key.as_slice(), &[][..])?;
            Ok(())
        })?;
        self.db.flush_async().await?;
        self.waker(delivery.channel).notify_one();
        Ok(())
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Delivery>, QueueError> {
        match self.items.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every delivery of the notification `notification_id`, by id. Their
    /// ids share the notification's first ten bytes (see
    /// `engine::delivery_id_for`), so this is one short prefix scan.
    pub fn for_notification(&self, notification_id: Uuid) -> Result<Vec<Delivery>, QueueError> {
        let id = notification_id.to_string();
        let mut deliveries = Vec::new();
        for entry in self.items.scan_prefix(&notification_id.as_bytes()[..10]) {
            let (_, bytes) = entry?;
            let delivery: Delivery = serde_json::from_slice(&bytes)?;
            if delivery.notification_id == id {
                deliveries.push(delivery);
            }
        }
        Ok(deliveries)
    }

    /// Moves up to `limit` due deliveries of `channel` (`not_before <= now`)
    /// to `Sending` and returns them: highest priority first, then oldest
    /// `not_before`. Each claim is its own transaction; one lost to another
    /// claimer is skipped.
    pub fn claim_due(
        &self,
        channel: ChannelKind,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut claimed = Vec::new();
        for priority in [Priority::High, Priority::Normal, Priority::Low] {
            let prefix = [channel_byte(channel), priority_byte(priority)];
            let mut start = prefix.to_vec();
            start.extend_from_slice(&[0; 24]);
            let mut end = prefix.to_vec();
            end.extend_from_slice(&millis_key(now));
            end.extend_from_slice(&[0xff; 16]);
            for entry in self.due.range(start..=end) {
                if claimed.len() >= limit {
                    return Ok(claimed);
                }
                let (key, _) = entry?;
                if let Some(delivery) = self.claim_one(&key, now)? {
                    claimed.push(delivery);
                }
            }
        }
        Ok(claimed)
    }

    fn claim_one(&self, key: &[u8], now: Timestamp) -> Result<Option<Delivery>, QueueError> {
        let Some(id) = key.get(10..26).and_then(|raw| Uuid::from_slice(raw).ok()) else {
            return Ok(None);
        };
        self.transact(|(items, due, sending, _, _, _)| {
            // Another claimer got here first: the index entry is gone.
            if due.get(key)?.is_none() {
                return Ok(None);
            }
            let mut delivery = load(items, id)?;
            // The key has millisecond resolution; the record has the exact time.
            if delivery.status != Status::Queued || delivery.not_before > now {
                return Ok(None);
            }
            delivery.status = Status::Sending;
            delivery.updated_at = now;
            due.remove(key)?;
            sending.insert(&id.as_bytes()[..], &[channel_byte(delivery.channel)][..])?;
            store(items, &delivery)?;
            Ok(Some(delivery))
        })
    }

    /// Records the outcome of one attempt on a `Sending` delivery: appends
    /// to the attempt log and applies the status change.
    pub fn complete(
        &self,
        id: Uuid,
        completion: &Completion,
        now: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.transact(|(items, due, sending, dead, provider_ids, facts)| {
            let mut delivery = load(items, id)?;
            let next = match completion {
                Completion::Sent(_) => Status::Sent,
                Completion::Failed { decision, .. } => match decision {
                    Decision::RetryAt(_) => Status::Queued,
                    Decision::Fail => Status::Failed,
                    Decision::DeadLetter => Status::DeadLettered,
                },
            };
            check_transition(&delivery, Status::Sending, next)?;
            delivery.attempts = delivery.attempts.saturating_add(1);
            delivery.updated_at = now;
            sending.remove(id.as_bytes())?;
            match completion {
                Completion::Sent(receipt) => {
                    delivery.attempt_log.push(Attempt {
                        at: now,
                        outcome: AttemptOutcome::Sent,
                        answer: receipt.answer.clone(),
                    });
                    delivery.sent_at = Some(now);
                    delivery.provider_message_id = receipt.provider_message_id.clone();
                    if let Some(provider_id) = receipt.provider_message_id.as_deref() {
                        provider_ids.insert(
                            provider_key(delivery.channel, provider_id),
                            &id.as_bytes()[..],
                        )?;
                    }
                    delivery.last_answer = Some(receipt.answer.clone());
                }
                Completion::Failed { error, decision } => {
                    delivery.attempt_log.push(Attempt {
                        at: now,
                        outcome: AttemptOutcome::of(error),
                        answer: error.answer().to_owned(),
                    });
                    delivery.last_answer = Some(error.answer().to_owned());
                    match decision {
                        Decision::RetryAt(at) => {
                            delivery.not_before = *at;
                            due.insert(due_key(&delivery).as_slice(), &[][..])?;
                        }
                        Decision::DeadLetter => {
                            dead.insert(&id.as_bytes()[..], &[channel_byte(delivery.channel)][..])?;
                        }
                        Decision::Fail => {}
                    }
                }
            }
            delivery.status = next;
            store(items, &delivery)?;
            let kind = match completion {
                // Channels where accepted means delivered (in-app) get
                // their `Delivered` from the dispatcher's `mark_delivered`.
                Completion::Sent(_) => FactKind::Sent,
                Completion::Failed { decision, .. } => match decision {
                    Decision::RetryAt(_) => FactKind::Retried,
                    Decision::Fail => FactKind::Failed,
                    Decision::DeadLetter => FactKind::DeadLettered,
                },
            };
            emit(facts, &delivery, kind, now)?;
            Ok(delivery)
        })
    }

    /// `Sent` → `Delivered`, from a provider's delivery callback (or at
    /// once for channels where accepted means delivered, like in-app).
    /// Idempotent: providers repeat callbacks. A delivery already further
    /// up the ladder (opened, read, clicked) is returned unchanged: a late
    /// callback never moves a status back.
    pub fn mark_delivered(&self, id: Uuid, at: Timestamp) -> Result<Delivery, QueueError> {
        self.transact(|(items, _, _, _, _, facts)| {
            let mut delivery = load(items, id)?;
            if delivery.status.engagement_rank() >= Status::Delivered.engagement_rank() {
                return Ok(delivery);
            }
            check_transition(&delivery, Status::Sent, Status::Delivered)?;
            delivery.status = Status::Delivered;
            delivery.delivered_at = Some(at);
            delivery.updated_at = at;
            store(items, &delivery)?;
            emit(facts, &delivery, FactKind::Delivered, at)?;
            Ok(delivery)
        })
    }

    /// `Sent` → `Failed`, from a provider's callback saying the message
    /// could not be delivered after all; `answer` (the provider's error)
    /// becomes the last answer. Idempotent like [`Self::mark_delivered`].
    pub fn mark_undeliverable(
        &self,
        id: Uuid,
        answer: &str,
        at: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.transact(|(items, _, _, _, _, facts)| {
            let mut delivery = load(items, id)?;
            if delivery.status == Status::Failed {
                return Ok(delivery);
            }
            check_transition(&delivery, Status::Sent, Status::Failed)?;
            delivery.status = Status::Failed;
            delivery.last_answer = Some(answer.to_owned());
            delivery.updated_at = at;
            store(items, &delivery)?;
            emit(facts, &delivery, FactKind::Failed, at)?;
            Ok(delivery)
        })
    }

    /// An email's hard bounce, from a provider's callback: `Sent` or
    /// `Delivered` → `Failed` with `answer` (the bounce) as the last
    /// answer; not retried. Idempotent on `Failed`. A delivery the
    /// recipient engaged with (opened, read, clicked) was delivered, so a
    /// bounce for it is refused as an [`QueueError::InvalidTransition`],
    /// like one for a delivery not sent yet.
    pub fn mark_bounced(
        &self,
        id: Uuid,
        answer: &str,
        at: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.transact(|(items, _, _, _, _, facts)| {
            let mut delivery = load(items, id)?;
            if delivery.status == Status::Failed {
                return Ok(delivery);
            }
            if !matches!(delivery.status, Status::Sent | Status::Delivered) {
                return abort(QueueError::InvalidTransition {
                    id,
                    from: delivery.status,
                    to: Status::Failed,
                });
            }
            debug_assert!(delivery.status.can_become(Status::Failed));
            delivery.status = Status::Failed;
            delivery.last_answer = Some(answer.to_owned());
            delivery.updated_at = delivery.updated_at.max(at);
            store(items, &delivery)?;
            // Counted as a bounce, not also as a failure: analytics adds
            // the two where it wants all failures.
            emit(facts, &delivery, FactKind::Bounced, at)?;
            Ok(delivery)
        })
    }

    /// An email's soft bounce (the receiving server refused it for now;
    /// the provider retries on its own): the status stays, and on a `Sent`
    /// delivery `answer` becomes the last answer, so an operator sees why
    /// it is not delivered yet. Other statuses are returned unchanged.
    pub fn record_soft_bounce(
        &self,
        id: Uuid,
        answer: &str,
        at: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.transact(|(items, _, _, _, _, _)| {
            let mut delivery = load(items, id)?;
            if delivery.status != Status::Sent {
                return Ok(delivery);
            }
            delivery.last_answer = Some(answer.to_owned());
            delivery.updated_at = delivery.updated_at.max(at);
            store(items, &delivery)?;
            Ok(delivery)
        })
    }

    /// A spam complaint about the delivery, from a provider's callback:
    /// sets `complained_at` (the first one is kept) whatever the status,
    /// and, since a complaint proves delivery, moves `Sent` to `Delivered`.
    /// Switching the user's email off is the caller's part.
    pub fn record_complaint(&self, id: Uuid, at: Timestamp) -> Result<Delivery, QueueError> {
        self.transact(|(items, _, _, _, _, facts)| {
            let mut delivery = load(items, id)?;
            let complained = delivery.complained_at.is_none();
            if complained {
                delivery.complained_at = Some(at);
            }
            let delivered = delivery.status == Status::Sent;
            if delivered {
                delivery.status = Status::Delivered;
                delivery.delivered_at.get_or_insert(at);
            }
            if complained || delivered {
                delivery.updated_at = delivery.updated_at.max(at);
                store(items, &delivery)?;
            }
            if delivered {
                emit(facts, &delivery, FactKind::Delivered, at)?;
            }
            if complained {
                emit(facts, &delivery, FactKind::Complained, at)?;
            }
            Ok(delivery)
        })
    }

    /// Records what the recipient did (see the model's module doc): sets
    /// the engagement's timestamp unless it is set already (the first is
    /// kept), sets `delivered_at` if missing (engagement proves delivery),
    /// and raises the status to `kind`'s rung if that is higher — never
    /// lowers it. Idempotent: the same engagement again changes nothing
    /// and returns the delivery as it is.
    ///
    /// Only a delivery that was sent takes engagement: one that is
    /// `Queued`, `Sending`, `Failed` or `DeadLettered` is refused with
    /// [`QueueError::InvalidTransition`] (from its status to `kind`'s)
    /// and left as it is; an unknown id is [`QueueError::NotFound`].
    ///
    /// The inbox calls this with [`Engagement::Read`] and
    /// [`Engagement::Clicked`]; the open pixel, tracked links and email
    /// provider callbacks with `Opened` and `Clicked`.
    pub fn record_engagement(
        &self,
        id: Uuid,
        kind: Engagement,
        at: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.transact(|(items, _, _, _, _, facts)| {
            let mut delivery = load(items, id)?;
            let target = kind.status();
            let Some(rank) = delivery.status.engagement_rank() else {
                return abort(QueueError::InvalidTransition {
                    id,
                    from: delivery.status,
                    to: target,
                });
            };
            let slot = match kind {
                Engagement::Opened => &mut delivery.opened_at,
                Engagement::Read => &mut delivery.read_at,
                Engagement::Clicked => &mut delivery.clicked_at,
            };
            let engaged = slot.is_none();
            if engaged {
                *slot = Some(at);
            }
            let delivered = delivery.delivered_at.is_none();
            if delivered {
                delivery.delivered_at = Some(at);
            }
            let raised = target.engagement_rank() > Some(rank);
            if raised {
                debug_assert!(delivery.status.can_become(target));
                delivery.status = target;
            }
            if engaged || delivered || raised {
                delivery.updated_at = delivery.updated_at.max(at);
                store(items, &delivery)?;
            }
            // Delivered first: the open proves a delivery that came before it.
            if delivered {
                emit(facts, &delivery, FactKind::Delivered, at)?;
            }
            if engaged {
                let kind = match kind {
                    Engagement::Opened => FactKind::Opened,
                    Engagement::Read => FactKind::Read,
                    Engagement::Clicked => FactKind::Clicked,
                };
                emit(facts, &delivery, kind, at)?;
            }
            Ok(delivery)
        })
    }

    /// The delivery on `channel` whose provider message id is
    /// `provider_id` (see the module doc), if any.
    pub fn find_by_provider_id(
        &self,
        channel: ChannelKind,
        provider_id: &str,
    ) -> Result<Option<Uuid>, QueueError> {
        Ok(self
            .provider_ids
            .get(provider_key(channel, provider_id))?
            .and_then(|bytes| Uuid::from_slice(&bytes).ok()))
    }

    /// How many facts wait for analytics in the facts tree (see
    /// [`super::facts`]); analytics reads and removes them itself.
    pub fn fact_count(&self) -> usize {
        self.facts.len()
    }

    /// Puts every `Sending` delivery back to `Queued` (due at its old
    /// `not_before`). Only correct before any worker runs: call it once at
    /// start-up. Returns how many were recovered.
    pub fn recover(&self, now: Timestamp) -> Result<usize, QueueError> {
        let mut recovered = 0;
        for entry in self.sending.iter() {
            let (key, _) = entry?;
            let Ok(id) = Uuid::from_slice(&key) else {
                continue;
            };
            let moved = self.transact(|(items, due, sending, _, _, _)| {
                sending.remove(id.as_bytes())?;
                let mut delivery = load(items, id)?;
                if delivery.status != Status::Sending {
                    return Ok(false);
                }
                delivery.status = Status::Queued;
                delivery.updated_at = now;
                due.insert(due_key(&delivery).as_slice(), &[][..])?;
                store(items, &delivery)?;
                Ok(true)
            })?;
            recovered += usize::from(moved);
        }
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "deliveries interrupted mid-send requeued; they will be sent again"
            );
            for waker in self.wakers.iter() {
                waker.notify_one();
            }
        }
        Ok(recovered)
    }

    /// Dead letters in id (creation) order, optionally of one channel,
    /// starting after the id `after` (for paging).
    pub fn list_dead_letters(
        &self,
        channel: Option<ChannelKind>,
        limit: usize,
        after: Option<Uuid>,
    ) -> Result<Vec<Delivery>, QueueError> {
        let start = after.map_or([0; 16], |id| *id.as_bytes());
        let mut found = Vec::new();
        for entry in self.dead.range(start..) {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            if after.is_some() && key.as_ref() == start {
                continue;
            }
            if let Some(wanted) = channel
                && value.first() != Some(&channel_byte(wanted))
            {
                continue;
            }
            let Ok(id) = Uuid::from_slice(&key) else {
                continue;
            };
            if let Some(delivery) = self.get(id)? {
                found.push(delivery);
            }
        }
        Ok(found)
    }

    /// An operator's retry: `DeadLettered` → `Queued`, due now, with a
    /// fresh attempt budget (the attempt log keeps the history). Durable
    /// when it returns.
    pub async fn retry_dead_letter(
        &self,
        id: Uuid,
        now: Timestamp,
    ) -> Result<Delivery, QueueError> {
        let delivery = self.transact(|(items, due, _, dead, _, _)| {
            let mut delivery = load(items, id)?;
            check_transition(&delivery, Status::DeadLettered, Status::Queued)?;
            delivery.status = Status::Queued;
            delivery.attempts = 0;
            delivery.not_before = now;
            delivery.updated_at = now;
            dead.remove(id.as_bytes())?;
            due.insert(due_key(&delivery).as_slice(), &[][..])?;
            store(items, &delivery)?;
            Ok(delivery)
        })?;
        self.db.flush_async().await?;
        self.waker(delivery.channel).notify_one();
        Ok(delivery)
    }

    /// Queue depth for the gauges: `Queued`, `Sending` and `DeadLettered`
    /// per channel (final states are not "in the queue"). Every pair is
    /// present, zero included, so gauges drop back to 0. Scans the three
    /// indexes, not the records: O(queue length), keys only.
    pub fn depth_by_channel_and_status(
        &self,
    ) -> Result<BTreeMap<(ChannelKind, Status), u64>, QueueError> {
        let mut depth = BTreeMap::new();
        for channel in ChannelKind::ALL {
            for status in [Status::Queued, Status::Sending, Status::DeadLettered] {
                depth.insert((channel, status), 0);
            }
        }
        let mut count = |channel: Option<&u8>, status| {
            if let Some(channel) = channel.copied().and_then(channel_from_byte) {
                *depth.entry((channel, status)).or_insert(0) += 1;
            }
        };
        for entry in self.due.iter() {
            let (key, _) = entry?;
            count(key.first(), Status::Queued);
        }
        for entry in self.sending.iter() {
            let (_, value) = entry?;
            count(value.first(), Status::Sending);
        }
        for entry in self.dead.iter() {
            let (_, value) = entry?;
            count(value.first(), Status::DeadLettered);
        }
        Ok(depth)
    }

    /// Removes a delivery with its index entries; the removed delivery,
    /// `None` when there was none. Not flushed. Its facts stay: they may
    /// not be counted yet, and analytics erases them on a privacy erase.
    pub fn delete(&self, id: Uuid) -> Result<Option<Delivery>, QueueError> {
        self.transact(|(items, due, sending, dead, provider_ids, _)| {
            let Some(bytes) = items.remove(id.as_bytes())? else {
                return Ok(None);
            };
            let delivery: Delivery = match serde_json::from_slice(&bytes) {
                Ok(delivery) => delivery,
                Err(error) => return abort(QueueError::Codec(error)),
            };
            due.remove(due_key(&delivery))?;
            sending.remove(id.as_bytes())?;
            dead.remove(id.as_bytes())?;
            if let Some(provider_id) = &delivery.provider_message_id {
                let key = provider_key(delivery.channel, provider_id);
                if provider_ids.get(&key)?.as_deref() == Some(id.as_bytes().as_slice()) {
                    provider_ids.remove(key)?;
                }
            }
            Ok(Some(delivery))
        })
    }

    /// Retention of attempt logs: every delivery last updated before
    /// `cutoff` keeps only its last attempt. Returns how many deliveries
    /// were trimmed. Scans every delivery; a record changed meanwhile is
    /// left for the next pass (compare-and-swap).
    pub fn trim_attempt_logs(&self, cutoff: Timestamp) -> Result<usize, QueueError> {
        let mut trimmed = 0;
        for entry in self.items.iter() {
            let (key, bytes) = entry?;
            let mut delivery: Delivery = serde_json::from_slice(&bytes)?;
            if delivery.updated_at >= cutoff || delivery.attempt_log.len() <= 1 {
                continue;
            }
            let last = delivery.attempt_log.len() - 1;
            delivery.attempt_log.drain(..last);
            let new = serde_json::to_vec(&delivery)?;
            if self
                .items
                .compare_and_swap(&key, Some(&bytes), Some(new))?
                .is_ok()
            {
                trimmed += 1;
            }
        }
        Ok(trimmed)
    }

    fn transact<T>(
        &self,
        body: impl Fn(&Trees) -> ConflictableTransactionResult<T, QueueError>,
    ) -> Result<T, QueueError> {
        (
            &self.items,
            &self.due,
            &self.sending,
            &self.dead,
            &self.provider_ids,
            &self.facts,
        )
            .transaction(|trees| body(trees))
            .map_err(|error| match error {
                TransactionError::Abort(error) => error,
                TransactionError::Storage(error) => QueueError::Sled(error),
            })
    }
}

fn abort<T>(error: QueueError) -> ConflictableTransactionResult<T, QueueError> {
    Err(ConflictableTransactionError::Abort(error))
}

fn load(
    items: &TransactionalTree,
    id: Uuid,
) -> ConflictableTransactionResult<Delivery, QueueError> {
    let Some(bytes) = items.get(id.as_bytes())? else {
        return abort(QueueError::NotFound(id));
    };
    serde_json::from_slice(&bytes).or_else(|error| abort(QueueError::Codec(error)))
}

fn store(
    items: &TransactionalTree,
    delivery: &Delivery,
) -> ConflictableTransactionResult<(), QueueError> {
    let bytes = match serde_json::to_vec(delivery) {
        Ok(bytes) => bytes,
        Err(error) => return abort(QueueError::Codec(error)),
    };
    items.insert(&delivery.id.as_bytes()[..], bytes)?;
    Ok(())
}

/// Appends the fact `kind` about `delivery` (as it is after the change) to
/// the facts tree, in the caller's transaction: the fact commits with the
/// change or not at all. The key comes from the transactional tree's
/// `generate_id` (the same counter as `Db::generate_id`, minus the lock the
/// commit holds); a retried closure draws a new id, which is fine: ids
/// only need to be unique.
fn emit(
    facts: &TransactionalTree,
    delivery: &Delivery,
    kind: FactKind,
    at: Timestamp,
) -> ConflictableTransactionResult<(), QueueError> {
    let bytes = match serde_json::to_vec(&DeliveryFact::of(delivery, kind, at)) {
        Ok(bytes) => bytes,
        Err(error) => return abort(QueueError::Codec(error)),
    };
    let key = facts.generate_id()?.to_be_bytes();
    facts.insert(&key[..], bytes)?;
    Ok(())
}

fn check_transition(
    delivery: &Delivery,
    expected: Status,
    next: Status,
) -> ConflictableTransactionResult<(), QueueError> {
    debug_assert!(
        expected.can_become(next),
        "{expected} → {next} is not an edge"
    );
    if delivery.status != expected || !delivery.status.can_become(next) {
        return abort(QueueError::InvalidTransition {
            id: delivery.id,
            from: delivery.status,
            to: next,
        });
    }
    Ok(())
}

/// On-disk channel codes: fixed here, independent of `ChannelKind::ALL`'s
/// order, because they are part of stored keys.
fn channel_byte(channel: ChannelKind) -> u8 {
    match channel {
        ChannelKind::InApp => 0,
        ChannelKind::Email => 1,
        ChannelKind::Apns => 2,
        ChannelKind::Fcm => 3,
        ChannelKind::WebPush => 4,
        ChannelKind::Sms => 5,
        ChannelKind::Webhook => 6,
    }
}

fn channel_from_byte(byte: u8) -> Option<ChannelKind> {
    ChannelKind::ALL
        .into_iter()
        .find(|channel| channel_byte(*channel) == byte)
}

/// Inverted so that a forward scan meets high priority first.
fn priority_byte(priority: Priority) -> u8 {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

/// Big-endian with the sign bit flipped, so byte order is time order even
/// for (theoretical) times before 1970.
fn millis_key(at: Timestamp) -> [u8; 8] {
    ((at.as_millisecond() as u64) ^ (1 << 63)).to_be_bytes()
}

fn provider_key(channel: ChannelKind, provider_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + provider_id.len());
    key.push(channel_byte(channel));
    key.extend_from_slice(provider_id.as_bytes());
    key
}

fn due_key(delivery: &Delivery) -> Vec<u8> {
    let mut key = Vec::with_capacity(26);
    key.push(channel_byte(delivery.channel));
    key.push(priority_byte(delivery.priority));
    key.extend_from_slice(&millis_key(delivery.not_before));
    key.extend_from_slice(delivery.id.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_keys_sort_by_time() {
        let times = [-5_000i64, -1, 0, 1, 1_700_000_000_000];
        let keys: Vec<[u8; 8]> = times
            .iter()
            .map(|ms| millis_key(Timestamp::from_millisecond(*ms).unwrap()))
            .collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn channel_codes_round_trip() {
        for channel in ChannelKind::ALL {
            assert_eq!(channel_from_byte(channel_byte(channel)), Some(channel));
        }
    }
}
