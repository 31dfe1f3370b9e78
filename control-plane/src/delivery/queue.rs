//! [`DeliveryQueue`]: the lifecycle rules of deliveries over their table
//! ([`crate::storage::DeliveryTable`], which says how rows are kept), and
//! the per-channel wake-ups of the dispatcher.
//!
//! # Invariants
//!
//! * A status only changes along [`Status::can_become`]'s edges; every
//!   change is one transaction of the table ([`DeliveryTable::edit`]),
//!   which re-reads the delivery under a lock first.
//! * A claim is taken once: two workers (or two replicas) never hold the
//!   same delivery ([`DeliveryTable::claim_due`]).
//! * A delivery the provider accepted with a message id is findable by it
//!   ([`DeliveryQueue::find_by_provider_id`], for provider callbacks such
//!   as Twilio's). Should a provider reuse an id, the later delivery wins.
//! * Every change that analytics counts (sent, delivered, engagement,
//!   failures, retries, complaints; see [`super::facts`]) appends its
//!   [`DeliveryFact`] in the same transaction as the change, and only when
//!   the delivery actually changed; claims, recovery, manual retries,
//!   deletes and trims write none.
//! * Every call is durable when it returns (the table commits first), so
//!   an accepted delivery survives a crash.
//! * Delivery is **at least once**: a crash while `Sending` leaves the
//!   delivery there under a claim that expires after [`CLAIM_LEASE`];
//!   [`DeliveryQueue::requeue_expired`] (every replica, periodically) puts
//!   it back to `Queued`, and on SQLite, whose file serves one process,
//!   [`DeliveryQueue::recover`] at start-up does so at once. The provider
//!   may already have it, so receivers dedupe by delivery id
//!   (`OutboundMessage::delivery_id`, the webhook's `webhook-id`), which a
//!   retry keeps, on whichever replica it runs.
//! * [`DeliveryQueue::delete`] (privacy erase, retention) removes a
//!   delivery and leaves its facts (analytics erases a user's facts
//!   itself). One deleted while `Sending` finishes its send; recording the
//!   outcome then finds no delivery (`NotFound`) and nothing comes back.
//! * [`DeliveryQueue::trim_attempt_logs`] (retention) keeps only the last
//!   attempt of deliveries last updated before a cutoff; the delivery, its
//!   status and timestamps stay.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use super::facts::{DeliveryFact, FactKind};
use super::model::{Attempt, AttemptOutcome, Delivery, Engagement, Status};
use super::retry::Decision;
use crate::channels::{ChannelKind, SendError, SendReceipt};
use crate::storage::{Change, DeliveryTable, Edit, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("delivery {0} not found")]
    NotFound(Uuid),
    #[error("delivery {0} already exists")]
    AlreadyExists(Uuid),
    #[error("delivery {id} cannot go from {from} to {to}")]
    InvalidTransition { id: Uuid, from: Status, to: Status },
    /// The claim this outcome belongs to expired and the delivery was
    /// requeued (and maybe claimed again): the outcome is not recorded.
    #[error("delivery {0}: its claim expired before the outcome was recorded")]
    ClaimLost(Uuid),
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
    /// A workflow step's check cancelled it before any provider call:
    /// `cancelled`, with why in the attempt log (see
    /// [`crate::workflow::gate`]).
    Skipped(String),
}

/// Cheap to clone: every clone shares the table and the wake-ups. Opened
/// once, with the other stores ([`crate::storage::Stores`]), so a wake-up
/// from any caller reaches the dispatcher.
#[derive(Clone)]
pub struct DeliveryQueue {
    table: DeliveryTable,
    /// To the group-commit writer of outcomes (see [`Self::complete`]).
    outcomes: mpsc::Sender<PendingEdit>,
    /// One per channel, indexed by [`ChannelKind::ALL`]'s order:
    /// `notify_one` keeps a permit, so a wake-up sent while the worker is
    /// busy is not lost.
    wakers: Arc<[Notify; ChannelKind::ALL.len()]>,
    /// How long a claim holds ([`CLAIM_LEASE`] unless configured).
    claim_lease: std::time::Duration,
}

impl std::fmt::Debug for DeliveryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryQueue").finish_non_exhaustive()
    }
}

impl DeliveryQueue {
    /// The queue over `table`, with wake-ups of its own and its outcome
    /// writer (a task of the current runtime, which ends with the last
    /// clone).
    pub fn new(table: DeliveryTable) -> Self {
        let (outcomes, pending) = mpsc::channel(OUTCOME_QUEUE);
        tokio::spawn(write_outcomes(table.clone(), pending));
        DeliveryQueue {
            table,
            outcomes,
            wakers: Arc::new(std::array::from_fn(|_| Notify::new())),
            claim_lease: CLAIM_LEASE,
        }
    }

    /// Sets how long a claim holds (`NUDGE_CP_DELIVERY_CLAIM_TTL`); call
    /// before anything takes a clone.
    pub fn set_claim_lease(&mut self, lease: std::time::Duration) {
        self.claim_lease = lease;
    }

    /// Signalled when a delivery of `channel` may have become due.
    pub fn waker(&self, channel: ChannelKind) -> &Notify {
        let index = ChannelKind::ALL
            .iter()
            .position(|kind| *kind == channel)
            .unwrap_or_default();
        &self.wakers[index]
    }

    /// Stores a new `Queued` delivery durably and wakes the channel's
    /// worker; [`QueueError::AlreadyExists`] if its id is taken.
    pub async fn enqueue(&self, delivery: Delivery) -> Result<(), QueueError> {
        let id = delivery.id;
        let new = self.enqueue_all(vec![delivery]).await?;
        if new.is_empty() {
            return Err(QueueError::AlreadyExists(id));
        }
        Ok(())
    }

    /// Stores every delivery of `deliveries` whose id is not taken, in one
    /// transaction, and wakes their channels' workers; returns the ids
    /// that were new (a replayed plan's are not).
    pub async fn enqueue_all(&self, deliveries: Vec<Delivery>) -> Result<Vec<Uuid>, QueueError> {
        if let Some(delivery) = deliveries.iter().find(|d| d.status != Status::Queued) {
            return Err(QueueError::InvalidTransition {
                id: delivery.id,
                from: delivery.status,
                to: Status::Queued,
            });
        }
        let new = self.table.insert_new(&deliveries).await?;
        for delivery in deliveries.iter().filter(|d| new.contains(&d.id)) {
            self.waker(delivery.channel).notify_one();
        }
        Ok(new)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Delivery>, QueueError> {
        Ok(self.table.get(id).await?)
    }

    /// Every delivery of the notification `notification_id`, by id.
    pub async fn for_notification(
        &self,
        notification_id: Uuid,
    ) -> Result<Vec<Delivery>, QueueError> {
        Ok(self
            .table
            .for_notification(&notification_id.to_string())
            .await?)
    }

    /// Moves up to `limit` due deliveries of `channel` (`not_before <= now`)
    /// to `Sending` and returns them: highest priority first, then oldest
    /// `not_before`. One transaction; a delivery another claimer holds is
    /// skipped.
    pub async fn claim_due(
        &self,
        channel: ChannelKind,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        Ok(self
            .table
            .claim_due(channel, now, limit, self.claim_lease)
            .await?)
    }

    /// Gives a claimed delivery back unsent: `Sending` → `Queued`, due as
    /// before, no attempt counted (a worker stopping with claims it never
    /// started).
    pub async fn release(&self, id: Uuid, now: Timestamp) -> Result<Delivery, QueueError> {
        let delivery = self
            .edit(id, |delivery| {
                check_transition(delivery, Status::Sending, Status::Queued)?;
                delivery.status = Status::Queued;
                delivery.updated_at = now;
                Ok(changed(delivery, &[], now))
            })
            .await?;
        self.waker(delivery.channel).notify_one();
        Ok(delivery)
    }

    /// Records the outcome of one attempt on a `Sending` delivery: appends
    /// to the attempt log and applies the status change. Outcomes that
    /// arrive together (the dispatcher's concurrent sends) commit together:
    /// one transaction for all of them, each answered on its own.
    pub async fn complete(
        &self,
        id: Uuid,
        completion: &Completion,
        now: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.complete_edit(id, None, completion, None, now).await
    }

    /// [`Self::complete`] for the dispatcher: only while `claimed`'s claim
    /// still holds. A claim that expired was requeued by a sweep (and may
    /// be another replica's now), so a late outcome is refused with
    /// [`QueueError::ClaimLost`] instead of ending that claim. A claim is
    /// known by the time it was taken (its record's `updated_at`), which
    /// every later change of the delivery moves. `step_note`, the passed
    /// check of a workflow step, goes into the attempt log (as
    /// `proceeded`) before the outcome.
    pub async fn complete_claimed(
        &self,
        claimed: &Delivery,
        completion: &Completion,
        step_note: Option<String>,
        now: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.complete_edit(
            claimed.id,
            Some(claimed.updated_at),
            completion,
            step_note,
            now,
        )
        .await
    }

    async fn complete_edit(
        &self,
        id: Uuid,
        claimed_at: Option<Timestamp>,
        completion: &Completion,
        step_note: Option<String>,
        now: Timestamp,
    ) -> Result<Delivery, QueueError> {
        let completion = completion.clone();
        let (reply, answer) = oneshot::channel();
        let pending = PendingEdit {
            id,
            change: Box::new(move |delivery| {
                if claimed_at.is_some_and(|at| {
                    delivery.status != Status::Sending || delivery.updated_at != at
                }) {
                    return Err(QueueError::ClaimLost(delivery.id));
                }
                if let Some(answer) = step_note {
                    delivery.attempt_log.push(Attempt {
                        at: now,
                        outcome: AttemptOutcome::Proceeded,
                        answer,
                    });
                }
                apply_outcome(delivery, &completion, now)
            }),
            reply,
        };
        if self.outcomes.send(pending).await.is_err() {
            return Err(QueueError::Storage(StorageError::Unavailable(
                "the outcome writer has stopped".to_owned(),
            )));
        }
        answer.await.unwrap_or_else(|_| {
            Err(QueueError::Storage(StorageError::Unavailable(
                "the outcome writer has stopped".to_owned(),
            )))
        })
    }

    /// `Sent` → `Delivered`, from a provider's delivery callback.
    /// Idempotent: providers repeat callbacks. A delivery already further
    /// up the ladder (opened, read, clicked) is returned unchanged: a late
    /// callback never moves a status back.
    pub async fn mark_delivered(&self, id: Uuid, at: Timestamp) -> Result<Delivery, QueueError> {
        self.edit(id, |delivery| {
            if delivery.status.engagement_rank() >= Status::Delivered.engagement_rank() {
                return Ok(Edit::default());
            }
            check_transition(delivery, Status::Sent, Status::Delivered)?;
            delivery.status = Status::Delivered;
            delivery.delivered_at = Some(at);
            delivery.updated_at = at;
            Ok(changed(delivery, &[FactKind::Delivered], at))
        })
        .await
    }

    /// `Sent` → `Failed`, from a provider's callback saying the message
    /// could not be delivered after all; `answer` (the provider's error)
    /// becomes the last answer. Idempotent like [`Self::mark_delivered`].
    pub async fn mark_undeliverable(
        &self,
        id: Uuid,
        answer: &str,
        at: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.edit(id, |delivery| {
            if delivery.status == Status::Failed {
                return Ok(Edit::default());
            }
            check_transition(delivery, Status::Sent, Status::Failed)?;
            delivery.status = Status::Failed;
            delivery.last_answer = Some(answer.to_owned());
            delivery.updated_at = at;
            Ok(changed(delivery, &[FactKind::Failed], at))
        })
        .await
    }

    /// An email's hard bounce, from a provider's callback: `Sent` or
    /// `Delivered` → `Failed` with `answer` (the bounce) as the last
    /// answer; not retried. Idempotent on `Failed`. A delivery the
    /// recipient engaged with (opened, read, clicked) was delivered, so a
    /// bounce for it is refused as an [`QueueError::InvalidTransition`],
    /// like one for a delivery not sent yet.
    pub async fn mark_bounced(
        &self,
        id: Uuid,
        answer: &str,
        at: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.edit(id, |delivery| {
            if delivery.status == Status::Failed {
                return Ok(Edit::default());
            }
            if !matches!(delivery.status, Status::Sent | Status::Delivered) {
                return Err(QueueError::InvalidTransition {
                    id,
                    from: delivery.status,
                    to: Status::Failed,
                });
            }
            debug_assert!(delivery.status.can_become(Status::Failed));
            delivery.status = Status::Failed;
            delivery.last_answer = Some(answer.to_owned());
            delivery.updated_at = delivery.updated_at.max(at);
            // Counted as a bounce, not also as a failure: analytics adds
            // the two where it wants all failures.
            Ok(changed(delivery, &[FactKind::Bounced], at))
        })
        .await
    }

    /// An email's soft bounce (the receiving server refused it for now;
    /// the provider retries on its own): the status stays, and on a `Sent`
    /// delivery `answer` becomes the last answer, so an operator sees why
    /// it is not delivered yet. Other statuses are returned unchanged.
    pub async fn record_soft_bounce(
        &self,
        id: Uuid,
        answer: &str,
        at: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.edit(id, |delivery| {
            if delivery.status != Status::Sent {
                return Ok(Edit::default());
            }
            delivery.last_answer = Some(answer.to_owned());
            delivery.updated_at = delivery.updated_at.max(at);
            Ok(changed(delivery, &[], at))
        })
        .await
    }

    /// A spam complaint about the delivery, from a provider's callback:
    /// sets `complained_at` (the first one is kept) whatever the status,
    /// and, since a complaint proves delivery, moves `Sent` to `Delivered`.
    /// Switching the user's email off is the caller's part (the email
    /// callback does it before recording, see `http::email_callbacks`):
    /// the `bool` is `true` for the one call that set `complained_at`
    /// (decided under the delivery's row lock, so of concurrent calls
    /// exactly one sees it), `false` for every repeat.
    pub async fn record_complaint(
        &self,
        id: Uuid,
        at: Timestamp,
    ) -> Result<(Delivery, bool), QueueError> {
        let mut first = false;
        let delivery = self
            .edit(id, |delivery| {
                let complained = delivery.complained_at.is_none();
                first = complained;
                if complained {
                    delivery.complained_at = Some(at);
                }
                let delivered = delivery.status == Status::Sent;
                if delivered {
                    delivery.status = Status::Delivered;
                    delivery.delivered_at.get_or_insert(at);
                }
                if !complained && !delivered {
                    return Ok(Edit::default());
                }
                delivery.updated_at = delivery.updated_at.max(at);
                let mut kinds = Vec::new();
                if delivered {
                    kinds.push(FactKind::Delivered);
                }
                if complained {
                    kinds.push(FactKind::Complained);
                }
                Ok(changed(delivery, &kinds, at))
            })
            .await?;
        Ok((delivery, first))
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
    pub async fn record_engagement(
        &self,
        id: Uuid,
        kind: Engagement,
        at: Timestamp,
    ) -> Result<Delivery, QueueError> {
        self.edit(id, |delivery| {
            let target = kind.status();
            let Some(rank) = delivery.status.engagement_rank() else {
                return Err(QueueError::InvalidTransition {
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
            if !engaged && !delivered && !raised {
                return Ok(Edit::default());
            }
            delivery.updated_at = delivery.updated_at.max(at);
            let mut kinds = Vec::new();
            // Delivered first: the open proves a delivery that came before it.
            if delivered {
                kinds.push(FactKind::Delivered);
            }
            if engaged {
                kinds.push(match kind {
                    Engagement::Opened => FactKind::Opened,
                    Engagement::Read => FactKind::Read,
                    Engagement::Clicked => FactKind::Clicked,
                });
            }
            Ok(changed(delivery, &kinds, at))
        })
        .await
    }

    /// The delivery on `channel` whose provider message id is
    /// `provider_id` (see the module doc), if any.
    pub async fn find_by_provider_id(
        &self,
        channel: ChannelKind,
        provider_id: &str,
    ) -> Result<Option<Uuid>, QueueError> {
        Ok(self.table.find_by_provider_id(channel, provider_id).await?)
    }

    /// How many facts wait for analytics (see [`super::facts`]); analytics
    /// reads and removes them itself.
    pub async fn fact_count(&self) -> Result<u64, QueueError> {
        Ok(self.table.fact_count().await?)
    }

    /// The table under the queue, for analytics' drain of the facts.
    pub fn table(&self) -> &DeliveryTable {
        &self.table
    }

    /// Requeues deliveries a previous run left in `Sending`: call it once
    /// at start-up, before any worker runs. On SQLite (one process per
    /// file) that is every claim; on PostgreSQL only expired ones, since
    /// other replicas' claims are live (the rest expire and are requeued by
    /// [`DeliveryQueue::requeue_expired`]). Returns how many it requeued.
    pub async fn recover(&self, now: Timestamp) -> Result<usize, QueueError> {
        let every = self.table.claims_are_ours_alone();
        self.requeue(now, every).await
    }

    /// Requeues deliveries whose claim expired (its replica died mid-send,
    /// or stalled longer than the claim lease): run periodically on every
    /// replica. Returns how many it requeued.
    pub async fn requeue_expired(&self, now: Timestamp) -> Result<usize, QueueError> {
        self.requeue(now, false).await
    }

    async fn requeue(&self, now: Timestamp, every: bool) -> Result<usize, QueueError> {
        let channels = self
            .table
            .requeue_claims(now, every, self.claim_lease)
            .await?;
        if !channels.is_empty() {
            tracing::warn!(
                requeued = channels.len(),
                "deliveries interrupted mid-send requeued; they will be sent again"
            );
            for channel in &channels {
                self.waker(*channel).notify_one();
            }
        }
        Ok(channels.len())
    }

    /// Dead letters in id (creation) order, optionally of one channel,
    /// starting after the id `after` (for paging).
    pub async fn list_dead_letters(
        &self,
        channel: Option<ChannelKind>,
        limit: usize,
        after: Option<Uuid>,
    ) -> Result<Vec<Delivery>, QueueError> {
        let ids = self
            .table
            .ids_in_status(Status::DeadLettered, channel, after, limit)
            .await?;
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            // Retried or deleted since the ids were read: left out.
            if let Some(delivery) = self
                .table
                .get(id)
                .await?
                .filter(|delivery| delivery.status == Status::DeadLettered)
            {
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
        let delivery = self
            .edit(id, |delivery| {
                check_transition(delivery, Status::DeadLettered, Status::Queued)?;
                delivery.status = Status::Queued;
                delivery.attempts = 0;
                delivery.not_before = now;
                delivery.updated_at = now;
                Ok(changed(delivery, &[], now))
            })
            .await?;
        self.waker(delivery.channel).notify_one();
        Ok(delivery)
    }

    /// Queue depth for the gauges: `Queued`, `Sending` and `DeadLettered`
    /// per channel (final states are not "in the queue"). Every pair is
    /// present, zero included, so gauges drop back to 0. Counts over the
    /// partial indexes of those statuses.
    pub async fn depth_by_channel_and_status(
        &self,
    ) -> Result<BTreeMap<(ChannelKind, Status), u64>, QueueError> {
        let mut depth = BTreeMap::new();
        for status in [Status::Queued, Status::Sending, Status::DeadLettered] {
            for channel in ChannelKind::ALL {
                depth.insert((channel, status), 0);
            }
            for (channel, count) in self.table.count_by_channel(status).await? {
                depth.insert((channel, status), count);
            }
        }
        Ok(depth)
    }

    /// Removes a delivery; the removed delivery, `None` when there was
    /// none. Its facts stay: they may not be counted yet, and analytics
    /// erases them on a privacy erase.
    pub async fn delete(&self, id: Uuid) -> Result<Option<Delivery>, QueueError> {
        Ok(self.table.delete(id).await?)
    }

    /// Retention of attempt logs: every delivery last updated before
    /// `cutoff` keeps only its last attempt. Returns how many deliveries
    /// were trimmed.
    pub async fn trim_attempt_logs(&self, cutoff: Timestamp) -> Result<usize, QueueError> {
        let mut trimmed = 0;
        loop {
            let ids = self.table.long_logs_before(cutoff, TRIM_BATCH).await?;
            if ids.is_empty() {
                return Ok(trimmed);
            }
            for id in ids {
                let mut trimmed_this = false;
                let edited = self
                    .edit(id, |delivery| {
                        // Changed since it was listed: left as it is.
                        if delivery.updated_at >= cutoff || delivery.attempt_log.len() <= 1 {
                            return Ok(Edit::default());
                        }
                        let last = delivery.attempt_log.len() - 1;
                        delivery.attempt_log.drain(..last);
                        trimmed_this = true;
                        Ok(Edit {
                            changed: true,
                            facts: Vec::new(),
                        })
                    })
                    .await;
                match edited {
                    Ok(_) => trimmed += usize::from(trimmed_this),
                    Err(QueueError::NotFound(_)) => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }

    /// [`DeliveryTable::edit`], with a missing delivery as
    /// [`QueueError::NotFound`].
    async fn edit(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Delivery) -> Result<Edit, QueueError>,
    ) -> Result<Delivery, QueueError> {
        self.table
            .edit(id, change)
            .await?
            .ok_or(QueueError::NotFound(id))
    }
}

/// The outcome of one attempt applied to a `Sending` delivery (see
/// [`DeliveryQueue::complete`]).
fn apply_outcome(
    delivery: &mut Delivery,
    completion: &Completion,
    now: Timestamp,
) -> Result<Edit, QueueError> {
    // The status it moves to, the attempt written, and the fact analytics
    // counts (`Delivered` comes later, from a provider's receipt: email
    // and SMS callbacks; a channel without receipts ends at `Sent`). A
    // skipped step made no provider call: no attempt counted, no fact.
    let (next, attempt, fact) = match completion {
        Completion::Sent(receipt) => (
            Status::Sent,
            (AttemptOutcome::Sent, receipt.answer.as_str()),
            Some(FactKind::Sent),
        ),
        Completion::Failed { error, decision } => {
            let (next, fact) = match decision {
                Decision::RetryAt(_) => (Status::Queued, FactKind::Retried),
                Decision::Fail => (Status::Failed, FactKind::Failed),
                Decision::DeadLetter => (Status::DeadLettered, FactKind::DeadLettered),
            };
            (
                next,
                (AttemptOutcome::of(error), error.answer()),
                Some(fact),
            )
        }
        Completion::Skipped(reason) => (
            Status::Cancelled,
            (AttemptOutcome::Skipped, reason.as_str()),
            None,
        ),
    };
    check_transition(delivery, Status::Sending, next)?;
    let (outcome, answer) = attempt;
    // `attempts` counts provider calls; a skipped step made none.
    if !matches!(completion, Completion::Skipped(_)) {
        delivery.attempts = delivery.attempts.saturating_add(1);
    }
    delivery.updated_at = now;
    delivery.attempt_log.push(Attempt {
        at: now,
        outcome,
        answer: answer.to_owned(),
    });
    delivery.last_answer = Some(answer.to_owned());
    match completion {
        Completion::Sent(receipt) => {
            delivery.sent_at = Some(now);
            delivery.provider_message_id = receipt.provider_message_id.clone();
        }
        Completion::Failed {
            decision: Decision::RetryAt(at),
            ..
        } => delivery.not_before = *at,
        Completion::Failed { .. } | Completion::Skipped(_) => {}
    }
    delivery.status = next;
    Ok(changed(delivery, fact.as_slice(), now))
}

/// An outcome waiting for the writer's next transaction.
struct PendingEdit {
    id: Uuid,
    change: Change<QueueError>,
    reply: oneshot::Sender<Result<Delivery, QueueError>>,
}

/// Outcomes waiting at most; senders wait beyond that.
const OUTCOME_QUEUE: usize = 4096;
/// Outcomes per transaction at most.
const OUTCOME_GROUP: usize = 512;

/// Takes every outcome waiting and commits them in one transaction
/// ([`DeliveryTable::edit_all`]), until every queue clone is gone.
async fn write_outcomes(table: DeliveryTable, mut pending: mpsc::Receiver<PendingEdit>) {
    while let Some(first) = pending.recv().await {
        let mut group = vec![first];
        while group.len() < OUTCOME_GROUP {
            match pending.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(group.len());
        let mut changes = Vec::with_capacity(group.len());
        for edit in group {
            replies.push((edit.id, edit.reply));
            changes.push((edit.id, edit.change));
        }
        match table.edit_all(changes).await {
            Ok(results) => {
                for ((id, reply), result) in replies.into_iter().zip(results) {
                    // A caller that went away no longer needs its answer.
                    let _ = reply.send(match result {
                        Ok(Some(delivery)) => Ok(delivery),
                        Ok(None) => Err(QueueError::NotFound(id)),
                        Err(error) => Err(error),
                    });
                }
            }
            Err(error) => {
                tracing::warn!(%error, outcomes = replies.len(), "delivery outcomes not recorded");
                let message = error.to_string();
                for (_, reply) in replies {
                    let _ = reply.send(Err(QueueError::Storage(StorageError::Unavailable(
                        message.clone(),
                    ))));
                }
            }
        }
    }
}

/// How long a claim holds by default: far above any channel's provider timeout plus
/// the time a claimed batch waits for a free send slot, so only a claim
/// whose replica died (or stalled for minutes) expires and is sent again.
pub const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(300);
/// Deliveries trimmed per read of the long-log index.
const TRIM_BATCH: usize = 500;

/// A change to write, with the facts `kinds` about `delivery` as it is now.
fn changed(delivery: &Delivery, kinds: &[FactKind], at: Timestamp) -> Edit {
    Edit {
        changed: true,
        facts: kinds
            .iter()
            .map(|kind| DeliveryFact::of(delivery, *kind, at))
            .collect(),
    }
}

fn check_transition(delivery: &Delivery, expected: Status, next: Status) -> Result<(), QueueError> {
    debug_assert!(
        expected.can_become(next),
        "{expected} -> {next} is not an edge"
    );
    if delivery.status != expected || !delivery.status.can_become(next) {
        return Err(QueueError::InvalidTransition {
            id: delivery.id,
            from: delivery.status,
            to: next,
        });
    }
    Ok(())
}
