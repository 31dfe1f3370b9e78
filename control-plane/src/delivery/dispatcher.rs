//! [`Dispatcher`]: one worker loop per registered channel that claims due
//! deliveries, sends them concurrently (at most the channel's concurrency
//! at a time) and records each outcome through the [`RetryPolicy`].
//!
//! A worker claims due deliveries in batches (one transaction for twice
//! its concurrency), and looks again when its channel's
//! [`Notify`](tokio::sync::Notify) fires (something was enqueued or
//! requeued), when a claim came back full, or every `poll_interval` (to
//! pick up deliveries whose `not_before` passed). The concurrency limits
//! provider calls; recording outcomes is the queue's group commit.
//! Time comes from a [`Clock`], so tests move schedule time by hand.
//! On shutdown a worker stops claiming and waits for its in-flight sends
//! (each is one provider call with the channel's own timeout) so their
//! outcomes are recorded; anything interrupted harder stays claimed until
//! its claim expires, and is then requeued by the sweep every dispatcher
//! runs ([`DeliveryQueue::requeue_expired`], every [`CLAIM_SWEEP`]: one
//! replica's crash is repaired by the others), or at once by
//! [`DeliveryQueue::recover`] at the next start on SQLite.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::metrics::DeliveryMetrics;
use super::model::{Delivery, Status};
use super::queue::{Completion, DeliveryQueue, QueueError};
use super::retry::{Decision, RetryPolicy};
use crate::channels::{Channel, ChannelKind, Recipient, SendError};

/// Called when a provider says a recipient is gone (APNs 410, FCM
/// `UNREGISTERED`, …), so the device registry deactivates it. The `&str`
/// is the provider's answer, kept as the reason. The attempt awaits the
/// returned future before it records the failure, so whoever sees the
/// failed delivery finds the device deactivated.
pub type InvalidRecipientHook = Arc<
    dyn Fn(ChannelKind, &Recipient, &str) -> futures::future::BoxFuture<'static, ()> + Send + Sync,
>;

/// Decides, when a delivery that needs it (a workflow step, a held
/// broadcast delivery: [`needs_check`]) is claimed, whether it still goes
/// out (see [`crate::send_check`]); `Err` is a failure to look (the
/// delivery is retried like a failed send).
pub type SendCheck = Arc<
    dyn Fn(&Delivery) -> futures::future::BoxFuture<'static, Result<SendVerdict, String>>
        + Send
        + Sync,
>;

/// The outcome of a [`SendCheck`], with what was checked or found: a
/// non-empty note of a `Proceed` goes into the attempt log (`proceeded`),
/// a `Skip`'s reason always (`skipped`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendVerdict {
    Proceed(String),
    Skip(String),
}

/// Whether `delivery` is checked before its send.
pub fn needs_check(delivery: &Delivery) -> bool {
    delivery.step.is_some() || delivery.broadcast.is_some()
}

/// In-app's concurrency when `concurrency` has no entry for it. An in-app
/// "send" is a write to the inbox, whose concurrent writes share one
/// transaction (group commit): there is no provider to protect, and more
/// sends in flight make bigger groups, not more load. Measured on SQLite
/// (`nudge-bench --only notify`): 16 in flight gave ~1.1k in-app
/// notifications/s, 256 gave ~2.6k.
pub const IN_APP_CONCURRENCY: usize = 256;

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub retry: RetryPolicy,
    /// Concurrent sends per channel when `concurrency` has no entry
    /// (in-app: [`IN_APP_CONCURRENCY`]).
    pub default_concurrency: usize,
    /// Per-channel overrides: providers' rate limits differ widely.
    pub concurrency: HashMap<ChannelKind, usize>,
    /// Fallback wake-up for deliveries that became due by the clock.
    pub poll_interval: Duration,
    /// How often the queue-depth gauges are refreshed (a scan of the
    /// indexes).
    pub depth_interval: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            retry: RetryPolicy::default(),
            default_concurrency: 16,
            concurrency: HashMap::new(),
            poll_interval: Duration::from_millis(250),
            depth_interval: Duration::from_secs(5),
        }
    }
}

impl DispatcherConfig {
    /// Never 0: a channel with no slots would never drain.
    pub fn concurrency_for(&self, channel: ChannelKind) -> usize {
        let default = match channel {
            ChannelKind::InApp => IN_APP_CONCURRENCY,
            _ => self.default_concurrency,
        };
        self.concurrency
            .get(&channel)
            .copied()
            .unwrap_or(default)
            .max(1)
    }
}

pub struct Dispatcher {
    queue: DeliveryQueue,
    channels: HashMap<ChannelKind, Arc<dyn Channel>>,
    config: DispatcherConfig,
    clock: Arc<dyn Clock>,
    metrics: DeliveryMetrics,
    on_invalid_recipient: Option<InvalidRecipientHook>,
    send_check: Option<SendCheck>,
    rng: StdRng,
}

/// What every send task shares.
struct Shared {
    queue: DeliveryQueue,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    metrics: DeliveryMetrics,
    on_invalid_recipient: Option<InvalidRecipientHook>,
    /// Without one, workflow steps and held broadcast deliveries go out
    /// unchecked.
    send_check: Option<SendCheck>,
    /// Jitter source; seeded in tests for reproducible schedules.
    rng: Mutex<StdRng>,
}

impl Dispatcher {
    pub fn new(
        queue: DeliveryQueue,
        config: DispatcherConfig,
        clock: Arc<dyn Clock>,
        metrics: DeliveryMetrics,
    ) -> Self {
        Dispatcher {
            queue,
            channels: HashMap::new(),
            config,
            clock,
            metrics,
            on_invalid_recipient: None,
            send_check: None,
            rng: StdRng::from_os_rng(),
        }
    }

    /// Registers the channel for its [`Channel::kind`]; deliveries of a
    /// kind with no channel stay queued.
    #[must_use]
    pub fn with_channel(mut self, channel: Arc<dyn Channel>) -> Self {
        self.channels.insert(channel.kind(), channel);
        self
    }

    #[must_use]
    pub fn on_invalid_recipient(mut self, hook: InvalidRecipientHook) -> Self {
        self.on_invalid_recipient = Some(hook);
        self
    }

    /// Checks the deliveries that need it when they come due (see
    /// [`SendCheck`]).
    #[must_use]
    pub fn with_send_check(mut self, check: SendCheck) -> Self {
        self.send_check = Some(check);
        self
    }

    /// Replaces the jitter source, for reproducible tests.
    #[must_use]
    pub fn with_rng(mut self, rng: StdRng) -> Self {
        self.rng = rng;
        self
    }

    /// Requeues deliveries a previous run left in `Sending`, then runs the
    /// workers until `shutdown` is cancelled and their in-flight sends are
    /// recorded. Run one dispatcher per database.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), QueueError> {
        self.queue.recover(self.clock.now()).await?;
        let shared = Arc::new(Shared {
            queue: self.queue,
            retry: self.config.retry.clone(),
            clock: self.clock,
            metrics: self.metrics,
            on_invalid_recipient: self.on_invalid_recipient,
            send_check: self.send_check,
            rng: Mutex::new(self.rng),
        });
        let mut workers = JoinSet::new();
        for (kind, channel) in self.channels {
            let limit = self.config.concurrency_for(kind);
            tracing::info!(channel = %kind, concurrency = limit, "delivery worker starting");
            workers.spawn(work(
                Arc::clone(&shared),
                channel,
                limit,
                self.config.poll_interval,
                shutdown.clone(),
            ));
        }
        workers.spawn(sweep_expired_claims(Arc::clone(&shared), shutdown.clone()));
        workers.spawn(report_depth(
            Arc::clone(&shared),
            self.config.depth_interval,
            shutdown,
        ));
        while let Some(joined) = workers.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "delivery worker panicked");
            }
        }
        Ok(())
    }
}

/// How often every dispatcher requeues expired claims.
pub const CLAIM_SWEEP: Duration = Duration::from_secs(30);

/// Requeues claims whose replica died mid-send, every [`CLAIM_SWEEP`]
/// until `shutdown`. Every replica runs it: the statement is one atomic
/// update, so two sweeps never requeue one delivery twice.
async fn sweep_expired_claims(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CLAIM_SWEEP) => {}
        }
        if let Err(error) = shared.queue.requeue_expired(shared.clock.now()).await {
            tracing::warn!(%error, retry_in = ?CLAIM_SWEEP, "cannot requeue expired delivery claims");
        }
    }
}

async fn work(
    shared: Arc<Shared>,
    channel: Arc<dyn Channel>,
    limit: usize,
    poll_interval: Duration,
    shutdown: CancellationToken,
) {
    let kind = channel.kind();
    // The series exists from the start (0), so dashboards see every
    // worker's channel before its first claim.
    shared.metrics.claims.with_label_values(&[kind.as_str()]);
    // Provider calls at most `limit` at a time. Recording an outcome does
    // not hold a slot: it waits for the queue's group commit, not for the
    // provider, so slow commits never idle the provider's capacity.
    let slots = Arc::new(Semaphore::new(limit));
    let mut attempts = JoinSet::new();
    // Claimed (`Sending`) and not started yet: claims are taken in batches
    // of twice the concurrency, one transaction each, and refilled at half.
    let mut claimed: VecDeque<Delivery> = VecDeque::new();
    let claim_batch = limit.saturating_mul(2).max(1);
    // Attempts waiting for their outcome to commit, at most; claiming
    // pauses beyond it, so a stalled database bounds what is held.
    let max_attempts = limit.saturating_mul(8).max(8);
    // Whether the queue may hold due deliveries we have not claimed: set by
    // a wake-up, the poll and a full claim; cleared by a short one.
    let mut look = true;
    while !shutdown.is_cancelled() {
        while attempts.try_join_next().is_some() {}
        if look && claimed.len() <= limit / 2 && attempts.len() < max_attempts {
            let want = claim_batch - claimed.len();
            match shared.queue.claim_due(kind, shared.clock.now(), want).await {
                Ok(batch) => {
                    look = batch.len() == want;
                    shared
                        .metrics
                        .claims
                        .with_label_values(&[kind.as_str()])
                        .inc_by(u64::try_from(batch.len()).unwrap_or(u64::MAX));
                    claimed.extend(batch);
                }
                Err(error) => {
                    look = false;
                    tracing::error!(channel = %kind, %error, "cannot claim deliveries");
                }
            }
        }
        if let Some(delivery) = claimed.pop_front() {
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => slot,
                () = shutdown.cancelled() => {
                    claimed.push_front(delivery);
                    break;
                }
            };
            let Ok(slot) = slot else {
                break;
            };
            attempts.spawn(attempt(
                Arc::clone(&shared),
                Arc::clone(&channel),
                delivery,
                slot,
            ));
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = shared.queue.waker(kind).notified() => look = true,
            Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
            () = tokio::time::sleep(poll_interval) => look = true,
        }
    }
    // Claimed but never sent: back to the queue now rather than at the
    // next start's recovery.
    let now = shared.clock.now();
    for delivery in claimed {
        if let Err(error) = shared.queue.release(delivery.id, now).await {
            tracing::warn!(delivery_id = %delivery.id, %error, "claimed delivery not released; the next start requeues it");
        }
    }
    while attempts.join_next().await.is_some() {}
    tracing::info!(channel = %kind, "delivery worker stopped");
}

/// One provider call for one claimed delivery, and its recorded outcome.
async fn attempt(
    shared: Arc<Shared>,
    channel: Arc<dyn Channel>,
    delivery: Delivery,
    slot: OwnedSemaphorePermit,
) {
    let kind = delivery.channel;
    let metrics = &shared.metrics;
    // A workflow step or a held broadcast delivery is checked first: the
    // user's engagement, or a cancel, since it was planned may stop it.
    let mut step_note = None;
    let checked = match &shared.send_check {
        Some(check) if needs_check(&delivery) => match check(&delivery).await {
            Ok(SendVerdict::Proceed(note)) => {
                step_note = Some(note).filter(|note| !note.is_empty());
                Ok(())
            }
            Ok(SendVerdict::Skip(reason)) => Err(Completion::Skipped(reason)),
            Err(error) => Err(failed(
                &shared,
                &delivery,
                SendError::Retriable {
                    answer: format!("cannot check whether it still goes out: {error}"),
                    retry_after: None,
                },
            )),
        },
        _ => Ok(()),
    };
    let completion = match checked {
        Err(completion) => {
            drop(slot);
            completion
        }
        Ok(()) => {
            metrics.attempts.with_label_values(&[kind.as_str()]).inc();
            let result = channel.send(&delivery.message, &delivery.recipient).await;
            drop(slot);
            match result {
                Ok(receipt) => Completion::Sent(receipt),
                Err(error) => failed(&shared, &delivery, error),
            }
        }
    };
    let now = shared.clock.now();
    // The device goes off before the failure is recorded: whoever sees the
    // failed delivery sees the device deactivated too.
    if let (
        Completion::Failed {
            error: error @ SendError::InvalidRecipient { .. },
            ..
        },
        Some(hook),
    ) = (&completion, &shared.on_invalid_recipient)
    {
        hook(kind, &delivery.recipient, error.answer()).await;
    }
    let updated = match shared
        .queue
        .complete_claimed(&delivery, &completion, step_note, now)
        .await
    {
        Ok(updated) => updated,
        Err(error @ QueueError::ClaimLost(_)) => {
            // Requeued after the claim expired: another attempt decides.
            tracing::warn!(delivery_id = %delivery.id, channel = %kind, %error, "outcome dropped; the delivery was requeued meanwhile");
            return;
        }
        Err(error) => {
            // Left in Sending: requeued once its claim expires.
            tracing::error!(delivery_id = %delivery.id, channel = %kind, %error, "cannot record delivery outcome");
            return;
        }
    };
    let outcome = match &completion {
        Completion::Sent(_) => {
            let latency = now.duration_since(updated.first_due_at).as_secs_f64();
            metrics
                .latency
                .with_label_values(&[kind.as_str()])
                .observe(latency.max(0.0));
            "sent"
        }
        Completion::Failed { error, decision } => {
            let outcome = outcome_label(error, *decision);
            if updated.status == Status::DeadLettered {
                metrics
                    .dead_letters
                    .with_label_values(&[kind.as_str()])
                    .inc();
                tracing::warn!(delivery_id = %delivery.id, channel = %kind, attempts = updated.attempts, answer = error.answer(), "delivery dead-lettered");
            } else {
                tracing::debug!(delivery_id = %delivery.id, channel = %kind, outcome, answer = error.answer(), "delivery attempt failed");
            }
            outcome
        }
        Completion::Skipped(reason) => {
            tracing::info!(delivery_id = %delivery.id, channel = %kind, %reason, "delivery cancelled before its send");
            "cancelled"
        }
    };
    metrics
        .deliveries
        .with_label_values(&[kind.as_str(), outcome])
        .inc();
}

/// A failed attempt with its retry decision.
fn failed(shared: &Shared, delivery: &Delivery, error: SendError) -> Completion {
    let attempts_made = delivery.attempts.saturating_add(1);
    let now = shared.clock.now();
    let decision = {
        let mut rng = shared.rng.lock().unwrap();
        shared.retry.decide(attempts_made, &error, now, &mut *rng)
    };
    Completion::Failed { error, decision }
}

fn outcome_label(error: &SendError, decision: Decision) -> &'static str {
    match (error, decision) {
        (_, Decision::RetryAt(_)) => "retry",
        (_, Decision::DeadLetter) => "dead_lettered",
        (SendError::InvalidRecipient { .. }, Decision::Fail) => "invalid_recipient",
        (_, Decision::Fail) => "failed",
    }
}

async fn report_depth(shared: Arc<Shared>, interval: Duration, shutdown: CancellationToken) {
    loop {
        match shared.queue.depth_by_channel_and_status().await {
            Ok(depths) => shared.metrics.set_depths(&depths),
            Err(error) => tracing::warn!(%error, "cannot measure delivery queue depth"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
