//! The notification engine's trigger path: ingested events become
//! notifications, and notifications become deliveries on the delivery queue.
//!
//! # Promises
//!
//! * **Every ingested event is processed, at least once, in ingest order
//!   per user.** The feed is split into partitions by user, leased among
//!   the replicas on one database (see `feed`); the engine tails the
//!   partitions it holds from their durable cursors (rows `feed/NN` of
//!   table `cursors`), which advance only after the events before them
//!   were fully planned (their notifications and deliveries committed).
//! * **Timers once across replicas**: due delayed triggers and digests are
//!   fired by the one replica that holds the timers' lease.
//! * **One bad event never blocks the feed.** A failure is classified
//!   ([`EngineError::is_transient`]): storage that is unavailable is
//!   retried from the same cursor with exponential backoff; anything else
//!   (content a store refuses, a corrupt record) cannot succeed on a retry,
//!   so the event is *parked* — stored durably with its reason (see
//!   `storage::parked`), counted in
//!   `nudge_cp_engine_events_parked_total{reason}`, listed at
//!   `GET /v1/admin/parked-events` — and the cursor moves past it.
//! * **Processing an event twice creates nothing twice.** Notifications are
//!   idempotent by source event id and by the app's idempotency key (see
//!   [`crate::notifications`]); a delivery's id is derived from its
//!   notification and channel, so a replay re-enqueues nothing.
//! * **Preferences decide per channel** ([`crate::preferences::resolve`]):
//!   a suppressed channel gets no delivery, quiet hours set the delivery's
//!   `not_before` (held, never dropped).
//!
//! Triggers are `notify` envelopes and rules on tracked events (immediate,
//! or delayed with an `unless` event that cancels them; see `triggers`).
//! Hourly, daily and weekly frequencies fold a user's notifications of a
//! type into one digest per channel (see `digest`). Broadcasts are fanned
//! out a page per pass by the replica that holds the timers' lease, and
//! subscription rules put users on topics as their events arrive (see
//! `broadcast`).

mod broadcast;
mod digest;
mod feed;
mod plan;
mod triggers;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::channels::ChannelKind;
use crate::delivery::{Clock, DeliveryQueue};
use crate::devices::DeviceStore;
use crate::event::{Cursor, Event, EventBody, FeedPartition};
use crate::notifications::NotificationStore;
use crate::preferences::{OperatorDefaults, PreferenceStore};
use crate::storage::{CursorTable, EventStore, ParkedEvent};
use crate::templates::TemplateSet;

pub use digest::DIGEST_SETTLE;
pub use feed::{Feed, FeedSettings};
pub use plan::{PlanError, delivery_id_for};

/// What the operator configured that planning needs.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    pub defaults: OperatorDefaults,
    pub templates: TemplateSet,
    /// Channels that have a configured sender (in-app always does).
    pub enabled: BTreeSet<ChannelKind>,
    /// Webhook destination per notification type.
    pub webhook_urls: BTreeMap<String, String>,
    /// Rules that turn tracked events into notifications.
    pub rules: Vec<crate::rules::Rule>,
    /// The types' throttles.
    pub throttles: crate::throttle::Throttles,
    /// Per type: the data field whose value splits its digests (see
    /// [`crate::digest::group_of`]).
    pub digest_keys: BTreeMap<String, String>,
    /// Tracked events that subscribe users to topics (or take them off).
    pub subscriptions: Vec<crate::broadcasts::rules::SubscriptionRule>,
    /// Per type with steps: its workflow (see [`crate::workflow`]).
    pub workflows: BTreeMap<String, Vec<crate::workflow::Step>>,
}

/// The engine's current [`EngineSettings`], replaceable while it runs
/// (the management API changes types, templates and rules). Readers take
/// a snapshot per step; a replacement applies from the next one.
#[derive(Debug, Clone, Default)]
pub struct SettingsHandle(Arc<std::sync::RwLock<Arc<EngineSettings>>>);

impl SettingsHandle {
    pub fn new(settings: EngineSettings) -> Self {
        SettingsHandle(Arc::new(std::sync::RwLock::new(Arc::new(settings))))
    }

    /// A snapshot of the settings now in force.
    pub fn current(&self) -> Arc<EngineSettings> {
        // A panic while holding the lock can only have happened between
        // two whole assignments, so the value is still whole.
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Puts `settings` in force for every later step.
    pub fn replace(&self, settings: EngineSettings) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(settings);
    }
}

/// Events read per pass of the feed.
const PAGE: usize = 256;
/// How often an idle engine looks for due delayed triggers and digests.
/// New events wake it at once (see [`EventStore::appended`]: this
/// process's commits, and on PostgreSQL other processes' through
/// `LISTEN`/`NOTIFY`).
const POLL: Duration = Duration::from_millis(100);
/// The longest wait between retries of a pass that failed transiently.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The trigger worker. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    store: EventStore,
    notifications: NotificationStore,
    preferences: PreferenceStore,
    queue: DeliveryQueue,
    /// Delayed rule triggers waiting for their time (or cancellation).
    pending: crate::rules::PendingTriggers,
    /// Notifications held for hourly, daily and weekly digests.
    digests: crate::digest::DigestStore,
    settings: SettingsHandle,
    devices: DeviceStore,
    /// Topic subscriptions, which broadcasts fan out to.
    topics: crate::storage::TopicTable,
    /// Broadcasts and their progress.
    broadcasts: crate::storage::BroadcastTable,
    clock: Arc<dyn Clock>,
    /// The feed partitions this replica plans, under leases.
    feed: Feed,
    /// `nudge_cp_notifications_created_total{trigger}`.
    created: prometheus::IntCounterVec,
    /// `nudge_cp_engine_events_parked_total{reason}`.
    parked: prometheus::IntCounterVec,
    /// `nudge_cp_notifications_throttled_total{type,outcome}`.
    throttled: prometheus::IntCounterVec,
    /// `nudge_cp_broadcast_recipients_failed_total`.
    broadcast_failed: prometheus::IntCounter,
    /// The broadcast whose page the fan-out planned last: the next page is
    /// the next due broadcast's, so that due broadcasts take turns.
    fan_out_turn: Arc<std::sync::Mutex<Option<String>>>,
    /// Signs the one-click unsubscribe links of emails; `None` without a
    /// `public_url`. From the config file only, so not in the replaceable
    /// [`EngineSettings`].
    unsubscribe: Option<crate::links::UnsubscribeLinks>,
    /// Puts the open pixel and click-tracking links into HTML emails, as
    /// the `[tracking]` switches say; `None` without a `public_url`. From
    /// the config file only, like `unsubscribe`.
    tracking: Option<crate::links::TrackingLinks>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Queue(#[from] crate::delivery::QueueError),
    #[error(transparent)]
    Preferences(#[from] crate::preferences::PreferenceError),
    #[error(transparent)]
    PendingTriggers(#[from] crate::rules::PendingError),
    #[error(transparent)]
    Devices(#[from] crate::devices::DeviceError),
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
    #[error("engine metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl EngineError {
    /// Whether retrying the same event later may succeed: the storage
    /// failed (I/O, the database unavailable), not the event. Everything
    /// else — content a store refuses, a corrupt record — fails the same
    /// way every time, so the event is parked instead (see the module's
    /// promises). The one place this is decided.
    pub fn is_transient(&self) -> bool {
        use crate::delivery::QueueError;
        use crate::digest::DigestError;
        use crate::preferences::PreferenceError;
        use crate::rules::PendingError;
        use crate::storage::StorageError;
        let sql_transient = |error: &StorageError| {
            !matches!(error, StorageError::Corrupt(_) | StorageError::Encode(_))
        };
        match self {
            EngineError::Store(error)
            | EngineError::Queue(QueueError::Storage(error))
            | EngineError::PendingTriggers(PendingError::Storage(error))
            | EngineError::Digest(DigestError::Storage(error)) => sql_transient(error),
            EngineError::Preferences(PreferenceError::Storage(_))
            | EngineError::Devices(crate::devices::DeviceError::Storage(_)) => true,
            EngineError::Queue(_)
            | EngineError::Preferences(_)
            | EngineError::PendingTriggers(_)
            | EngineError::Devices(_)
            | EngineError::Digest(_)
            | EngineError::Metrics(_) => false,
        }
    }

    /// The parked-events metric's label for a permanent failure: `invalid`
    /// (content a store refuses) or `corrupt` (a stored record that cannot
    /// be read or written).
    pub fn park_reason(&self) -> &'static str {
        use crate::devices::DeviceError;
        use crate::digest::DigestError;
        use crate::preferences::PreferenceError;
        match self {
            EngineError::Digest(DigestError::InvalidKey)
            | EngineError::PendingTriggers(crate::rules::PendingError::Invalid)
            | EngineError::Devices(DeviceError::Invalid(_))
            | EngineError::Queue(
                crate::delivery::QueueError::InvalidTransition { .. }
                | crate::delivery::QueueError::NotFound(_)
                | crate::delivery::QueueError::AlreadyExists(_),
            )
            | EngineError::Preferences(
                PreferenceError::Critical { .. }
                | PreferenceError::TypeName { .. }
                | PreferenceError::TooManyTypes { .. }
                | PreferenceError::TimeZone { .. }
                | PreferenceError::QuietHoursTime { .. },
            ) => "invalid",
            _ => "corrupt",
        }
    }
}

/// The stores and services the engine works with, all shared with the rest
/// of the control plane.
pub struct EngineParts {
    pub store: EventStore,
    pub notifications: NotificationStore,
    pub preferences: PreferenceStore,
    pub queue: DeliveryQueue,
    pub devices: DeviceStore,
    pub cursors: CursorTable,
    /// Leases shared with the other replicas on the database.
    pub leases: crate::storage::LeaseTable,
    /// Who this replica is among them.
    pub replica: FeedSettings,
    pub digests: crate::digest::DigestStore,
    pub pending: crate::rules::PendingTriggers,
    pub topics: crate::storage::TopicTable,
    pub broadcasts: crate::storage::BroadcastTable,
    pub clock: Arc<dyn Clock>,
}

impl Engine {
    /// The engine over `parts` (every store taken from
    /// [`crate::storage::Stores`]), registering its metrics in `registry`.
    pub fn new(
        parts: EngineParts,
        settings: SettingsHandle,
        registry: &prometheus::Registry,
    ) -> Result<Self, EngineError> {
        let EngineParts {
            store,
            notifications,
            preferences,
            queue,
            devices,
            cursors,
            leases,
            replica,
            digests,
            pending,
            topics,
            broadcasts,
            clock,
        } = parts;
        let feed = Feed::new(leases, cursors, replica, registry)?;
        let created = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "nudge_cp_notifications_created_total",
                "Notifications created, by trigger (notify, rule, digest or broadcast); resends and replays excluded.",
            ),
            &["trigger"],
        )?;
        registry.register(Box::new(created.clone()))?;
        let parked = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "nudge_cp_engine_events_parked_total",
                "Events the engine parked instead of planning, by reason (invalid or corrupt); listed at /v1/admin/parked-events.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(parked.clone()))?;
        let throttled = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "nudge_cp_notifications_throttled_total",
                "Notifications over their type's throttle, by type and outcome (dropped, or digest: held for a digest).",
            ),
            &["type", "outcome"],
        )?;
        registry.register(Box::new(throttled.clone()))?;
        let broadcast_failed = prometheus::IntCounter::new(
            "nudge_cp_broadcast_recipients_failed_total",
            "Broadcast recipients skipped because their notification could not be planned (a corrupt record); each is logged.",
        )?;
        registry.register(Box::new(broadcast_failed.clone()))?;
        Ok(Self {
            store,
            notifications,
            preferences,
            queue,
            pending,
            digests,
            settings,
            devices,
            topics,
            broadcasts,
            clock,
            feed,
            created,
            parked,
            throttled,
            broadcast_failed,
            fan_out_turn: Arc::default(),
            unsubscribe: None,
            tracking: None,
        })
    }

    /// Emails of non-critical types will carry `links`' one-click
    /// unsubscribe link (see `plan`).
    pub fn with_unsubscribe_links(mut self, links: Option<crate::links::UnsubscribeLinks>) -> Self {
        self.unsubscribe = links;
        self
    }

    /// HTML emails will carry `links`' open pixel and click-tracking links
    /// (see `plan`).
    pub fn with_tracking_links(mut self, links: Option<crate::links::TrackingLinks>) -> Self {
        self.tracking = links;
        self
    }

    /// Tails the event feed and, on the replica that holds the timers'
    /// lease, fires due delayed triggers and digests, until `stop` is
    /// cancelled. The feed, the timers and the lease renewal are three
    /// tasks (four with the broadcasts' fan-out): a long feed backlog
    /// neither delays due timers nor lets the leases lapse. A pass that fails (transiently: permanent failures are
    /// parked inside it) is logged and retried after a backoff that doubles
    /// up to [`MAX_BACKOFF`] (the feed from the same cursor).
    pub async fn run(self, stop: CancellationToken) {
        let renewing = tokio::spawn(self.feed.clone().renew_until(stop.clone()));
        let timers = tokio::spawn({
            let (engine, stop) = (self.clone(), stop.clone());
            async move {
                keep_passing("timers", &stop, None, || async {
                    if !engine.feed.runs_timers().await? {
                        return Ok(0);
                    }
                    Ok(engine.fire_due().await? + engine.fire_due_digests().await?)
                })
                .await;
            }
        });
        // Broadcasts fan out on their own task: a broadcast to a million
        // users neither delays due timers nor the feed.
        let fan_out = tokio::spawn({
            let (engine, stop) = (self.clone(), stop.clone());
            async move {
                keep_passing("broadcasts", &stop, None, || async {
                    if !engine.feed.runs_timers().await? {
                        return Ok(0);
                    }
                    engine.fan_out_step().await
                })
                .await;
            }
        });
        let appended = self.store.appended();
        keep_passing("feed", &stop, Some(appended), || {
            self.process_until(Some(&stop))
        })
        .await;
        for task in [timers, fan_out, renewing] {
            if let Err(error) = task.await {
                tracing::error!(%error, "engine task panicked");
            }
        }
        // Other replicas take over at once rather than after the TTL.
        if let Err(error) = self.feed.release_all().await {
            tracing::warn!(%error, "could not give the feed leases up; they expire by themselves");
        }
    }

    /// Processes every event after the cursor that is there now; returns
    /// how many. Exposed for tests that drive the engine step by step.
    pub async fn process_available(&self) -> Result<usize, EngineError> {
        self.process_until(None).await
    }

    /// [`Self::process_available`], but returns after the page in hand
    /// once `stop` is cancelled: a replica far behind its feed (millions
    /// of events after a burst) must still drain within its grace period
    /// on SIGTERM, and each page leaves the cursors where the next
    /// process picks up.
    pub async fn process_until(
        &self,
        stop: Option<&CancellationToken>,
    ) -> Result<usize, EngineError> {
        let mut processed = 0;
        loop {
            if stop.is_some_and(CancellationToken::is_cancelled) {
                return Ok(processed);
            }
            let share = self.feed.share().await?;
            if share.is_empty() {
                return Ok(processed);
            }
            // Every event up to the newest one is committed (ingest
            // commits in seq order), so a short page read all of them that
            // are this replica's: its cursors may move to the head even when
            // its partitions got nothing, and the next page does not scan
            // other partitions' events again.
            let head = self.store.last_cursor().await?;
            let page = self
                .store
                .partition_events_after(share.filter(), share.after(), PAGE)
                .await?;
            let short = page.events.len() < PAGE;
            let next = if short {
                page.next.max(head)
            } else {
                page.next
            };
            if page.events.is_empty() {
                if let Some(head) = next
                    && share.after().is_none_or(|least| least < head)
                {
                    self.feed.advance(&share, head, &BTreeMap::new()).await?;
                }
                self.feed.caught_up(&share);
                return Ok(processed);
            }
            let Some(next) = next else {
                return Ok(processed);
            };
            // Runs of notifies are planned together (two commits a run);
            // anything else one by one, in feed order. Events of
            // partitions that are further along were planned already.
            let mut notifies: Vec<(&Event, Cursor)> = Vec::new();
            let mut oldest: BTreeMap<FeedPartition, jiff::Timestamp> = BTreeMap::new();
            for ((event, cursor), partition) in
                page.events.iter().zip(&page.cursors).zip(&page.partitions)
            {
                if !share.wants(*partition, *cursor) {
                    continue;
                }
                processed += 1;
                oldest.insert(*partition, event.ingested_at);
                if matches!(event.body, EventBody::Notify(_)) {
                    notifies.push((event, *cursor));
                    continue;
                }
                self.process_run(&std::mem::take(&mut notifies)).await?;
                self.process_one(event, *cursor).await?;
            }
            self.process_run(&notifies).await?;
            // What waits next is about as old as the last event planned
            // of each partition, unless a short page read everything.
            if short {
                oldest.clear();
            }
            self.feed.advance(&share, next, &oldest).await?;
        }
    }

    /// Plans a run of notifies together; when that fails for good, one by
    /// one, so that only the event that cannot be planned is parked (what
    /// the run did commit is found again, not made twice).
    async fn process_run(&self, run: &[(&Event, Cursor)]) -> Result<(), EngineError> {
        if run.is_empty() {
            return Ok(());
        }
        let events: Vec<&Event> = run.iter().map(|(event, _)| *event).collect();
        match self.process_notifies(&events).await {
            Ok(()) => Ok(()),
            Err(error) if error.is_transient() => Err(error),
            Err(_) => {
                for (event, cursor) in run {
                    self.process_one(event, *cursor).await?;
                }
                Ok(())
            }
        }
    }

    /// Processes one event; one that fails for good is parked.
    async fn process_one(&self, event: &Event, cursor: Cursor) -> Result<(), EngineError> {
        match self.process(event).await {
            Ok(()) => Ok(()),
            // The cursor stays before this event: the pass is retried
            // (events before it replay harmlessly).
            Err(error) if error.is_transient() => Err(error),
            Err(error) => self.park(event, cursor, &error).await,
        }
    }

    /// Records `event` (at feed position `cursor`) as parked with `error`'s
    /// reason; the caller then moves on.
    async fn park(
        &self,
        event: &Event,
        cursor: Cursor,
        error: &EngineError,
    ) -> Result<(), EngineError> {
        let reason = error.park_reason();
        let parked = ParkedEvent {
            seq: cursor.0,
            event_id: event.id.clone(),
            user_id: event.user_id.clone(),
            kind: reason.to_owned(),
            reason: error.to_string(),
            parked_at: self.clock.now(),
        };
        if self.store.park(cursor, &parked).await? {
            self.parked.with_label_values(&[reason]).inc();
            tracing::warn!(event = %event.id, seq = cursor.0, reason, %error, "event parked: it cannot be planned");
        }
        Ok(())
    }
}

/// Runs `pass` until `stop`: again at once after a pass that did work;
/// after [`POLL`] (or sooner, when `wake` changes) after an idle one; after
/// a backoff doubling up to [`MAX_BACKOFF`] after a failed one (new events
/// do not cut that short: the storage, not the feed, has to recover).
async fn keep_passing<F, Fut>(
    what: &'static str,
    stop: &CancellationToken,
    mut wake: Option<tokio::sync::watch::Receiver<u64>>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, EngineError>>,
{
    let mut backoff = POLL;
    while !stop.is_cancelled() {
        // Seen before the pass: a change during it wakes the next wait.
        if let Some(wake) = wake.as_mut() {
            wake.borrow_and_update();
        }
        match pass().await {
            Ok(0) => {
                backoff = POLL;
                let woken = async {
                    let changed = match wake.as_mut() {
                        Some(wake) => wake.changed().await.is_ok(),
                        None => false,
                    };
                    // No channel, or a closed one: only the timer wakes.
                    if !changed {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = woken => {}
                    () = stop.cancelled() => {}
                }
            }
            Ok(_) => backoff = POLL,
            Err(error) => {
                tracing::error!(task = what, %error, retry_in = ?backoff, "engine pass failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
