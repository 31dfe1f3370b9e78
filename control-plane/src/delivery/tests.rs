//! Queue and dispatcher behaviour against a real (SQLite) database in a
//! tempdir and a scripted in-memory channel (real channels have their own
//! tests). Schedule time moves only through the [`ManualClock`]; real time
//! is only spent waiting for async work to happen.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::channels::{Channel, ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt};

fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

async fn open(dir: &tempfile::TempDir) -> (crate::storage::Stores, DeliveryQueue) {
    let stores = crate::storage::Stores::open_embedded(dir.path())
        .await
        .unwrap();
    let queue = stores.deliveries.clone();
    (stores, queue)
}

fn delivery(
    channel: ChannelKind,
    priority: Priority,
    not_before: Timestamp,
    now: Timestamp,
) -> Delivery {
    Delivery::new(
        NewDelivery {
            notification_id: "n-1".into(),
            user_id: "u-1".into(),
            channel,
            priority,
            message: OutboundMessage {
                subject: "hello".into(),
                ..OutboundMessage::default()
            },
            recipient: Recipient::Email {
                address: "ada@example.com".into(),
                name: None,
            },
            not_before: Some(not_before),
        },
        now,
    )
}

/// Answers from a script (then successes), recording what it sent and how
/// many sends overlapped.
struct FakeChannel {
    kind: ChannelKind,
    script: Mutex<VecDeque<SendError>>,
    /// When set, every send fails like this once the script is empty.
    always: Mutex<Option<SendError>>,
    sent: Mutex<Vec<String>>,
    delay: Duration,
    current: AtomicUsize,
    max_concurrent: AtomicUsize,
}

impl FakeChannel {
    fn new(kind: ChannelKind) -> Arc<Self> {
        Self::with_delay(kind, Duration::ZERO)
    }

    fn with_delay(kind: ChannelKind, delay: Duration) -> Arc<Self> {
        Arc::new(FakeChannel {
            kind,
            script: Mutex::new(VecDeque::new()),
            always: Mutex::new(None),
            sent: Mutex::new(Vec::new()),
            delay,
            current: AtomicUsize::new(0),
            max_concurrent: AtomicUsize::new(0),
        })
    }

    fn fail_next(&self, error: SendError) {
        self.script.lock().unwrap().push_back(error);
    }

    fn calls(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Channel for FakeChannel {
    fn kind(&self) -> ChannelKind {
        self.kind
    }

    async fn send(
        &self,
        message: &OutboundMessage,
        _: &Recipient,
    ) -> Result<SendReceipt, SendError> {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_concurrent.fetch_max(now, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.current.fetch_sub(1, Ordering::SeqCst);
        self.sent.lock().unwrap().push(message.delivery_id.clone());
        let scripted = self.script.lock().unwrap().pop_front();
        let failure = scripted.or_else(|| self.always.lock().unwrap().clone());
        match failure {
            Some(error) => Err(error),
            None => Ok(SendReceipt {
                provider_message_id: Some(format!("p-{}", message.delivery_id)),
                answer: "250 ok".into(),
            }),
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    /// Held so the database stays open.
    _stores: crate::storage::Stores,
    queue: DeliveryQueue,
    clock: Arc<ManualClock>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), QueueError>>,
}

impl Harness {
    /// Waits (in real time, up to 5 s) until `done` holds for delivery
    /// `id`, moving the manual clock by `step` on every look.
    async fn wait(
        &self,
        id: Uuid,
        step: SignedDuration,
        done: impl Fn(&Delivery) -> bool,
    ) -> Delivery {
        for _ in 0..1000 {
            let delivery = self.queue.get(id).await.unwrap().unwrap();
            if done(&delivery) {
                return delivery;
            }
            self.clock.advance(step);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "delivery {id} never reached the expected state: {:?}",
            self.queue.get(id).await
        );
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(2),
        max_attempts: 3,
    }
}

async fn harness(
    channel: Arc<FakeChannel>,
    config: DispatcherConfig,
    hook: Option<InvalidRecipientHook>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let (stores, queue) = open(&dir).await;
    let clock = Arc::new(ManualClock::new(start()));
    let mut dispatcher = Dispatcher::new(
        queue.clone(),
        config,
        Arc::clone(&clock) as Arc<dyn Clock>,
        DeliveryMetrics::new().unwrap(),
    )
    .with_channel(channel)
    .with_rng(StdRng::seed_from_u64(42));
    if let Some(hook) = hook {
        dispatcher = dispatcher.on_invalid_recipient(hook);
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(dispatcher.run(shutdown.clone()));
    Harness {
        _dir: dir,
        _stores: stores,
        queue,
        clock,
        shutdown,
        task,
    }
}

fn config() -> DispatcherConfig {
    DispatcherConfig {
        retry: policy(),
        poll_interval: Duration::from_millis(5),
        ..DispatcherConfig::default()
    }
}

#[tokio::test]
async fn claims_high_priority_first_then_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let now = start();
    let earlier = now - SignedDuration::from_secs(60);
    let low = delivery(ChannelKind::Email, Priority::Low, now, now);
    let normal = delivery(ChannelKind::Email, Priority::Normal, now, now);
    let high_new = delivery(ChannelKind::Email, Priority::High, now, now);
    let mut high_old = delivery(ChannelKind::Email, Priority::High, now, now);
    high_old.not_before = earlier;
    let other_channel = delivery(ChannelKind::Sms, Priority::High, now, now);
    for item in [&low, &normal, &high_new, &high_old, &other_channel] {
        queue.enqueue(item.clone()).await.unwrap();
    }
    let claimed: Vec<Uuid> = queue
        .claim_due(ChannelKind::Email, now, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(claimed, [high_old.id, high_new.id, normal.id, low.id]);
    assert_eq!(
        queue.get(low.id).await.unwrap().unwrap().status,
        Status::Sending
    );
    assert_eq!(
        queue.get(other_channel.id).await.unwrap().unwrap().status,
        Status::Queued
    );
    let depth = queue.depth_by_channel_and_status().await.unwrap();
    assert_eq!(depth[&(ChannelKind::Email, Status::Sending)], 4);
    assert_eq!(depth[&(ChannelKind::Sms, Status::Queued)], 1);
    assert_eq!(depth[&(ChannelKind::Email, Status::Queued)], 0);
}

#[tokio::test]
async fn future_not_before_waits_for_the_clock() {
    let channel = FakeChannel::new(ChannelKind::Email);
    let h = harness(Arc::clone(&channel), config(), None).await;
    let now = h.clock.now();
    let held = delivery(
        ChannelKind::Email,
        Priority::High,
        now + SignedDuration::from_hours(1),
        now,
    );
    h.queue.enqueue(held.clone()).await.unwrap();
    assert!(
        h.queue
            .claim_due(ChannelKind::Email, now, 10)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(channel.calls(), 0, "sent before its time");
    h.clock.advance(SignedDuration::from_mins(59));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(channel.calls(), 0, "sent before its time");
    h.clock.advance(SignedDuration::from_mins(1));
    let sent = h
        .wait(held.id, SignedDuration::ZERO, |d| d.status == Status::Sent)
        .await;
    assert_eq!(sent.sent_at, Some(now + SignedDuration::from_hours(1)));
    assert_eq!(sent.provider_message_id, Some(format!("p-{}", held.id)));
    h.stop().await;
}

#[tokio::test]
async fn retriable_failure_reschedules_and_honours_retry_after() {
    let channel = FakeChannel::new(ChannelKind::Email);
    channel.fail_next(SendError::Retriable {
        answer: "421 busy".into(),
        retry_after: Some(Duration::from_secs(60)),
    });
    let h = harness(Arc::clone(&channel), config(), None).await;
    let now = h.clock.now();
    let item = delivery(ChannelKind::Email, Priority::Normal, now, now);
    h.queue.enqueue(item.clone()).await.unwrap();
    let queued = h
        .wait(item.id, SignedDuration::ZERO, |d| {
            d.attempts == 1 && d.status == Status::Queued
        })
        .await;
    // The policy's jitter is at most 1 s; the provider asked for 60 s.
    assert_eq!(queued.not_before, now + SignedDuration::from_secs(60));
    assert_eq!(queued.last_answer.as_deref(), Some("421 busy"));
    h.clock.advance(SignedDuration::from_secs(59));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(channel.calls(), 1, "retried before Retry-After");
    h.clock.advance(SignedDuration::from_secs(1));
    let sent = h
        .wait(item.id, SignedDuration::ZERO, |d| d.status == Status::Sent)
        .await;
    let outcomes: Vec<AttemptOutcome> = sent.attempt_log.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::Retriable, AttemptOutcome::Sent]);
    assert_eq!(sent.attempts, 2);
    h.stop().await;
}

#[tokio::test]
async fn dead_letter_after_max_attempts_then_manual_retry_delivers() {
    let channel = FakeChannel::new(ChannelKind::Email);
    *channel.always.lock().unwrap() = Some(SendError::Retriable {
        answer: "451 mailbox busy".into(),
        retry_after: None,
    });
    let h = harness(Arc::clone(&channel), config(), None).await;
    let now = h.clock.now();
    let item = delivery(ChannelKind::Email, Priority::Normal, now, now);
    h.queue.enqueue(item.clone()).await.unwrap();
    // Each look moves the clock past the longest backoff (2 s).
    let dead = h
        .wait(item.id, SignedDuration::from_secs(3), |d| {
            d.status == Status::DeadLettered
        })
        .await;
    assert_eq!(dead.attempts, 3);
    assert_eq!(channel.calls(), 3);
    assert_eq!(dead.last_answer.as_deref(), Some("451 mailbox busy"));
    let listed = h
        .queue
        .list_dead_letters(Some(ChannelKind::Email), 10, None)
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), [item.id]);
    assert!(
        h.queue
            .list_dead_letters(Some(ChannelKind::Sms), 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.queue
            .list_dead_letters(None, 10, Some(item.id))
            .await
            .unwrap()
            .is_empty()
    );

    *channel.always.lock().unwrap() = None;
    let requeued = h
        .queue
        .retry_dead_letter(item.id, h.clock.now())
        .await
        .unwrap();
    assert_eq!((requeued.status, requeued.attempts), (Status::Queued, 0));
    let sent = h
        .wait(item.id, SignedDuration::ZERO, |d| d.status == Status::Sent)
        .await;
    assert_eq!(sent.attempt_log.len(), 4);
    let delivered = h
        .queue
        .mark_delivered(item.id, h.clock.now())
        .await
        .unwrap();
    assert_eq!(delivered.status, Status::Delivered);
    assert!(delivered.delivered_at.is_some());
    assert!(
        h.queue
            .list_dead_letters(None, 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    // Delivered is final.
    assert!(
        h.queue
            .retry_dead_letter(item.id, h.clock.now())
            .await
            .is_err()
    );
    h.stop().await;
}

#[tokio::test]
async fn permanent_failure_fails_without_retries() {
    let channel = FakeChannel::new(ChannelKind::Email);
    channel.fail_next(SendError::Permanent {
        answer: "554 rejected".into(),
    });
    let h = harness(Arc::clone(&channel), config(), None).await;
    let now = h.clock.now();
    let item = delivery(ChannelKind::Email, Priority::Normal, now, now);
    h.queue.enqueue(item.clone()).await.unwrap();
    let failed = h
        .wait(item.id, SignedDuration::from_secs(3), |d| {
            d.status == Status::Failed
        })
        .await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(channel.calls(), 1);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.attempt_log[0].outcome, AttemptOutcome::Permanent);
    assert_eq!(failed.last_answer.as_deref(), Some("554 rejected"));
    h.stop().await;
}

#[tokio::test]
async fn invalid_recipient_fails_and_calls_the_hook() {
    let channel = FakeChannel::new(ChannelKind::Apns);
    channel.fail_next(SendError::InvalidRecipient {
        answer: "410 Unregistered".into(),
    });
    let reported: Arc<Mutex<Vec<(ChannelKind, Recipient)>>> = Arc::default();
    let hook: InvalidRecipientHook = {
        let reported = Arc::clone(&reported);
        Arc::new(move |kind, recipient: &Recipient, _answer: &str| {
            reported.lock().unwrap().push((kind, recipient.clone()));
            Box::pin(async {})
        })
    };
    let h = harness(Arc::clone(&channel), config(), Some(hook)).await;
    let now = h.clock.now();
    let item = delivery(ChannelKind::Apns, Priority::High, now, now);
    h.queue.enqueue(item.clone()).await.unwrap();
    let failed = h
        .wait(item.id, SignedDuration::ZERO, |d| {
            d.status == Status::Failed
        })
        .await;
    assert_eq!(
        failed.attempt_log[0].outcome,
        AttemptOutcome::InvalidRecipient
    );
    // The hook runs once the outcome is recorded, just after the status
    // this test saw: wait for it.
    for _ in 0..500 {
        if !reported.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        *reported.lock().unwrap(),
        [(ChannelKind::Apns, item.recipient.clone())]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let now = start();
    let mut ids = HashSet::new();
    for i in 0..200 {
        let priority = Priority::ALL[i % 3];
        let item = delivery(ChannelKind::Webhook, priority, now, now);
        ids.insert(item.id);
        queue.enqueue(item).await.unwrap();
    }
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = queue.claim_due(ChannelKind::Webhook, now, 7).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "{id} claimed twice");
        }
    }
    assert_eq!(total, 200);
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn restart_recovers_sending_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let now = start();
    let items: Vec<Delivery> = (0..3)
        .map(|_| delivery(ChannelKind::Sms, Priority::Normal, now, now))
        .collect();
    let dead_id;
    {
        let (_stores, queue) = open(&dir).await;
        for item in &items {
            queue.enqueue(item.clone()).await.unwrap();
        }
        let claimed = queue.claim_due(ChannelKind::Sms, now, 2).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let dead = queue
            .complete(
                claimed[0].id,
                &Completion::Failed {
                    error: SendError::Retriable {
                        answer: "503".into(),
                        retry_after: None,
                    },
                    decision: Decision::DeadLetter,
                },
                now,
            )
            .await
            .unwrap();
        dead_id = dead.id;
        _stores.close().await.unwrap();
        // Simulated crash: one delivery is still Sending.
    }
    let (_stores, queue) = open(&dir).await;
    assert_eq!(queue.recover(now).await.unwrap(), 1);
    let mut statuses = Vec::new();
    for item in &items {
        statuses.push(queue.get(item.id).await.unwrap().unwrap().status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == Status::Queued).count(), 2);
    assert_eq!(
        queue.get(dead_id).await.unwrap().unwrap().status,
        Status::DeadLettered
    );
    assert_eq!(
        queue
            .claim_due(ChannelKind::Sms, now, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        queue.list_dead_letters(None, 10, None).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn per_channel_concurrency_is_respected() {
    let channel = FakeChannel::with_delay(ChannelKind::Webhook, Duration::from_millis(20));
    let mut config = config();
    config.concurrency.insert(ChannelKind::Webhook, 3);
    let h = harness(Arc::clone(&channel), config, None).await;
    let now = h.clock.now();
    let mut ids = Vec::new();
    for _ in 0..12 {
        let item = delivery(ChannelKind::Webhook, Priority::Normal, now, now);
        ids.push(item.id);
        h.queue.enqueue(item).await.unwrap();
    }
    for id in &ids {
        h.wait(*id, SignedDuration::ZERO, |d| d.status == Status::Sent)
            .await;
    }
    assert_eq!(channel.max_concurrent.load(Ordering::SeqCst), 3);
    h.stop().await;
}

#[tokio::test]
async fn enqueue_rejects_duplicates_and_non_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let now = start();
    let item = delivery(ChannelKind::InApp, Priority::Low, now, now);
    queue.enqueue(item.clone()).await.unwrap();
    assert!(matches!(
        queue.enqueue(item.clone()).await,
        Err(QueueError::AlreadyExists(_))
    ));
    let mut sent = item;
    sent.id = Uuid::now_v7();
    sent.status = Status::Sent;
    assert!(queue.enqueue(sent).await.is_err());
}

/// Provider callbacks: a sent delivery is found by the provider's message
/// id on its channel only, and moves to `delivered` or (reported
/// undeliverable) `failed`, each idempotently and never back.
#[tokio::test]
async fn provider_callbacks_find_sent_deliveries_and_move_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let now = start();
    let send = |sid: Option<&str>| {
        let queue = queue.clone();
        let sid = sid.map(str::to_owned);
        async move {
            let item = delivery(ChannelKind::Sms, Priority::Normal, now, now);
            queue.enqueue(item.clone()).await.unwrap();
            let claimed = queue.claim_due(ChannelKind::Sms, now, 1).await.unwrap();
            assert_eq!(claimed[0].id, item.id);
            let receipt = SendReceipt {
                provider_message_id: sid,
                answer: "queued".into(),
            };
            queue
                .complete(item.id, &Completion::Sent(receipt), now)
                .await
                .unwrap();
            item.id
        }
    };
    let first = send(Some("SM1")).await;
    let second = send(Some("SM2")).await;
    send(None).await;

    assert_eq!(
        queue
            .find_by_provider_id(ChannelKind::Sms, "SM1")
            .await
            .unwrap(),
        Some(first)
    );
    assert_eq!(
        queue
            .find_by_provider_id(ChannelKind::Email, "SM1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        queue
            .find_by_provider_id(ChannelKind::Sms, "SM9")
            .await
            .unwrap(),
        None
    );

    let later = now + SignedDuration::from_secs(5);
    let delivered = queue.mark_delivered(first, later).await.unwrap();
    assert_eq!(delivered.status, Status::Delivered);
    assert!(matches!(
        queue.mark_undeliverable(first, "too late", later).await,
        Err(QueueError::InvalidTransition { .. })
    ));

    let failed = queue
        .mark_undeliverable(
            second,
            "Twilio reported undelivered (Twilio error 30003)",
            later,
        )
        .await
        .unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(
        failed.last_answer.as_deref(),
        Some("Twilio reported undelivered (Twilio error 30003)")
    );
    assert_eq!(
        failed.sent_at,
        Some(now),
        "it was sent; the provider failed it"
    );
    let again = queue
        .mark_undeliverable(second, "again", later)
        .await
        .unwrap();
    assert_eq!(again.last_answer, failed.last_answer, "idempotent");
    assert!(matches!(
        queue.mark_delivered(second, later).await,
        Err(QueueError::InvalidTransition { .. })
    ));
    assert_eq!(
        queue.get(second).await.unwrap().unwrap().status,
        Status::Failed
    );
}

/// A delivery of `channel` the provider accepted (with `sid`, if any).
async fn sent(queue: &DeliveryQueue, channel: ChannelKind, sid: Option<&str>) -> Uuid {
    let now = start();
    let item = delivery(channel, Priority::Normal, now, now);
    queue.enqueue(item.clone()).await.unwrap();
    let claimed = queue.claim_due(channel, now, 1).await.unwrap();
    assert_eq!(claimed[0].id, item.id);
    let receipt = SendReceipt {
        provider_message_id: sid.map(str::to_owned),
        answer: "250 OK".into(),
    };
    queue
        .complete(item.id, &Completion::Sent(receipt), now)
        .await
        .unwrap();
    item.id
}

/// Engagement: an open proves delivery, the status only climbs
/// (sent → delivered → opened/read → clicked), each timestamp is the
/// first one, repeats change nothing, and late callbacks never move a
/// status back.
#[tokio::test]
async fn engagement_climbs_the_ladder_and_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let id = sent(&queue, ChannelKind::Email, Some("<m1@example.com>")).await;
    let t = |seconds| start() + SignedDuration::from_secs(seconds);

    // An open on a `sent` delivery: opened, and delivered at the same time.
    let opened = queue
        .record_engagement(id, Engagement::Opened, t(10))
        .await
        .unwrap();
    assert_eq!(opened.status, Status::Opened);
    assert_eq!(opened.opened_at, Some(t(10)));
    assert_eq!(opened.delivered_at, Some(t(10)));
    // Again, later: the first open is kept, nothing is written.
    let again = queue
        .record_engagement(id, Engagement::Opened, t(20))
        .await
        .unwrap();
    assert_eq!(again, opened);

    let clicked = queue
        .record_engagement(id, Engagement::Clicked, t(30))
        .await
        .unwrap();
    assert_eq!(clicked.status, Status::Clicked);
    assert_eq!(clicked.clicked_at, Some(t(30)));
    assert_eq!(clicked.opened_at, Some(t(10)));

    // Late news never moves it back.
    assert_eq!(
        queue.mark_delivered(id, t(40)).await.unwrap().status,
        Status::Clicked
    );
    let late_open = queue
        .record_engagement(id, Engagement::Opened, t(50))
        .await
        .unwrap();
    assert_eq!(late_open, clicked);
    assert!(matches!(
        queue.mark_bounced(id, "hard bounce", t(60)).await,
        Err(QueueError::InvalidTransition {
            from: Status::Clicked,
            to: Status::Failed,
            ..
        })
    ));
    let read = queue
        .record_engagement(id, Engagement::Read, t(70))
        .await
        .unwrap();
    assert_eq!((read.status, read.read_at), (Status::Clicked, Some(t(70))));
    assert_eq!(
        queue.get(id).await.unwrap().unwrap().delivered_at,
        Some(t(10))
    );

    // Opened and read are one rung: the second keeps the status.
    let other = sent(&queue, ChannelKind::InApp, None).await;
    let read = queue
        .record_engagement(other, Engagement::Read, t(5))
        .await
        .unwrap();
    assert_eq!(read.status, Status::Read);
    let opened = queue
        .record_engagement(other, Engagement::Opened, t(6))
        .await
        .unwrap();
    assert_eq!(
        (opened.status, opened.opened_at),
        (Status::Read, Some(t(6)))
    );
}

/// What takes no engagement is refused and left as it is.
#[tokio::test]
async fn engagement_is_refused_before_sending_and_after_failing() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let now = start();
    // Held (quiet hours), so the sends below do not claim it.
    let held = now + SignedDuration::from_hours(1);
    let queued = delivery(ChannelKind::Email, Priority::Normal, held, now);
    queue.enqueue(queued.clone()).await.unwrap();
    assert!(matches!(
        queue
            .record_engagement(queued.id, Engagement::Opened, now)
            .await,
        Err(QueueError::InvalidTransition {
            from: Status::Queued,
            to: Status::Opened,
            ..
        })
    ));
    assert_eq!(queue.get(queued.id).await.unwrap().unwrap(), queued);

    let bounced = sent(&queue, ChannelKind::Email, Some("<m2@example.com>")).await;
    let failed = queue
        .mark_bounced(bounced, "550 5.1.1 no such user", now)
        .await
        .unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(
        failed.last_answer.as_deref(),
        Some("550 5.1.1 no such user")
    );
    assert_eq!(
        queue
            .mark_bounced(bounced, "again", now)
            .await
            .unwrap()
            .last_answer,
        failed.last_answer,
        "idempotent"
    );
    let error = queue
        .record_engagement(bounced, Engagement::Clicked, now)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot go from failed to clicked"),
        "{error}"
    );
    assert_eq!(queue.get(bounced).await.unwrap().unwrap(), failed);
    assert!(matches!(
        queue
            .record_engagement(Uuid::now_v7(), Engagement::Read, now)
            .await,
        Err(QueueError::NotFound(_))
    ));
}

/// Bounces and complaints from an email provider's callback.
#[tokio::test]
async fn bounces_and_complaints() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let t = |seconds| start() + SignedDuration::from_secs(seconds);

    // A hard bounce may follow `delivered` (accepted, bounced later).
    let late = sent(&queue, ChannelKind::Email, None).await;
    queue.mark_delivered(late, t(1)).await.unwrap();
    let failed = queue
        .mark_bounced(late, "bounced after all", t(2))
        .await
        .unwrap();
    assert_eq!(failed.status, Status::Failed);

    // A soft bounce keeps `sent` and says why.
    let soft = sent(&queue, ChannelKind::Email, None).await;
    let kept = queue
        .record_soft_bounce(soft, "452 mailbox full", t(3))
        .await
        .unwrap();
    assert_eq!(kept.status, Status::Sent);
    assert_eq!(kept.last_answer.as_deref(), Some("452 mailbox full"));

    // A complaint proves delivery and is recorded once.
    let (complained, first) = queue.record_complaint(soft, t(4)).await.unwrap();
    assert!(first, "the first complaint is reported as such");
    assert_eq!(complained.status, Status::Delivered);
    assert_eq!(complained.complained_at, Some(t(4)));
    assert_eq!(complained.delivered_at, Some(t(4)));
    assert_eq!(
        queue.record_complaint(soft, t(5)).await.unwrap(),
        (complained.clone(), false),
        "a repeat changes nothing and is not the first"
    );
    // A soft bounce after delivery changes nothing.
    assert_eq!(
        queue.record_soft_bounce(soft, "late", t(6)).await.unwrap(),
        complained
    );
}

/// Privacy erase and retention: `delete` leaves no index entry behind,
/// and trimming keeps only the last attempt of old deliveries.
#[tokio::test]
async fn delete_removes_a_delivery_from_every_index() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let now = start();
    let queued = delivery(ChannelKind::Email, Priority::Normal, now, now);
    queue.enqueue(queued.clone()).await.unwrap();
    let sent_id = sent(&queue, ChannelKind::Sms, Some("SM1")).await;

    assert_eq!(
        queue.delete(queued.id).await.unwrap().unwrap().id,
        queued.id
    );
    assert_eq!(queue.delete(sent_id).await.unwrap().unwrap().id, sent_id);
    assert!(queue.delete(sent_id).await.unwrap().is_none());
    assert!(queue.get(queued.id).await.unwrap().is_none());
    assert!(
        queue
            .claim_due(ChannelKind::Email, now, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        queue
            .find_by_provider_id(ChannelKind::Sms, "SM1")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn trimming_attempt_logs_keeps_the_last_attempt_of_old_deliveries_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let t = |seconds| start() + SignedDuration::from_secs(seconds);
    let mut ids = Vec::new();
    for updated in [0, 100] {
        let item = delivery(ChannelKind::Email, Priority::Normal, t(updated), t(updated));
        queue.enqueue(item.clone()).await.unwrap();
        let error = SendError::Retriable {
            answer: "451 busy".into(),
            retry_after: None,
        };
        queue
            .claim_due(ChannelKind::Email, t(updated), 1)
            .await
            .unwrap();
        queue
            .complete(
                item.id,
                &Completion::Failed {
                    error,
                    decision: Decision::RetryAt(t(updated)),
                },
                t(updated),
            )
            .await
            .unwrap();
        queue
            .claim_due(ChannelKind::Email, t(updated), 1)
            .await
            .unwrap();
        let receipt = SendReceipt {
            provider_message_id: None,
            answer: "250 OK".into(),
        };
        queue
            .complete(item.id, &Completion::Sent(receipt), t(updated))
            .await
            .unwrap();
        ids.push(item.id);
    }
    assert_eq!(queue.trim_attempt_logs(t(50)).await.unwrap(), 1);
    let old = queue.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(old.attempt_log.len(), 1);
    assert_eq!(old.attempt_log[0].outcome, AttemptOutcome::Sent);
    assert_eq!(old.status, Status::Sent);
    assert_eq!(
        queue.get(ids[1]).await.unwrap().unwrap().attempt_log.len(),
        2
    );
    assert_eq!(queue.trim_attempt_logs(t(50)).await.unwrap(), 0);
}

// Delivery facts: what analytics drains (see `facts`).

/// Takes the facts written since the last call out of the facts table,
/// oldest first, as analytics does: each test step then sees only its own.
async fn drain_facts(queue: &DeliveryQueue) -> Vec<DeliveryFact> {
    let table = queue.table();
    let rows = table.facts(usize::MAX).await.unwrap();
    let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "oldest first"
    );
    table.delete_facts(&seqs).await.unwrap();
    rows.into_iter().map(|(_, fact)| fact.unwrap()).collect()
}

fn kinds(facts: &[DeliveryFact]) -> Vec<FactKind> {
    facts.iter().map(|fact| fact.kind).collect()
}

/// A queued email rendered by the `welcome` template at a negotiated
/// price, created at `start()` and due a minute later.
fn priced(now: Timestamp) -> Delivery {
    let mut item = delivery(
        ChannelKind::Email,
        Priority::Normal,
        now + SignedDuration::from_secs(60),
        now,
    );
    item.message.notification_type = "welcome".into();
    item.template = Some("welcome".into());
    item.cost = Some(crate::money::Money(50_000));
    item
}

fn sent_receipt() -> Completion {
    Completion::Sent(SendReceipt {
        provider_message_id: None,
        answer: "250 OK".into(),
    })
}

/// Every change along the way writes its one fact, carrying the
/// delivery's dimensions; claims and repeats write none.
#[tokio::test]
async fn each_change_writes_its_fact_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let t = |seconds| start() + SignedDuration::from_secs(seconds);
    let item = priced(start());
    let id = item.id;
    queue.enqueue(item).await.unwrap();
    assert!(drain_facts(&queue).await.is_empty(), "enqueue writes none");

    assert_eq!(
        queue
            .claim_due(ChannelKind::Email, t(60), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(drain_facts(&queue).await.is_empty(), "a claim writes none");
    let busy = Completion::Failed {
        error: SendError::Retriable {
            answer: "451 busy".into(),
            retry_after: None,
        },
        decision: Decision::RetryAt(t(90)),
    };
    queue.complete(id, &busy, t(61)).await.unwrap();
    let retried = drain_facts(&queue).await;
    assert_eq!(kinds(&retried), [FactKind::Retried]);
    assert_eq!(retried[0].at, t(61));
    assert_eq!(retried[0].sent_at, None);

    assert_eq!(
        queue
            .claim_due(ChannelKind::Email, t(90), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    queue.complete(id, &sent_receipt(), t(91)).await.unwrap();
    assert_eq!(
        drain_facts(&queue).await,
        [DeliveryFact {
            kind: FactKind::Sent,
            at: t(91),
            delivery_id: id,
            notification_id: "n-1".into(),
            user_id: "u-1".into(),
            notification_type: "welcome".into(),
            channel: ChannelKind::Email,
            template: Some("welcome".into()),
            created_at: t(0),
            due_at: t(60),
            sent_at: Some(t(91)),
            cost: Some(crate::money::Money(50_000)),
        }]
    );

    queue.mark_delivered(id, t(100)).await.unwrap();
    let delivered = drain_facts(&queue).await;
    assert_eq!(kinds(&delivered), [FactKind::Delivered]);
    assert_eq!(
        (delivered[0].at, delivered[0].sent_at),
        (t(100), Some(t(91)))
    );
    queue.mark_delivered(id, t(101)).await.unwrap();
    assert!(drain_facts(&queue).await.is_empty(), "a repeated callback");

    let steps = [
        (Engagement::Opened, Some(FactKind::Opened)),
        (Engagement::Opened, None),
        (Engagement::Clicked, Some(FactKind::Clicked)),
        (Engagement::Clicked, None),
        // Read after a click: its slot is new, the status stays clicked.
        (Engagement::Read, Some(FactKind::Read)),
        (Engagement::Read, None),
    ];
    for (step, (engagement, expected)) in steps.into_iter().enumerate() {
        let at = t(200 + step as i64);
        queue.record_engagement(id, engagement, at).await.unwrap();
        let facts = drain_facts(&queue).await;
        assert_eq!(kinds(&facts), Vec::from_iter(expected), "{engagement:?}");
        if let Some(fact) = facts.first() {
            assert_eq!(fact.at, at);
            assert_eq!(fact.template.as_deref(), Some("welcome"));
        }
    }
    assert_eq!(
        queue.get(id).await.unwrap().unwrap().status,
        Status::Clicked
    );
    queue.mark_delivered(id, t(300)).await.unwrap();
    assert!(
        drain_facts(&queue).await.is_empty(),
        "a late delivery callback"
    );

    queue.record_complaint(id, t(400)).await.unwrap();
    assert_eq!(kinds(&drain_facts(&queue).await), [FactKind::Complained]);
    queue.record_complaint(id, t(401)).await.unwrap();
    assert!(drain_facts(&queue).await.is_empty(), "a repeated complaint");

    // Retention trims and privacy erase write none, and erase leaves the
    // facts written before it (analytics erases those itself).
    queue.trim_attempt_logs(t(1_000)).await.unwrap();
    queue
        .record_engagement(id, Engagement::Clicked, t(500))
        .await
        .unwrap();
    assert_eq!(queue.fact_count().await.unwrap(), 0);
    let other = sent(&queue, ChannelKind::Sms, None).await;
    assert_eq!(queue.fact_count().await.unwrap(), 1, "its Sent");
    queue.delete(other).await.unwrap();
    assert_eq!(
        queue.fact_count().await.unwrap(),
        1,
        "delete keeps the facts"
    );
    assert_eq!(kinds(&drain_facts(&queue).await), [FactKind::Sent]);
}

/// Engagement or a complaint on a `sent` delivery also proves delivery:
/// `Delivered` comes first, then the engagement's own fact.
#[tokio::test]
async fn engagement_before_a_delivery_callback_also_writes_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let later = start() + SignedDuration::from_secs(5);

    let clicked = sent(&queue, ChannelKind::Email, None).await;
    drain_facts(&queue).await;
    queue
        .record_engagement(clicked, Engagement::Clicked, later)
        .await
        .unwrap();
    let facts = drain_facts(&queue).await;
    assert_eq!(kinds(&facts), [FactKind::Delivered, FactKind::Clicked]);
    assert!(facts.iter().all(|fact| fact.at == later));
    assert!(facts.iter().all(|fact| fact.sent_at == Some(start())));
    // The delivery callback arriving after the click: nothing new.
    queue.mark_delivered(clicked, later).await.unwrap();
    queue
        .record_engagement(clicked, Engagement::Opened, later)
        .await
        .unwrap();
    assert_eq!(kinds(&drain_facts(&queue).await), [FactKind::Opened]);

    let complained = sent(&queue, ChannelKind::Email, None).await;
    drain_facts(&queue).await;
    queue.record_complaint(complained, later).await.unwrap();
    assert_eq!(
        kinds(&drain_facts(&queue).await),
        [FactKind::Delivered, FactKind::Complained]
    );
}

/// Failures: a permanent one, a dead letter, a provider's undeliverable
/// report and a hard bounce each write their kind once; the operator's
/// retry and crash recovery write none.
#[tokio::test]
async fn failures_write_their_kind_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let now = start();
    let error = SendError::Permanent {
        answer: "400 no".into(),
    };
    for (decision, kind) in [
        (Decision::Fail, FactKind::Failed),
        (Decision::DeadLetter, FactKind::DeadLettered),
    ] {
        let item = delivery(ChannelKind::Webhook, Priority::Normal, now, now);
        queue.enqueue(item.clone()).await.unwrap();
        queue.claim_due(ChannelKind::Webhook, now, 1).await.unwrap();
        let failed = Completion::Failed {
            error: error.clone(),
            decision,
        };
        queue.complete(item.id, &failed, now).await.unwrap();
        assert_eq!(kinds(&drain_facts(&queue).await), [kind]);
        if kind == FactKind::DeadLettered {
            queue.retry_dead_letter(item.id, now).await.unwrap();
            queue.claim_due(ChannelKind::Webhook, now, 1).await.unwrap();
            assert_eq!(queue.recover(now).await.unwrap(), 1);
            assert!(drain_facts(&queue).await.is_empty(), "retry and recovery");
        }
    }

    let undeliverable = sent(&queue, ChannelKind::Sms, None).await;
    drain_facts(&queue).await;
    queue
        .mark_undeliverable(undeliverable, "30003 unreachable", now)
        .await
        .unwrap();
    assert_eq!(kinds(&drain_facts(&queue).await), [FactKind::Failed]);
    queue
        .mark_undeliverable(undeliverable, "30003 again", now)
        .await
        .unwrap();
    assert!(drain_facts(&queue).await.is_empty(), "a repeated report");

    // A hard bounce is a bounce, not also a failure; after `sent` or
    // after `delivered`.
    let bounced = sent(&queue, ChannelKind::Email, None).await;
    let late = sent(&queue, ChannelKind::Email, None).await;
    queue.mark_delivered(late, now).await.unwrap();
    drain_facts(&queue).await;
    for id in [bounced, late] {
        queue
            .mark_bounced(id, "550 no such user", now)
            .await
            .unwrap();
        assert_eq!(kinds(&drain_facts(&queue).await), [FactKind::Bounced]);
        queue.mark_bounced(id, "550 again", now).await.unwrap();
        assert!(drain_facts(&queue).await.is_empty(), "a repeated bounce");
    }
    // A failed delivery still takes a complaint.
    queue.record_complaint(bounced, now).await.unwrap();
    assert_eq!(kinds(&drain_facts(&queue).await), [FactKind::Complained]);
}

/// A refused transition changes nothing, so it writes no fact either.
#[tokio::test]
async fn refused_transitions_write_no_fact() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, queue) = open(&dir).await;
    let now = start();
    let queued = delivery(ChannelKind::Webhook, Priority::Normal, now, now);
    queue.enqueue(queued.clone()).await.unwrap();
    let clicked = sent(&queue, ChannelKind::Email, None).await;
    queue
        .record_engagement(clicked, Engagement::Clicked, now)
        .await
        .unwrap();
    drain_facts(&queue).await;

    let refusals = [
        queue.mark_delivered(queued.id, now).await,
        queue.mark_undeliverable(queued.id, "no", now).await,
        queue.mark_bounced(queued.id, "no", now).await,
        queue.mark_bounced(clicked, "no", now).await,
        queue
            .record_engagement(queued.id, Engagement::Opened, now)
            .await,
        queue.complete(queued.id, &sent_receipt(), now).await,
        queue.complete(clicked, &sent_receipt(), now).await,
        queue.mark_delivered(Uuid::now_v7(), now).await,
        queue
            .record_complaint(Uuid::now_v7(), now)
            .await
            .map(|(delivery, _)| delivery),
    ];
    for (index, refusal) in refusals.into_iter().enumerate() {
        assert!(refusal.is_err(), "refusal {index} was accepted");
    }
    assert_eq!(queue.fact_count().await.unwrap(), 0);
    assert_eq!(
        queue.get(queued.id).await.unwrap().unwrap().status,
        Status::Queued
    );
}
